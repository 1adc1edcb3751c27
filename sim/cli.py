"""The ``chaossim`` command: run | validate | schema | export (and the commands other modules add).

Exit codes: 0 success; 1 a scenario hypothesis failed (or a sweep replication crashed); 2 bad input
(the message is one line naming the file, YAML path and what was expected; no traceback).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .loading import ScenarioError, load_scenario, scenario_yaml
from .scenario import Scenario

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Chaos-test distributed LLM training.")
out = Console()
err = Console(stderr=True)

EXIT_HYPOTHESIS = 1
EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Print a one-line error and exit with the bad-input code."""
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def load(file: Path, overrides: list[str], seed: int | None = None, replications: int | None = None) -> Scenario:
    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={seed}")
    if replications is not None:
        extra.append(f"replications={replications}")
    try:
        return load_scenario(file, extra)
    except ScenarioError as problem:
        fail(str(problem))


SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override any field: dotted.key=value (repeatable)")
]


def _numeric_maps(maps: list) -> bool:
    """True when every replication holds a map of numbers here (lists of rejoin times are not averaged)."""
    return all(
        isinstance(m, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())
        for m in maps
    ) and any(maps)


def aggregate(summaries: list[dict]) -> dict:
    """Means of the numeric top-level metrics over replications, plus every run."""
    first = summaries[0]
    result = {"scenario": first["scenario"], "policy": first["policy"], "replications": len(summaries)}
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("replication", "seed"):
            values = [s[key] for s in summaries]
            # a metric some replication has no value for (time-to-train past the horizon) has no mean
            result[key] = None if None in values else math.fsum(values) / len(values)
        elif isinstance(value, dict) and _numeric_maps([s.get(key) for s in summaries]):
            keys = sorted({k for s in summaries for k in s[key]})
            result[key] = {k: math.fsum(s[key].get(k, 0) for s in summaries) / len(summaries) for k in keys}
    result["hypotheses_passed"] = all(s["hypotheses_passed"] for s in summaries)
    result["halted"] = [s["halted"] for s in summaries if s["halted"]]
    result["runs"] = summaries
    return result


def summary_table(result: dict) -> Table:
    table = Table(title=f"{result['scenario']} ({result['policy']}, {result['replications']} replication(s))")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("goodput", f"{result['goodput']:.4f}"),
        ("uptime", f"{result['uptime']:.4f}"),
        ("global downtime", f"{result['global_downtime_s'] / 3600:.3f} h"),
        ("failures", f"{result['failures_total']:.0f}  " + ", ".join(f"{k} {v:.0f}" for k, v in result["failures"].items())),
        ("interruptions", f"{result['interruptions']:.0f}"),
        ("steps", f"{result['steps']:.0f}"),
        ("tokens", f"{result['tokens']:.4g}"),
    ]
    if "time_to_train_s" in result["runs"][0]:  # a work-defined run
        ttt = result.get("time_to_train_s")
        rows.append(("time to train", "not within the duration" if ttt is None else f"{ttt / 3600:.3f} h"))
    for key in ("final_loss", "quorum_unmet_s", "mean_learners_per_merge", "wan_bytes"):
        if key in result:
            rows.append((key.replace("_", " "), f"{result[key]:.4g}"))
    rows.append(("chip-time", "  ".join(f"{k} {v:.3f}" for k, v in result["chip_time_fraction"].items() if v > 0)))
    rows.append(("simulated / wall", f"{result['sim_speedup']:.3g}x  ({result['events']:.0f} events, {result['wall_time_s']:.2f} s)"))
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="override the scenario seed")] = None,
    replications: Annotated[int | None, typer.Option(help="override the number of replications")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="results folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a scenario: print goodput, downtime, failures and tokens; write a results folder."""
    scenario = load(file, set_ or [], seed, replications)  # before the heavy imports: bad input fails fast
    from .runner import run_replication
    folder = output or Path("results") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scenario.yaml").write_text(scenario_yaml(scenario))
    summaries = []
    show = not quiet and not as_json and err.is_terminal
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not show) as bar:
        for r in range(scenario.replications):
            task = bar.add_task(f"replication {r + 1}/{scenario.replications}", total=1.0)
            try:
                rep = run_replication(
                    scenario, r, folder / f"rep-{r}", file.parent, progress=lambda f, t=task: bar.update(t, completed=f)
                )
            except ScenarioError as problem:  # e.g. a trace file that changed since it was loaded
                fail(str(problem))
            summaries.append(rep.summary)
            (folder / "summary.json").write_text(json.dumps(aggregate(summaries), indent=2, default=str))
    result = aggregate(summaries)
    if as_json:
        print(json.dumps(result, default=str))
    else:
        out.print(summary_table(result))
        for r, summary in enumerate(summaries):
            for verdict in summary["hypotheses"]:
                bound = " and ".join(
                    f"{op} {v}" for op, v in ((">=", verdict["min"]), ("<=", verdict["max"])) if v is not None
                )
                status = "[green]PASS[/]" if verdict["passed"] else "[red]FAIL[/]"
                value = verdict.get("error") or f"{verdict['value']:.6g}"
                where = f" (replication {r})" if len(summaries) > 1 else ""
                out.print(f"hypothesis {verdict['metric']} {bound}{where}: {value} {status}", highlight=False)
        out.print(f"results: {folder}")
    if result["halted"] and not as_json:
        for halt in result["halted"]:
            value = halt.get("error") or f"{halt['value']:.6g}"
            out.print(f"[red]HALTED[/] {halt['metric']} = {value} (bound min {halt['min']}, max {halt['max']})", highlight=False)
    # a halted replication failed its health check, as in chaos tools: it gates like a failed hypothesis
    if not result["hypotheses_passed"] or result["halted"]:
        raise typer.Exit(EXIT_HYPOTHESIS)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="scenario YAML files")],
    set_: SetOption = None,
) -> None:
    """Check scenario files; print one line per problem, exit 2 if any is bad."""
    bad = False
    for file in files:
        try:
            load_scenario(file, set_ or [])
            out.print(f"{file}: ok", highlight=False)
        except ScenarioError as problem:
            err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
            bad = True
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editor completion and checking)."""
    document = Scenario.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "chaossim scenario"
    print(json.dumps(document, indent=2))


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="scenario YAML file (its sweep: section gives factors and seeds)")],
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", help="factor dotted.key=v1,v2,... (cartesian product; repeatable)")] = None,
    zip_: Annotated[list[str] | None, typer.Option("--zip", help="factor dotted.key=v1,v2,... varying together with the other --zip factors")] = None,
    seeds: Annotated[str | None, typer.Option(help="seeds, e.g. 1-5 or 1,2,7 (default: the file's, else seed + replication)")] = None,
    set_: SetOption = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="sweep folder (rows/, runs/)")] = None,
    executor: Annotated[str, typer.Option(help="local (a process per core) | dask | serial (in this process)")] = "local",
    workers: Annotated[int | None, typer.Option(help="worker processes (default: every core)")] = None,
    address: Annotated[str | None, typer.Option(help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --executor dask)")] = None,
    resume: Annotated[bool, typer.Option(help="skip replications that already have an ok row in the folder")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Sweep factors x seeds on every core or a Dask cluster: one Parquet row per replication, resumable."""
    from .sweep import command

    try:
        code = command(file, grid or [], zip_ or [], seeds, set_ or [], output, executor, workers, address, resume, quiet, out, err)
    except ScenarioError as problem:
        fail(str(problem))
    raise typer.Exit(code)


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="results folders (chaossim run -o) and/or sweep folders")],
    output: Annotated[Path, typer.Option("-o", "--output", help="report folder (PNG figures and report.html)")] = Path("report"),
) -> None:
    """Write figures and one self-contained report.html (images embedded) from results folders."""
    # imported here: analysis owns matplotlib, and `import sim` must never pull it in
    from analysis.load import ResultsError
    from analysis.report import write_report

    try:
        page = write_report(results, output)
    except ResultsError as problem:
        fail(str(problem))
    out.print(f"report: {page}", highlight=False)


@app.command()
def bandwidth(
    params: Annotated[str, typer.Option(help="model parameters, e.g. 12B")] = "12B",
    step_time: Annotated[str, typer.Option(help="compute time of one step, e.g. 1s")] = "1s",
    link: Annotated[str, typer.Option("--bandwidth", help="WAN bandwidth per site, e.g. 2Gbps")] = "2Gbps",
    sites: Annotated[int, typer.Option(help="number of sites (data centres)")] = 4,
    inner_steps: Annotated[int, typer.Option("--inner-steps", "-H", help="H")] = 24,
    fragments: Annotated[int, typer.Option("--fragments", "-P", help="P")] = 24,
    overlap: Annotated[int, typer.Option("--overlap", help="tau")] = 2,
    target: Annotated[float, typer.Option(help="target compute utilisation")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="print rows as JSON")] = False,
) -> None:
    """Compute utilisation of DP, DiLoCo and Streaming DiLoCo at a WAN bandwidth (bucketed overlap)."""
    from .bandwidth import bandwidth_table
    from .units import parse_bandwidth, parse_count, parse_duration

    try:
        rows = bandwidth_table(
            params=parse_count(params), step_time_s=parse_duration(step_time), bandwidth_bps=parse_bandwidth(link),
            sites=sites, target_cu=target, inner_steps=inner_steps, fragments=fragments, overlap=overlap,
        )
    except ValueError as problem:
        fail(f"chaossim bandwidth: {problem}")
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{params} params, step {step_time}, {sites} sites at {link}: utilisation and bandwidth for {target:.0%}")
    for column in ("method", "bits", "utilisation", "exposed comm / step", f"bandwidth for {target:.0%}"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["method"], str(row["bits"]), f"{row['cu']:.3f}", f"{row['exposed_comm_s_per_step']:.3g} s",
            f"{row['required_bandwidth_bps'] / 1e9:.3g} Gbps",
        )
    out.print(table)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="a results folder of chaossim run")],
    goodput_log: Annotated[bool, typer.Option("--goodput-log", help="ml-goodput-measurement's step event log")] = False,
    replication: Annotated[int, typer.Option("--replication", "-r", help="which replication")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default: RUN/rep-R/goodput-log.jsonl")] = None,
) -> None:
    """Export a run for other tools (--goodput-log: JSON lines for ml-goodput-measurement)."""
    from .goodput_log import GoodputLogError, write

    if not goodput_log:
        fail("export: choose what to export (--goodput-log)")
    rep_dir = run_dir / f"rep-{replication}"
    target = output or rep_dir / "goodput-log.jsonl"
    try:
        n = write(rep_dir, target)
    except (GoodputLogError, OSError) as problem:
        fail(str(problem))
    out.print(f"{n} log entries: {target}", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: results written so far are kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
