"""The ``chaossim`` command: run | validate | schema (and the commands other modules add).

Exit codes: 0 success; 1 a scenario hypothesis failed (or a sweep replication crashed); 2 bad input
(the message is one line naming the file, YAML path and what was expected; no traceback), a usage
error, a cost past the ceiling, or an output folder that cannot be used; 130 interrupted (Ctrl-C or
SIGTERM, after saying what was kept).
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer._click.exceptions import (  # typer's own copy of click raises these
    ClickException,
    NoArgsIsHelpError,
)
from typer.core import TyperGroup

from .loading import ScenarioError, load_scenario, scenario_yaml
from .scenario import Scenario

out = Console()
err = Console(stderr=True)

EXIT_HYPOTHESIS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class OneLineErrors(TyperGroup):
    """Usage errors (``--seed abc``, an unknown command or option) as one ``error:`` line, exit 2,
    instead of click's multi-line usage panel; ``--help`` still prints the full help."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as problem:
            out.print(problem.ctx.get_help(), markup=False, highlight=False)
            code = EXIT_BAD_INPUT
        except ClickException as problem:
            where = getattr(getattr(problem, "ctx", None), "command_path", "chaossim")
            message = " ".join(problem.format_message().split())
            err.print(f"error: {where}: {message}", markup=False, highlight=False, soft_wrap=True)
            code = problem.exit_code
        except typer.Abort:
            code = EXIT_INTERRUPTED
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Chaos-test distributed LLM training.", cls=OneLineErrors,
)


def warn(lines: list[str]) -> None:
    for line in lines:
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    """Print a one-line error and exit with the bad-input code."""
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def load(file: Path, overrides: list[str], seed: int | None = None, replications: int | None = None,
         allow_large: bool = True, warnings: list[str] | None = None, trace_dirs: list[Path] | None = None) -> Scenario:
    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={seed}")
    if replications is not None:
        extra.append(f"replications={replications}")
    try:
        return load_scenario(file, extra, allow_large=allow_large, warnings=warnings, trace_dirs=trace_dirs or [])
    except ScenarioError as problem:
        fail(str(problem))


SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override any field: dotted.key=value (repeatable)")
]
TraceDirs = Annotated[
    list[Path] | None, typer.Option("--trace-dir", help="a folder trace files may come from, besides the scenario's (repeatable)")
]
AllowLarge = Annotated[
    bool, typer.Option("--allow-large", help="run even when the estimated cost passes the ceiling (README: limits)")
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
            result[key] = math.fsum(values) / len(values)
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
    for key in ("final_loss", "quorum_unmet_s", "mean_learners_per_merge", "wan_bytes"):
        if key in result:
            rows.append((key.replace("_", " "), f"{result[key]:.4g}"))
    rows.append(("chip-time", "  ".join(f"{k} {v:.3f}" for k, v in result["chip_time_fraction"].items() if v > 0)))
    rows.append(("simulated / wall", f"{result['sim_speedup']:.3g}x  ({result['events']:.0f} events, {result['wall_time_s']:.2f} s)"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def run_all(scenario: Scenario, file: Path, folder: Path, summaries: list[dict], show: bool) -> None:
    """Run every replication into ``folder``, appending each summary (and rewriting summary.json) as it ends."""
    from .runner import run_replication

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not show) as bar:
        for r in range(scenario.replications):
            task = bar.add_task(f"replication {r + 1}/{scenario.replications}", total=1.0)
            rep = run_replication(
                scenario, r, folder / f"rep-{r}", file.parent, progress=lambda f, t=task: bar.update(t, completed=f)
            )
            summaries.append(rep.summary)
            (folder / "summary.json").write_text(json.dumps(aggregate(summaries), indent=2, default=str))


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="override the scenario seed")] = None,
    replications: Annotated[int | None, typer.Option(help="override the number of replications")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="results folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    allow_large: AllowLarge = False,
    trace_dir: TraceDirs = None,
) -> None:
    """Run a scenario: print goodput, downtime, failures and tokens; write a results folder."""
    warnings: list[str] = []
    scenario = load(file, set_ or [], seed, replications, allow_large, warnings, trace_dir)  # before the heavy imports: bad input fails fast
    from .outputs import FolderLock, check_writable, claim_run_folder
    folder = output or Path("results") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    summaries: list[dict] = []
    try:
        check_writable(folder)
        with FolderLock(folder):  # a second run or sweep on this folder is refused while this one writes
            claim_run_folder(folder)
            warn(warnings)  # every check has passed: what is printed now is advice, not a refusal
            (folder / "scenario.yaml").write_text(scenario_yaml(scenario))
            run_all(scenario, file, folder, summaries, show=not quiet and not as_json and err.is_terminal)
    except ScenarioError as problem:  # a folder that cannot be used, or a trace file that changed since loading
        fail(str(problem))
    except KeyboardInterrupt:
        done = len(summaries)
        err.print(
            f"interrupted: {done} of {scenario.replications} replication(s) kept in {folder}"
            + (f"; rep-{done} is incomplete (no summary.json, its tables left as *.partial) and every reader skips it"
               if done < scenario.replications else ""), markup=False, highlight=False, soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
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
    allow_large: AllowLarge = False,
    trace_dir: TraceDirs = None,
) -> None:
    """Check scenario files; print one line per problem, exit 2 if any is bad."""
    bad = False
    for file in files:
        try:
            warnings: list[str] = []
            load_scenario(file, set_ or [], allow_large=allow_large, warnings=warnings, trace_dirs=trace_dir or [])
            out.print(f"{file}: ok" + (f" ({len(warnings)} warning(s))" if warnings else ""), highlight=False)
            warn(warnings)
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
    workers: Annotated[int | None, typer.Option(min=1, help="worker processes (default: every core)")] = None,
    address: Annotated[str | None, typer.Option(help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --executor dask)")] = None,
    resume: Annotated[bool, typer.Option(help="skip replications that already have an ok row in the folder")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    allow_large: AllowLarge = False,
    trace_dir: TraceDirs = None,
) -> None:
    """Sweep factors x seeds on every core or a Dask cluster: one Parquet row per replication, resumable."""
    from .sweep import command

    try:
        code = command(file, grid or [], zip_ or [], seeds, set_ or [], output, executor, workers, address, resume,
                       quiet, out, err, allow_large, trace_dir or [])
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

    values = {}
    for option, parser, text in (("--params", parse_count, params), ("--step-time", parse_duration, step_time),
                                 ("--bandwidth", parse_bandwidth, link)):
        try:
            values[option] = parser(text)
        except ValueError as problem:
            fail(f"chaossim bandwidth {option}: {problem}")
    if not 0 < target <= 1:
        fail(f"chaossim bandwidth --target: expected a utilisation in (0, 1], got {target}")
    try:
        rows = bandwidth_table(
            params=values["--params"], step_time_s=values["--step-time"], bandwidth_bps=values["--bandwidth"],
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


def main() -> None:
    # SIGTERM (a scheduler, `kill`, a CI timeout) stops a command the way Ctrl-C does: what was
    # written so far is closed and kept, and the command says so
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: results written so far are kept")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
