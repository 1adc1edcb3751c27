"""The ``chaossim`` command: run | validate | schema | export (and the commands other modules add).

``run`` plays each variant of a scenario's ``compare:`` section (:mod:`sim.compare`) on the same
failures, prints one table with a column per variant (or the summary of a single run), and writes the
results folder and its report. Tables use :mod:`sim.quantities` for units and fit 80 columns.

Exit codes: 0 success; 1 a scenario hypothesis failed or a replication halted (or a sweep replication
crashed); 2 bad input (the message is one line naming the file, YAML path and what was expected; no
traceback), a usage error, a cost past the ceiling, or an output folder that cannot be used; 130
interrupted (Ctrl-C or SIGTERM, after saying what was kept).
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
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer._click.exceptions import (  # typer's own copy of click raises these
    ClickException,
    NoArgsIsHelpError,
)
from typer.core import TyperGroup

from .loading import ScenarioError, scenario_yaml
from .outputs import write_text_atomic
from .provenance import header, provenance
from .quantities import format_metric, readable_number, verdict_text
from .scenario import Scenario
from .summary import AT_END_NOTE_SHARE

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


SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="override any field: dotted.key=value (repeatable)")
]
TraceDirs = Annotated[
    list[Path] | None, typer.Option("--trace-dir", metavar="DIR", help="a folder trace files may come from, besides the scenario's (repeatable)")
]
AllowLarge = Annotated[
    bool, typer.Option("--allow-large", help="accept an estimated cost past the ceiling (README: limits)", metavar="")
]


def _numeric_maps(maps: list) -> bool:
    """True when every replication holds a map of numbers here (lists of rejoin times are not averaged)."""
    return all(
        isinstance(m, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in m.values())
        for m in maps
    )  # empty maps too: a run without faults has failures {} (printed "none"), not no failures entry


def aggregate(summaries: list[dict]) -> dict:
    """Means of the numeric top-level metrics over replications, plus every run."""
    first = summaries[0]
    result = {"scenario": first["scenario"], "policy": first["policy"], "on_failure": first.get("on_failure"),
              "protocol": first.get("protocol"), "replications": len(summaries)}
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


# Rows of the run table, in order: metric (dotted path into the aggregate summary) and its row label
# (the unit comes from sim.quantities, so the CLI, the report and the sweep table agree).
TABLE_ROWS = (
    ("goodput", "goodput"), ("uptime", "uptime"), ("global_downtime_s", "global downtime (h)"),
    ("failures_total", "failures"), ("interruptions", "interruptions"), ("tokens", "tokens"),
    ("final_loss", "final loss"), ("mean_learners_per_merge", "learners per merge"),
    ("quorum_unmet_s", "quorum unmet (h)"), ("wan_bytes", "WAN traffic (GB)"),
    *((f"chip_time_fraction.{b}", f"chip-time {b}") for b in ("useful", "lost", "recovery", "checkpoint", "waiting", "down", "spare")),
)


def _value(result: dict, path: str):
    node = result
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _rows(results: list[dict]) -> list[tuple[str, list[str]]]:
    """Table rows present in at least one result (a chip-time bucket only where it is not zero)."""
    rows = []
    for path, label in TABLE_ROWS:
        values = [_value(r, path) for r in results]
        if all(v is None for v in values) or (path.startswith("chip_time_fraction.") and not any(values)):
            continue
        rows.append((label, [format_metric(path, v, unit=False) for v in values]))
    if any("time_to_train_s" in r["runs"][0] for r in results):  # a work-defined run
        rows.append(("time to train (h)", ["not within the duration" if r.get("time_to_train_s") is None
                                           else f"{r['time_to_train_s'] / 3600:,.3f}" for r in results]))
    halted = [f"{len(r['halted'])} of {r['replications']}" if r["halted"] else "no" for r in results]
    if any(r["halted"] for r in results):
        rows.append(("halted", halted))
    return rows


def _rounds_caption(protocol: str | None) -> str | None:
    return None if protocol is None else f"outer rounds: {protocol}"


def summary_table(result: dict) -> Table:
    """One run: metric | value, then the failures by kind and the simulator's speed."""
    table = Table(title=f"{result['scenario']} ({result['policy']}, {result['replications']} replication(s))",
                  caption=_rounds_caption(result.get("protocol")), caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    table.add_column("value", justify="right", overflow="fold")
    for label, (value,) in _rows([result]):
        table.add_row(label, value)
    table.add_row("failures by kind", ", ".join(f"{k} {format_metric(f'failures.{k}', v)}" for k, v in result["failures"].items()) or "none")
    # a run the restart loop played (sim/restart_loop.py) needs no SimPy event at all
    events = "restart loop" if result["events"] == 0 else f"{result['events']:,.0f} events"
    speed = f"{format_metric('sim_speedup', result['sim_speedup'])}x ({events}, {result['wall_time_s']:.2f} s)"
    table.add_row("simulated / wall", speed)
    return table


def comparison_table(results: list[dict], base: Scenario) -> Table:
    """Variants side by side: one column per variant, the rows of :data:`TABLE_ROWS`."""
    title = (f"{base.name}: {len(results)} variants of {', '.join(base.compare)} on the same failures "
             f"(mean of {base.replications} replication(s), seeds {base.seed}..{base.seed + base.replications - 1})")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("metric", no_wrap=True)
    for result in results:
        table.add_column(result["variant"].replace(", ", ",\n"), justify="right")
    # the outer-round settings every variant shares under the table, those that differ as a row
    parts = [(r.get("protocol") or "lockstep").split(", ") for r in results]
    shared = [p for p in parts[0] if all(p in other for other in parts)]
    if shared:
        table.caption, table.caption_justify = _rounds_caption(", ".join(shared)), "left"
    if any(len(p) > len(shared) for p in parts):
        table.add_row("outer rounds", *[",\n".join(p for p in ps if p not in shared) for ps in parts])
    for label, values in _rows(results):
        table.add_row(label, *values)
    return table


def _overrides(set_: list[str], seed: int | None, replications: int | None) -> list[str]:
    extra = list(set_)
    if seed is not None:
        extra.append(f"seed={seed}")
    if replications is not None:
        extra.append(f"replications={replications}")
    return extra


# a learner merged in fewer than this share of the rounds of a typical learner, while up most of the run,
# gets a note: its reports keep missing the rounds (the grace window can phase-lock with its step time)
LEFT_OUT_SHARE = 0.1


def left_out_learners(summary: dict) -> list[str]:
    """Learners up at least half the run whose merges are under LEFT_OUT_SHARE of the mean per learner."""
    merges, rounds = summary.get("merges_by_learner"), summary.get("outer_rounds", 0)
    if not merges or not rounds:
        return []
    mean = sum(merges.values()) / len(merges)
    up = {entry["name"] for entry in summary["learners"] if entry["downtime_s"] < 0.5 * summary["duration_s"]}
    return [name for name, n in merges.items() if name in up and n < LEFT_OUT_SHARE * mean]


def _listed(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _print_verdicts(summaries: list[dict], label: str) -> None:
    for r, summary in enumerate(summaries):
        where = ", ".join(w for w in (label, f"rep {r}" if len(summaries) > 1 else "") if w)
        suffix = f" ({where})" if where else ""
        for verdict in summary["hypotheses"]:
            status = "[green]PASS[/]" if verdict["passed"] else "[red]FAIL[/]"
            out.print(f"{status} hypothesis {verdict_text(verdict)}{suffix}", highlight=False)
        at_end, goodput = summary.get("useful_at_end_fraction", 0.0), summary["goodput"]
        if at_end > AT_END_NOTE_SHARE * goodput:
            out.print(f"note: {at_end / goodput:.0%} of goodput {goodput:.4f} is work still unmerged or "
                      f"uncheckpointed when the run ended, counted useful by the run-end convention; a longer "
                      f"run shows whether it is kept{suffix}", highlight=False)
        if left_out := left_out_learners(summary):
            merges = summary["merges_by_learner"]
            names, counts = _listed(left_out), _listed([f"{merges[n]:,}" for n in left_out])
            one = len(left_out) == 1
            out.print(f"note: {names} {'was' if one else 'were'} merged in {counts} of {summary['outer_rounds']:,} "
                      f"rounds ({sum(merges.values()) / len(merges):,.0f} per learner on average) though up most "
                      f"of the run: {'its' if one else 'their'} reports keep arriving after the rounds close, so "
                      f"{'its' if one else 'their'} work stays pending (README, \"When a learner is never merged\")"
                      f"{suffix}", highlight=False)
        if summary["halted"]:
            out.print(f"[red]HALTED[/] at {summary['duration_s'] / 3600:.4g} h of simulated time by the halt bound "
                      f"{verdict_text(summary['halted'])}{suffix}", highlight=False)


def _play(variant, file: Path, folder: Path, bar: Progress, record: dict, summaries: list[dict]) -> dict:
    """Run every replication of one variant into ``folder``, appending each summary to ``summaries`` (and
    rewriting summary.json) as it ends; the variant's aggregate summary."""
    from .runner import run_replication

    scenario = variant.scenario
    folder.mkdir(parents=True, exist_ok=True)
    if variant.label:
        (folder / "scenario.yaml").write_text(header(record) + scenario_yaml(scenario, folder))
    name = f"{variant.label}: " if variant.label else ""
    for r in range(scenario.replications):
        task = bar.add_task(f"{name}replication {r + 1}/{scenario.replications}", total=1.0)
        try:
            rep = run_replication(scenario, r, folder / f"rep-{r}", file.parent,
                                  progress=lambda f, t=task: bar.update(t, completed=f))
        except ScenarioError as problem:  # e.g. a trace file that changed since it was loaded
            fail(str(problem))
        bar.remove_task(task)
        summaries.append(rep.summary)
        result = aggregate(summaries) | {"variant": variant.label, "setting": variant.setting, "provenance": record}
        write_text_atomic(folder / "summary.json", json.dumps(result, indent=2, default=str))
    return result


def _interrupted(folder: Path, variants: list, finished: int, done: int) -> None:
    """Say what an interrupted run kept: the finished variants and replications, and which one is partial."""
    compared = bool(variants[0].label)
    current = variants[min(finished, len(variants) - 1)]
    where = folder / current.folder_name if compared else folder
    reps = current.scenario.replications
    line = "interrupted: "
    if compared:
        line += f"{finished} of {len(variants)} variant(s) finished; {current.label}: "
    line += f"{done} of {reps} replication(s) kept in {where}"
    if finished < len(variants) and done < reps:
        line += f"; rep-{done} is incomplete (no summary.json, its tables left as *.partial) and every reader skips it"
    err.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="scenario YAML file")],
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="override the scenario seed")] = None,
    replications: Annotated[int | None, typer.Option(help="override the number of replications")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="results folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object", metavar="")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar", metavar="")] = False,
    with_report: Annotated[bool, typer.Option("--report/--no-report", help="write report/report.html in the results folder", metavar="")] = True,
    allow_large: AllowLarge = False,
    trace_dir: TraceDirs = None,
) -> None:
    """Run a scenario (each variant of its compare: section on the same failures); print the
    comparison or the summary, write a results folder and its report."""
    from .compare import load_variants

    overrides = _overrides(set_ or [], seed, replications)
    warnings: list[str] = []
    try:  # before the heavy imports: bad input fails fast
        base, variants = load_variants(file, overrides, allow_large, warnings, trace_dir or [])
    except ScenarioError as problem:
        fail(str(problem))
    from .outputs import FolderLock, check_writable, claim_run_folder

    words = ["run", str(file), *[w for s in set_ or [] for w in ("--set", s)]]
    words += [w for flag, v in (("--seed", seed), ("--replications", replications), ("-o", output)) if v is not None
              for w in (flag, str(v))]
    record = provenance(words, set_ or [], [base.seed + r for r in range(base.replications)])
    folder = output or Path("results") / f"{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    compared = bool(variants[0].label)
    show = not quiet and not as_json and err.is_terminal
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn()]
    results: list[dict] = []
    summaries: list[dict] = []  # of the variant being played
    try:
        check_writable(folder)
        with FolderLock(folder):  # a second run or sweep on this folder is refused while this one writes
            claim_run_folder(folder)
            warn(warnings)  # every check has passed: what is printed now is advice, not a refusal
            (folder / "scenario.yaml").write_text(header(record) + scenario_yaml(base, folder))
            if compared:  # first, so that a run stopped half-way still reads as the variants it finished
                document = {
                    "scenario": base.name, "compared": list(base.compare), "provenance": record,
                    "variants": [{"label": v.label, "setting": v.setting, "folder": v.folder_name} for v in variants],
                }
                (folder / "compare.json").write_text(json.dumps(document, indent=2, default=str))
            with Progress(*columns, console=err, transient=True, disable=not show) as bar:
                for v in variants:
                    summaries = []
                    results.append(_play(v, file, folder / v.folder_name if compared else folder, bar, record, summaries))
            page = _write_report(folder) if with_report else None
    except ScenarioError as problem:  # a folder that cannot be used
        fail(str(problem))
    except KeyboardInterrupt:
        _interrupted(folder, variants, len(results), len(summaries))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    passed = all(r["hypotheses_passed"] and not r["halted"] for r in results)
    if as_json:
        document = results[0] if not compared else {
            "scenario": base.name, "compared": list(base.compare), "hypotheses_passed": passed,
            "provenance": record, "variants": results,
        }
        print(json.dumps(document, default=str))
    else:
        out.print(comparison_table(results, base) if compared else summary_table(results[0]))
        for result in results:
            _print_verdicts(result["runs"], result["variant"])
        out.print(f"results: {folder}", highlight=False, soft_wrap=True)  # a path stays one copyable line
        if page:
            out.print(f"report: {page}", highlight=False, soft_wrap=True)
    # a halted replication failed its health check, as in chaos tools: it gates like a failed hypothesis
    if not passed:
        raise typer.Exit(EXIT_HYPOTHESIS)


def _write_report(folder: Path) -> Path:
    # imported here: analysis owns matplotlib, and `import sim` must never pull it in
    from analysis.load import ResultsError
    from analysis.report import write_report

    try:
        return write_report([folder], folder / "report")
    except ResultsError as problem:
        fail(str(problem))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="scenario YAML files")],
    set_: SetOption = None,
    allow_large: AllowLarge = False,
    trace_dir: TraceDirs = None,
) -> None:
    """Check scenario files (each compared variant too): one line per problem, exit 2 if any is bad;
    warn about faults that cannot fire or cannot touch the training."""
    from .checks import bound_problems, warnings
    from .compare import load_variants
    from .loading import located, read_yaml

    bad = False
    for file in files:
        try:
            lint: list[str] = []  # likely mistakes (sim.lint), printed with the checks' warnings below
            _, variants = load_variants(file, set_ or [], allow_large, lint, trace_dir or [])
        except ScenarioError as problem:
            err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
            bad = True
            continue
        problems, notes = [], lint
        data = read_yaml(file)
        found = [(v, bound_problems(v.scenario, file.parent)) for v in variants]
        said = set()
        for v, missing in found:
            name = f"{file} [{v.label}]" if v.label else str(file)
            for section, k, message in missing:
                # a bound no variant reports is one line about the file (worded as the first variant
                # has it), not one per variant
                shared = all(any(p[:2] == (section, k) for p in other) for _, other in found)
                if shared and (section, k) in said:
                    continue
                said.add((section, k))
                line = f"{located(data, (section, k, 'metric'), str(file) if shared else name)}: {message}"
                if line not in problems:
                    problems.append(line)
            notes += [n for n in warnings(v.scenario, name) if n not in notes]
        for problem in problems:
            err.print(f"error: {problem}", markup=False, highlight=False, soft_wrap=True)
        for note in notes:
            err.print(f"warning: {note}", markup=False, highlight=False, soft_wrap=True)
        bad |= bool(problems)
        if not problems:
            out.print(f"{file}: ok" + (f" ({len(notes)} warning(s))" if notes else ""), highlight=False)
    if bad:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editor completion and checking)."""
    from .schema import strict_json

    document = strict_json(Scenario.model_json_schema())
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "chaossim scenario"
    print(json.dumps(document, indent=2, allow_nan=False))


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="scenario YAML file (its sweep: section gives factors and seeds)")],
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", metavar="KEY=V1,V2,...", help="factor dotted.key=v1,v2,... (cartesian product; repeatable)")] = None,
    zip_: Annotated[list[str] | None, typer.Option("--zip", metavar="KEY=V1,V2,...", help="factor dotted.key=v1,v2,... varying together with the other --zip factors")] = None,
    seeds: Annotated[str | None, typer.Option(help="seeds, e.g. 1-5 or 1,2,7 (default: the file's, else seed + replication)")] = None,
    set_: SetOption = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="sweep folder (rows/, runs/)")] = None,
    executor: Annotated[str, typer.Option(help="local (a process per core) | dask | serial (in this process)")] = "local",
    workers: Annotated[int | None, typer.Option(min=1, help="worker processes (default: every core)")] = None,
    address: Annotated[str | None, typer.Option(help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --executor dask)")] = None,
    resume: Annotated[bool, typer.Option(help="skip replications that already have an ok row in the folder", metavar="")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar", metavar="")] = False,
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
    results: Annotated[list[Path], typer.Argument(metavar="RESULTS", help="results folders (chaossim run -o) and/or sweep folders")],
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
    out.print(f"report: {page}", highlight=False, soft_wrap=True)


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
    as_json: Annotated[bool, typer.Option("--json", help="print rows as JSON", metavar="")] = False,
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
            row["method"], str(row["bits"]), f"{row['cu']:.3f}", f"{readable_number(row['exposed_comm_s_per_step'])} s",
            f"{readable_number(row['required_bandwidth_bps'] / 1e9)} Gbit/s",
        )
    out.print(table)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="a results folder of chaossim run, or one replication's folder (RUN/rep-R, a sweep's runs/I)")],
    goodput_log: Annotated[bool, typer.Option("--goodput-log", help="ml-goodput-measurement's step event log", metavar="")] = False,
    replication: Annotated[int, typer.Option("--replication", "-r", help="which replication")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="default: RUN/rep-R/goodput-log.jsonl")] = None,
) -> None:
    """Export a run for other tools (--goodput-log: JSON lines for ml-goodput-measurement)."""
    from .goodput_log import GoodputLogError, replication_folder, write

    if not goodput_log:
        fail("export: choose what to export (--goodput-log)")
    try:
        rep_dir = replication_folder(run_dir, replication)
        target = output or rep_dir / "goodput-log.jsonl"
        n = write(rep_dir, target)
    except (GoodputLogError, OSError) as problem:
        fail(str(problem))
    out.print(f"{n} log entries: {target}", highlight=False)


def main() -> None:
    # SIGTERM (a scheduler, `kill`, a CI timeout) stops a command the way Ctrl-C does: what was
    # written so far is closed and kept, and the command says so
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.default_int_handler(signum, frame))
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: results written so far are kept")
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError as problem:
        # past the memory ceiling (which --allow-large lifted) or beyond what the estimate foresees
        why = ("the ceiling --allow-large lifted was there for this" if "--allow-large" in sys.argv[1:]
               else "more than the memory estimate foresaw")
        err.print(f"error: out of memory ({problem}); {why} (README: limits)", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
