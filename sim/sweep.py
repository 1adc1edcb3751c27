"""Sweeps: one scenario, many settings and seeds, one Parquet row per replication; resumable.

Concepts
--------
* A **factor** is a set of dotted scenario keys with the levels they take. A ``grid`` factor is one
  key; grid factors multiply (cartesian product). ``zip`` factors vary together (the i-th value of
  every zip key forms level i) and the zip group multiplies the grid as one more factor. Factors come
  from the scenario's ``sweep:`` section and from the command line (``--grid k=v1,v2``,
  ``--zip k=v1,v2``); a command-line factor replaces the file's factor of the same key, a new key
  extends the sweep.
* A **point** is one combination of levels. It is built exactly as ``--set`` builds a scenario: the
  levels are written into a deep copy of the raw YAML data and the result is validated. Every point
  is validated before anything runs, so a typo in a key or a bad value fails in a second, as a
  one-line :class:`~sim.loading.ScenarioError` naming the point, instead of after hours of runs.
  Points are numbered in expansion order: the first factor varies slowest, the zip group last.
* A **replication** is a point run with one seed; ``seeds`` defaults to ``seed + r`` for
  ``r < replications``, as ``chaossim run`` does. Replication ``index = point * len(seeds) + k``.
* A **job** ships ``(index, resolved scenario as a JSON dict, seed, output folder)`` to a worker
  (:mod:`sim.executors`), which needs nothing but the installed package. The worker re-validates the
  scenario, runs it with that seed and returns one flat **row**; a replication that raises becomes a
  row with ``status: error`` and the exception, and the sweep carries on. Jobs travel in **batches**
  of consecutive replications, one task per batch, shrinking as the jobs run out (a quarter of a
  worker's share of what is left, at most 32, down to single jobs at the end), so a sweep of small
  replications pays a task's cost once per batch and no worker idles long at the end; rows are still
  one per replication.

Results folder
--------------
::

    sweep.json                 the plan (factors, seeds, points) and its fingerprint
    scenario.yaml              the base scenario, resolved, with the sweep it ran (factors and seeds)
    rows/part-000017.parquet   one row per finished replication, each written atomically
    runs/17/                   that replication's results (scenario.yaml, summary.json, timeline...)

A row holds ``index``, ``point``, one column per factor key (its resolved value: ``training.grace.max``
is in seconds), ``seed``, ``status`` (``ok`` | ``error``), ``error`` (exception type and message),
every scalar summary metric with dotted names (``goodput``, ``chip_time_fraction.lost``,
``failures.chip_failure``) and ``row_wall_s``. Only the columns in :data:`WALL_COLUMNS` depend on the
machine: the rest are identical whatever the executor or the number of workers. The driver writes
each row as soon as it arrives (temporary file, then rename), so a sweep that is killed keeps every
finished row, and ``--resume`` runs only the replications without an ``ok`` row. :func:`load_sweep`
reads the rows back as a DataFrame sorted by index.

Running on a Dask cluster
-------------------------
Start a scheduler and workers on the machines (each with this package installed, and the results
folder on a filesystem they share at the same path, because workers write ``runs/<index>/``)::

    dask scheduler                                     # prints tcp://10.0.0.5:8786
    dask worker tcp://10.0.0.5:8786 --nworkers 32 --nthreads 1   # on every machine
    chaossim sweep scenarios/sweeps/quorum-grace.yaml --executor dask --address tcp://10.0.0.5:8786 -o /shared/qg

Without ``--address``, ``--executor dask`` starts a LocalCluster of ``--workers`` processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from .executors import Job, batches, run_batch
from .loading import (
    ScenarioError,
    apply_override,
    check_cost,
    load_scenario,
    parse_value,
    read_yaml,
    scenario_yaml,
    validate,
    variant,
)
from .outputs import FolderLock, check_writable, describe_contents
from .provenance import header, provenance
from .quantities import format_metric, metric_quantity
from .scenario import Scenario, SweepSpec
from .summary import AT_END_NOTE_SHARE

WALL_COLUMNS = ("wall_time_s", "events_per_s", "sim_speedup", "row_wall_s", "surrogate_wall_s")
"""Row columns that measure the machine, not the simulation (left out when comparing sweeps)."""

BEST = (("goodput", "max"), ("global_downtime_s", "min"), ("final_loss", "min"))
"""Metrics of the end-of-sweep table and whether more or less is better."""

_RESERVED = ("seed", "replications", "sweep")

MAX_SEEDS = 1_000_000
"""Seeds one sweep may list, --allow-large or not (each is a job held in memory)."""
MAX_POINTS = 10_000
"""Points (factor combinations) a sweep may expand to without --allow-large: each is validated up front."""


class SweepError(ScenarioError):
    """A sweep that cannot run as asked (e.g. its folder holds another sweep); one line, exit code 2."""


@dataclass(frozen=True)
class Factor:
    """One sweep axis: keys that vary together (one for a grid factor) and the levels they take."""

    kind: str  # "grid" | "zip"
    keys: tuple[str, ...]
    levels: tuple[tuple[Any, ...], ...]  # one value per key in each level


@dataclass(frozen=True)
class SweepPlan:
    """An expanded, validated sweep: what :func:`run_sweep` runs. Built by :func:`plan_sweep`."""

    file: Path
    name: str
    base: Scenario  # the scenario before factors, its sweep section holding the effective factors and seeds
    factors: tuple[Factor, ...]
    seeds: tuple[int, ...]
    settings: tuple[dict, ...]  # per point: factor key -> value as written
    columns: tuple[dict, ...]  # per point: factor key -> row value (resolved; one type per key)
    scenarios: tuple[dict, ...]
    fingerprint: str

    @property
    def total(self) -> int:
        return len(self.scenarios) * len(self.seeds)

    def jobs(self, folder: Path) -> list[Job]:
        """Every replication in index order, writing its results under ``folder/runs/<index>``."""
        runs, where = Path(folder).resolve() / "runs", str(self.file.resolve().parent)
        jobs = []
        for index, (p, k) in enumerate(itertools.product(range(len(self.scenarios)), range(len(self.seeds)))):
            jobs.append(Job(index, p, self.seeds[k], self.scenarios[p], str(runs / str(index)), where))
        return jobs

    def head(self, job: Job) -> dict:
        """The first columns of a job's row: who it is, before what it measured."""
        return {"index": job.index, "point": job.point, **self.columns[job.point], "seed": job.seed}


# --------------------------------------------------------------------------------------------- planning


def parse_factors(args: Sequence[str], option: str) -> dict[str, list]:
    """``["training.quorum=1,2,4"]`` -> ``{"training.quorum": [1, 2, 4]}``; values are read as YAML."""
    factors: dict[str, list] = {}
    for arg in args:
        key, _, raw = arg.partition("=")
        key = key.strip()
        values = parse_value(f"[{raw}]") if raw.strip() else None
        if not key or not isinstance(values, list) or not values:
            raise ScenarioError(f"{option} {arg!r}: expected dotted.key=value1,value2,...")
        if key in factors:
            raise ScenarioError(f"{option} {key}: given twice")
        factors[key] = values
    return factors


def parse_seeds(text: str) -> list[int]:
    """``"1-5"``, ``"1,2,7"`` or ``"1-3,10"`` -> a list of seeds (counted before any list is built)."""
    ranges = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            ranges.append(range(int(low), int(high) + 1) if dash else range(int(low), int(low) + 1))
        except ValueError:
            raise ScenarioError(f"--seeds {text!r}: expected seeds like 1-5 or 1,2,7") from None
        if not ranges[-1]:
            raise ScenarioError(f"--seeds {text!r}: the range {part.strip()} holds no seed (expected low-high, like 1-5)")
    count = sum(len(r) for r in ranges)
    if count > MAX_SEEDS:
        raise ScenarioError(f"--seeds {text!r}: {count:,} seeds, more than the limit of {MAX_SEEDS:,} per sweep")
    return [seed for r in ranges for seed in r]


def _plain(value: Any) -> Any:
    # ruamel's round-trip scalars and maps -> plain JSON types, so levels can be stored and compared
    return json.loads(json.dumps(value, default=str))


def _factors(file: Path, grid: Mapping[str, list], zipped: Mapping[str, list]) -> list[Factor]:
    for key, values in [*grid.items(), *zipped.items()]:
        if key.split(".")[0] in _RESERVED:
            raise ScenarioError(f"{file}: sweep factor {key}: not a factor (seeds are given with 'seeds' / --seeds)")
        if not isinstance(values, list) or not values:
            raise ScenarioError(f"{file}: sweep factor {key}: expected a non-empty list of values, got {values!r}")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise ScenarioError(f"{file}: sweep factor {both[0]} is both a grid and a zip factor")
    lengths = {key: len(values) for key, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ScenarioError(f"{file}: zip factors must have equal lengths, got {lengths}")
    factors = [Factor("grid", (key,), tuple((_plain(v),) for v in values)) for key, values in grid.items()]
    if zipped:
        levels = tuple(zip(*[[_plain(v) for v in values] for values in zipped.values()]))
        factors.append(Factor("zip", tuple(zipped), levels))
    return factors


def _strict_json(data: Any) -> Any:
    """Infinity as the string ``"inf"``, which every float and unit field parses back.

    Depending on its version, pydantic's JSON mode leaves ``inf`` a float (not JSON) or writes the
    string ``"Infinity"`` (which the unit parsers reject); a sweep's unbounded ``grace.max`` or
    ``schedule.until`` must survive either, and any transport.
    """
    if isinstance(data, dict):
        return {key: _strict_json(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_strict_json(value) for value in data]
    if data == "Infinity" or (isinstance(data, float) and math.isinf(data) and data > 0):
        return "inf"
    return data


def _resolved(scenario: Scenario, key: str, given: Any) -> Any:
    """The validated value at a dotted key (SI units, enums as text); the given value if not a scalar."""
    node: Any = scenario
    for part in key.split("."):
        if isinstance(node, BaseModel):
            node = getattr(node, part, None)
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return json.dumps(given)
    if isinstance(node, Enum):
        return node.value
    return node if node is None or isinstance(node, (bool, int, float, str)) else json.dumps(given)


def _one_type(values: list) -> list:
    """Give a factor column one Parquet type across points: int, float, bool, else text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return [None if v is None else float(v) for v in values]
    return [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]


def plan_sweep(
    file: str | Path,
    overrides: Sequence[str] = (),
    grid: Mapping[str, list] | None = None,
    zipped: Mapping[str, list] | None = None,
    seeds: Sequence[int] | None = None,
    allow_large: bool = True,
    trace_dirs: Sequence[Path] = (),
) -> SweepPlan:
    """Expand the scenario's sweep (merged with the given factors and seeds) and validate every point.

    Without ``allow_large`` a sweep of more than :data:`MAX_POINTS` points, or whose estimated cost
    (:mod:`sim.cost`, over every point and seed) passes the ceiling, is refused before it runs.
    """
    file = Path(file)
    data = read_yaml(file)
    for assignment in overrides:
        apply_override(data, assignment)
    base = validate(data, str(file), tuple(trace_dirs))
    spec = base.sweep or SweepSpec()
    factors = _factors(file, {**spec.grid, **(grid or {})}, {**spec.zip, **(zipped or {})})
    seed_list = list(seeds) if seeds is not None else list(spec.seeds) or [base.seed + r for r in range(base.replications)]
    if not seed_list or any(s < 0 for s in seed_list) or len(set(seed_list)) != len(seed_list):
        raise ScenarioError(f"{file}: sweep seeds must be distinct integers >= 0, got {seed_list[:10]}")
    points = math.prod(len(f.levels) for f in factors)
    if points > MAX_POINTS and not allow_large:
        raise ScenarioError(f"{file}: sweep: {points:,} points (factor levels multiplied), more than the limit of "
                            f"{MAX_POINTS:,} without --allow-large")

    settings, scenarios, resolved, validated = [], [], [], []
    for levels in itertools.product(*[f.levels for f in factors]):
        setting = {k: v for f, level in zip(factors, levels) for k, v in zip(f.keys, level)}
        label = ", ".join(f"{k}={json.dumps(v)}" for k, v in setting.items()) or "without factors"
        scenario = variant(data, setting, f"{file} [sweep point {label}]", f"{file}: sweep factor", tuple(trace_dirs), file.parent)
        # ship strict JSON, and prove it loads back to the same scenario before any worker sees it
        shipped = _strict_json(scenario.model_dump(mode="json"))
        if Scenario.model_validate(shipped) != scenario:
            raise ScenarioError(f"{file} [sweep point {label}]: the resolved scenario does not load back unchanged")
        settings.append(setting)
        validated.append(scenario)
        scenarios.append(shipped)
        resolved.append({key: _resolved(scenario, key, value) for key, value in setting.items()})
    if not allow_large:
        check_cost([(scenario, len(seed_list)) for scenario in validated], data, str(file), ("sweep", "seeds"))
    keys = [k for f in factors for k in f.keys]
    typed = {key: _one_type([r[key] for r in resolved]) for key in keys}
    columns = tuple({key: typed[key][p] for key in keys} for p in range(len(resolved)))
    fingerprint = hashlib.sha256(json.dumps([scenarios, seed_list], sort_keys=True).encode()).hexdigest()
    effective = SweepSpec(
        grid={f.keys[0]: [level[0] for level in f.levels] for f in factors if f.kind == "grid"},
        zip={key: [level[i] for level in f.levels] for f in factors if f.kind == "zip" for i, key in enumerate(f.keys)},
        seeds=seed_list,
    )
    return SweepPlan(
        file, base.name, base.model_copy(update={"sweep": effective}), tuple(factors), tuple(seed_list),
        tuple(settings), columns, tuple(scenarios), fingerprint,
    )


# --------------------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SweepOutcome:
    folder: Path
    total: int
    ran: int  # replications run now
    skipped: int  # replications that already had an ok row (--resume)
    errors: int  # replications whose row says error


def _write_row(rows: Path, index: int, row: dict) -> None:
    # write-then-rename: a reader (or a resumed sweep) sees the whole row or no row, even after a kill
    final = rows / f"part-{index:06d}.parquet"
    partial = rows / f".part-{index:06d}.{os.getpid()}.tmp"
    pq.write_table(pa.Table.from_pylist([row]), partial)
    os.replace(partial, final)


def _claim(folder: Path, plan: SweepPlan, resume: bool, record: dict | None = None) -> None:
    """Make ``folder`` this sweep's folder (its lock held); refuse a folder holding anything else.

    A folder with no ``sweep.json`` must be empty (a run, another tool's files and stray rows are never
    written over); one with a manifest must hold this very sweep. Files of a new sweep are written
    only here, after every check has passed; a resumed sweep's manifest is left as it is.
    """
    manifest, rows = folder / "sweep.json", folder / "rows"
    if manifest.exists():
        try:
            fingerprint = json.loads(manifest.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            raise SweepError(f"{manifest}: unreadable sweep manifest; this folder cannot be resumed, choose another -o folder") from None
        if fingerprint != plan.fingerprint:
            raise SweepError(f"{folder}: holds a different sweep (scenario, factors or seeds differ); choose another -o folder")
        existing = list(rows.glob("part-*.parquet"))
        if existing and not resume:
            raise SweepError(f"{folder}: already holds {len(existing)} row(s) of this sweep; pass --resume to finish it, or choose another -o folder")
        for stale in rows.glob(".part-*.tmp"):  # left by a killed sweep mid-write
            stale.unlink()
        return
    held = describe_contents(folder)
    if held is not None:
        raise SweepError(f"{folder}: already holds {held} and no sweep.json; a sweep writes only into a new or empty folder, choose another -o folder")
    rows.mkdir(parents=True)
    document = {
        "scenario": plan.name, "file": str(plan.file), "fingerprint": plan.fingerprint, "total": plan.total,
        "factors": [{"kind": f.kind, "keys": list(f.keys), "levels": [list(level) for level in f.levels]} for f in plan.factors],
        "seeds": list(plan.seeds), "provenance": record or {},
        "points": [{"point": p, "setting": s, "columns": c} for p, (s, c) in enumerate(zip(plan.settings, plan.columns))],
    }
    (folder / "scenario.yaml").write_text((header(record) if record else "") + scenario_yaml(plan.base, folder))
    partial = folder / ".sweep.json.tmp"
    partial.write_text(json.dumps(_strict_json(document), indent=2))
    os.replace(partial, manifest)  # last: a folder with a manifest is a complete claim


def _ok_indices(folder: Path) -> set[int]:
    done = set()
    for path in (folder / "rows").glob("part-*.parquet"):
        try:
            row = pq.read_table(path, columns=["index", "status"]).to_pylist()[0]
        except (OSError, pa.ArrowException, IndexError, KeyError):
            raise SweepError(f"{path}: unreadable row file; delete it and run --resume again to redo that replication") from None
        if row["status"] == "ok":
            done.add(row["index"])
    return done


def run_sweep(
    plan: SweepPlan,
    folder: str | Path,
    executor,
    resume: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    record: dict | None = None,
) -> SweepOutcome:
    """Run the plan's replications on ``executor``, writing each row as it finishes.

    With ``resume``, replications that already have an ``ok`` row are skipped and errored ones run
    again. ``progress(done, total, errors)`` is called before the first and after every row.
    ``record`` (:mod:`sim.provenance`) goes into ``sweep.json`` and the scenario's header.
    """
    folder = Path(folder).resolve()
    check_writable(folder)
    with FolderLock(folder):  # a second sweep (or run) on this folder is refused while this one runs
        _claim(folder, plan, resume, record)
        done = _ok_indices(folder) if resume else set()
        jobs = [job for job in plan.jobs(folder) if job.index not in done]
        ran = errors = 0
        if progress:
            progress(len(done), plan.total, 0)
        # replications travel in batches (sim.executors.run_batch); rows are still written one by one
        for batch, outcomes in executor.imap_unordered(run_batch, batches(jobs, getattr(executor, "workers", 1))):
            if isinstance(outcomes, BaseException):  # the worker itself was lost: we know only that
                outcomes = [{"status": "error", "error": f"{type(outcomes).__name__}: {outcomes}"}] * len(batch)
            for job, outcome in zip(batch, outcomes):
                _write_row(folder / "rows", job.index, {**plan.head(job), **outcome})
                ran += 1
                errors += outcome["status"] != "ok"
                if progress:
                    progress(len(done) + ran, plan.total, errors)
    return SweepOutcome(folder, plan.total, ran, len(done), errors)


def load_sweep(folder: str | Path) -> pd.DataFrame:
    """Every row of a sweep folder, sorted by index; counts of failures that never happened are 0."""
    files = sorted((Path(folder) / "rows").glob("part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=["index", "point", "seed", "status", "error"])
    # rows differ in columns (an error row has no metrics; a run without a fault kind has no count),
    # so the tables are unified column by column rather than read as one fixed schema
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    frame = table.to_pandas()
    ok = frame["status"] == "ok"
    for column in frame.columns:
        if column.startswith(("failures.", "failures_by_fault.")):
            frame.loc[ok, column] = frame.loc[ok, column].fillna(0)
    return frame.sort_values("index", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- reporting


def point_stats(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per point: ``mean``, ``std`` and ``n`` of a metric over the seeds whose run finished ok."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby("point")[metric].agg(["mean", "std", "count"]).rename(columns={"count": "n"})


def best_table(frame: pd.DataFrame, plan: SweepPlan):
    """A rich table of the best point per metric of :data:`BEST`: one column per metric, one row per
    sweep axis (a zip group is one row), then the mean and spread across seeds; fits 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"{plan.name}: best settings ({len(plan.scenarios)} points x {len(plan.seeds)} seeds)",
                  box=box.SIMPLE_HEAD)
    # a dotted key is read whole: the column is as wide as the longest one (a zip group wraps at " + ")
    longest_key = max((len(key) for factor in plan.factors for key in factor.keys), default=7)
    table.add_column("setting", overflow="fold", width=min(longest_key, 40))
    best = {}
    for metric, goal in BEST:
        if metric not in frame.columns:
            continue
        stats = point_stats(frame, metric).dropna(subset=["mean"])
        if stats.empty:  # no replication of any point finished ok
            continue
        # idxmax/idxmin return the first best point, so ties go to the lowest point index
        best[metric] = (stats["mean"].idxmax() if goal == "max" else stats["mean"].idxmin(), stats)
        unit = metric_quantity(metric).suffix.strip()  # in the header, so the cells stay short
        table.add_column(f"{metric_quantity(metric).name} ({goal}{', ' + unit if unit else ''})", justify="right",
                         overflow="fold", max_width=15)
    for factor in plan.factors:
        values = [", ".join(str(plan.settings[point][key]) for key in factor.keys) for point, _ in best.values()]
        table.add_row(" + ".join(factor.keys), *values)
    # in the metric's display unit, as `chaossim run` and the report show it
    table.add_row("mean", *[format_metric(metric, stats.at[point, "mean"]) for metric, (point, stats) in best.items()])
    table.add_row("std over seeds", *["-" if pd.isna(stats.at[point, "std"]) else format_metric(metric, stats.at[point, "std"])
                                      for metric, (point, stats) in best.items()])
    table.add_row("seeds", *[f"{stats.at[point, 'n']:.0f}" for point, stats in best.values()])
    # the setting shown is the first of the points that share the best mean: say how many do
    ties = [int(((stats["mean"] - stats.at[point, "mean"]).abs() <= 1e-9 * abs(stats.at[point, "mean"])).sum())
            for point, stats in best.values()]
    if any(n > 1 for n in ties):
        table.add_row("points tied", *[f"{n} of {len(stats)}" for n, (_, stats) in zip(ties, best.values())])
    return table


def run_end_notes(frame: pd.DataFrame, plan: SweepPlan) -> list[str]:
    """Notes on points whose mean goodput rests for more than :data:`AT_END_NOTE_SHARE` on the run-end
    convention (work still unmerged or uncheckpointed when the runs ended, counted useful), as ``run``
    prints for one run: the best goodput of the table may be mostly that."""
    if "useful_at_end_fraction" not in frame.columns or "goodput" not in frame.columns:
        return []
    goodput = point_stats(frame, "goodput")["mean"].dropna()
    if goodput.empty:
        return []
    share = (point_stats(frame, "useful_at_end_fraction")["mean"] / goodput).where(goodput > 0).dropna()
    flagged = share[share > AT_END_NOTE_SHARE]
    if flagged.empty:
        return []

    def setting(point: int) -> str:
        return ", ".join(f"{key}={value}" for key, value in plan.settings[point].items()) or "the base scenario"

    best, worst = goodput.idxmax(), flagged.idxmax()
    notes = [(f"note: at {len(flagged)} of {len(goodput)} points more than {AT_END_NOTE_SHARE:.0%} of goodput is work "
              f"still unmerged or uncheckpointed when the runs ended, counted useful by the run-end convention "
              f"(most: {flagged[worst]:.0%} at {setting(worst)}); a longer run shows whether it is kept")]
    if best in flagged.index:
        notes.append(f"note: the best goodput ({goodput[best]:.4f}, {setting(best)}) is {flagged[best]:.0%} such work")
    return notes


def command(
    file: Path, grid: Sequence[str], zipped: Sequence[str], seeds: str | None, overrides: Sequence[str],
    output: Path | None, executor: str, workers: int | None, address: str | None, resume: bool, quiet: bool,
    out, err, allow_large: bool = False, trace_dirs: Sequence[Path] = (),
) -> int:
    """``chaossim sweep``: plan, run with a progress bar, print the best settings; the exit code."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .executors import ExecutorError, make_executor  # dask is imported only when it is used

    plan = plan_sweep(
        file, overrides, parse_factors(grid, "--grid"), parse_factors(zipped, "--zip"),
        parse_seeds(seeds) if seeds is not None else None, allow_large, trace_dirs,
    )
    words = ["sweep", str(file), *[w for g in grid for w in ("--grid", g)], *[w for z in zipped for w in ("--zip", z)],
             *(["--seeds", seeds] if seeds is not None else []), *[w for o in overrides for w in ("--set", o)],
             *(["-o", str(output)] if output is not None else [])]
    record = provenance(words, list(overrides), list(plan.seeds))
    folder = output or Path("results") / f"{plan.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable(folder)
    existed = folder.exists()
    fresh = not existed or describe_contents(folder) is None  # nothing of a sweep in it yet
    columns = [
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    try:
        runner = make_executor(executor, workers, address)
        with Progress(*columns, console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
            task = bar.add_task(f"{plan.name} on {runner.name}", total=plan.total, failed=0)
            outcome = run_sweep(
                plan, folder, runner, resume,
                progress=lambda done, total, failed: bar.update(task, completed=done, failed=failed), record=record,
            )
    except ExecutorError as problem:
        if fresh and not list((folder / "rows").glob("part-*.parquet")):
            # refused before any replication ran (no scheduler, say): leave no sweep folder behind
            for child in folder.iterdir() if folder.is_dir() else ():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            if not existed and folder.is_dir():
                folder.rmdir()
        raise SweepError(str(problem)) from None
    except KeyboardInterrupt:
        kept = len(list((Path(folder) / "rows").glob("part-*.parquet")))
        err.print(f"interrupted: {kept} row(s) kept in {folder}; add --resume to finish the sweep", markup=False, highlight=False, soft_wrap=True)
        raise
    frame = load_sweep(outcome.folder)
    out.print(best_table(frame, plan))
    for note in run_end_notes(frame, plan):
        out.print(note, markup=False, highlight=False, soft_wrap=True)
    for row in frame[frame["status"] != "ok"].head(5).itertuples():
        err.print(f"replication {row.index} (point {row.point}, seed {row.seed}) failed: {row.error}", markup=False, highlight=False, soft_wrap=True)
    gated = gate_failures(frame)
    out.print(
        f"{outcome.ran} run, {outcome.skipped} already done, {outcome.errors} failed of {outcome.total}; "
        f"rows: {outcome.folder / 'rows'}", highlight=False,
    )
    warnings: list[str] = []
    load_scenario(file, overrides, warnings=warnings, trace_dirs=trace_dirs)  # the base scenario's likely mistakes, as run prints them
    for line in warnings:
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    if gated:
        out.print(f"[red]{gated} of {len(frame)} replication(s) failed a hypothesis or halted[/]", highlight=False)
    # as `chaossim run`: a failed hypothesis or a halt gates the sweep, and so does a crash
    return 1 if outcome.errors or gated else 0


def gate_failures(frame: pd.DataFrame) -> int:
    """Finished replications whose hypotheses failed or that halted (each counted once)."""
    ok = frame[frame["status"] == "ok"]
    failed = ok["hypotheses_passed"].eq(False) if "hypotheses_passed" in ok else pd.Series(False, index=ok.index)
    halted = ok["halted"].notna() if "halted" in ok else pd.Series(False, index=ok.index)
    return int((failed | halted).sum())
