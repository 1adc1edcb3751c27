"""Results folders in, tidy pandas DataFrames out.

Two kinds of input are understood:

* a **results folder** written by ``chaossim run -o DIR`` (or by :func:`sim.runner.run_replication`
  with an ``out_dir``): ``scenario.yaml`` (the resolved scenario), ``summary.json`` (aggregated, with
  every replication under ``runs``) and ``rep-<r>/{summary.json, timeline.parquet, events.parquet,
  series.parquet}``;
* a **sweep folder** written by ``chaossim sweep`` (:mod:`sim.sweep`): one Parquet row per
  replication under ``rows/`` (``index``, ``point``, one column per factor by dotted key such as
  ``training.quorum``, ``seed``, flattened metrics, ``status``, ``error``), the plan in ``sweep.json``
  (which names the factors) and a result folder per replication under ``runs/<index>/``.

Every table is *tidy*: one row per observation, with the run it came from in ``run`` (a label) and
the replication in ``replication`` (``index`` for a sweep), so several runs concatenate into one frame
and ``groupby`` does the rest. :class:`Results` holds one input:

``summaries``   one row per replication; nested metrics flattened to dotted columns
                (``chip_time_fraction.lost``, ``failures.chip_failure``)
``timeline``    learner-group state intervals (``group, phase, start_s, end_s, active_chips, down_chips``)
``events``      what happened (``time_s, kind, fault, target, detail``) plus the ``group`` hit
``series``      time series (``time_s, series, key, value, tokens``): surrogate ``loss`` per policy or
                learner, ``link_utilisation`` per WAN link, when the run recorded them
``chip_time``   the ledger in long form: ``bucket``, ``chip_s`` and ``fraction`` per replication
``learners``    per learner group and replication: ``name, islands, chips, downtime_s, steps, tokens,
                interruptions, absorbed`` (``learners.parquet``)
``hypotheses``  one verdict per replication and bound

Problems with the input raise :class:`ResultsError`, whose message is one line for the user.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.recorder import EVENT_SCHEMA, SERIES_SCHEMA, TIMELINE_SCHEMA

TABLES = {"timeline": TIMELINE_SCHEMA, "events": EVENT_SCHEMA, "series": SERIES_SCHEMA}
_REP = re.compile(r"^rep-(\d+)$")
# Lists in a summary are not metrics: learners have their own table, verdicts theirs.
_NOT_METRICS = {"learners", "hypotheses", "runs"}
# Sweep row columns that are neither factors nor metrics.
SWEEP_META = ("index", "point", "seed", "status", "error", "replication", "run")


class ResultsError(ValueError):
    """The input is not something a report can be made from; ``str()`` is one line."""


def flatten(summary: dict, prefix: str = "") -> dict:
    """Nested summary dicts as dotted columns; lists are left out, ``halted`` becomes its metric."""
    flat: dict = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if key in _NOT_METRICS and not prefix:
            continue
        if key == "halted" and not prefix:
            flat["halted"] = value.get("metric") if isinstance(value, dict) else value
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


def _empty(table: str) -> pd.DataFrame:
    return TABLES[table].empty_table().to_pandas()


def _read_table(folder: Path, table: str) -> pd.DataFrame:
    path = folder / f"{table}.parquet"
    if not path.exists():
        return _empty(table)
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as err:  # a replication killed mid-write leaves no footer
        raise ResultsError(f"{path}: unreadable Parquet ({type(err).__name__}: {err})") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path}: not a readable summary ({err})") from None


def _replication_folders(folder: Path) -> list[tuple[int, Path]]:
    """``rep-<r>/`` folders by r; a folder holding the Parquet files itself is replication 0."""
    reps = sorted((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _REP.match(p.name)))
    if not reps and (folder / "timeline.parquet").exists():
        reps = [(0, folder)]
    return reps


def load_sweep_rows(folder: Path) -> pd.DataFrame:
    """The sweep's rows, one per replication, sorted by index (read by :func:`sim.sweep.load_sweep`)."""
    from sim.sweep import load_sweep

    try:
        return load_sweep(folder)
    except (OSError, pa.ArrowException) as err:
        raise ResultsError(f"{folder / 'rows'}: unreadable sweep rows ({type(err).__name__}: {err})") from None


def sweep_factors(rows: pd.DataFrame, folder: Path | None = None) -> list[str]:
    """Columns of a sweep that are scenario keys (``training.quorum``), not metrics or bookkeeping.

    The sweep's plan (``sweep.json``) names them; without one, a column is a factor when its first
    dotted part is a scenario section.
    """
    plan = folder / "sweep.json" if folder is not None else None
    if plan is not None and plan.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):  # else: the column names
            keys = [k for factor in json.loads(plan.read_text()).get("factors", []) for k in factor.get("keys", [])]
            return [k for k in keys if k in rows]
    from sim.scenario import Scenario

    sections = set(Scenario.model_fields)
    factors = []
    for column in rows.columns:
        head, dot, _ = str(column).partition(".")
        # ``chips`` is both a scenario section (chip catalog) and a metric (total chips): only the
        # dotted form is a factor; ``duration`` and ``replications`` are never metric names
        if column not in SWEEP_META and head in sections and (dot or head in ("duration", "replications")):
            factors.append(str(column))
    return factors


@dataclass
class Results:
    """One results folder or sweep folder, as tidy tables (loaded on first use)."""

    path: Path
    label: str
    kind: str  # "run" | "sweep"
    scenario_text: str
    summaries: pd.DataFrame
    raw: list[dict] = field(default_factory=list, repr=False)  # the replications' summary.json
    factors: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # version, command, seeds and date of the run or sweep
    factor_groups: list[list[str]] = field(default_factory=list)  # a sweep's factors: one key, or a zip group
    level_names: dict[str, dict] = field(default_factory=dict)  # per factor key: resolved value -> as written

    def written(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with each factor column holding its levels as the user wrote them in the sweep
        (``50000h``, ``5m``) instead of resolved to SI numbers (``1.8e8``, ``300.0``), where the plan
        names every value of the column; other columns, and the frame passed in, are left as they are."""
        out = rows.copy()
        for key, names in self.level_names.items():
            if key not in out or not names:
                continue
            try:
                texts = [names.get(v, _MISSING) for v in out[key]]
            except TypeError:  # an unhashable value: no name to look up
                continue
            if all(t is not _MISSING for t in texts):
                out[key] = pd.Series(texts, index=out.index, dtype=object)
        return out

    def relabel(self, label: str) -> None:
        """Name this input ``label`` in every table (before any table is read)."""
        self.label = label
        self.summaries["run"] = label

    @property
    def key(self) -> str:
        """The column naming a replication: ``replication`` for a run, ``index`` for a sweep."""
        return "index" if self.kind == "sweep" else "replication"

    def _folders(self) -> list[tuple[int, Path]]:
        """(number, folder) of the finished replications: a replication still running (no
        summary.json yet) has Parquet files without a footer, and half a timeline besides."""
        if self.kind == "run":
            return [(n, f) for n, f in _replication_folders(self.path) if (f / "summary.json").exists()]
        runs = self.path / "runs"
        if not runs.is_dir():
            return []
        folders = []
        for child in sorted(p for p in runs.iterdir() if p.is_dir() and p.name.isdigit()):
            reps = _replication_folders(child)
            if reps and (reps[0][1] / "summary.json").exists():
                folders.append((int(child.name), reps[0][1]))
        return sorted(folders)

    def _read(self, table: str, first: int | None) -> pd.DataFrame:
        frames = []
        for number, folder in self._folders()[:first]:
            frame = _read_table(folder, table)
            if len(frame):
                frames.append(frame.assign(run=self.label, **{self.key: number}))
        if not frames:
            return _empty(table).assign(run=pd.Series(dtype=str), **{self.key: pd.Series(dtype="int64")})
        return pd.concat(frames, ignore_index=True)

    @property
    def groups(self) -> list[str]:
        """Learner group names in topology order (as the summaries list them)."""
        names: dict[str, None] = {}
        for summary in self.raw:
            names.update({learner["name"]: None for learner in summary.get("learners", [])})
        return list(names)

    def table(self, table: str, first: int | None = None) -> pd.DataFrame:
        """``timeline``, ``events`` or ``series`` of every replication, or of the ``first`` n only
        (a sweep of thousands of replications need not be read to draw one timeline).

        Timeline rows come sorted by replication, group (topology order) and start, so a figure
        that lists groups in order of appearance lists them as the scenario does.
        """
        frame = self._read(table, first)
        if table == "timeline" and len(frame):
            order = {name: i for i, name in enumerate(self.groups)}
            rank = frame["group"].map(lambda g: order.get(g, len(order)))
            frame = frame.assign(_rank=rank).sort_values([self.key, "_rank", "group", "start_s"], kind="stable")
            frame = frame.drop(columns="_rank").reset_index(drop=True)
        return frame

    @cached_property
    def timeline(self) -> pd.DataFrame:
        return self.table("timeline")

    @cached_property
    def events(self) -> pd.DataFrame:
        return self.with_groups(self.table("events"))

    def with_groups(self, events: pd.DataFrame) -> pd.DataFrame:
        """Events with the learner ``group`` each one hit ("" when it hit none)."""
        # failures name the island hit; the timeline has one row per learner group
        owner = {}
        for summary in self.raw:
            for learner in summary.get("learners", []):
                owner[learner["name"]] = learner["name"]
                owner.update({island: learner["name"] for island in learner.get("islands", [])})
        return events.assign(group=events["target"].map(lambda t: owner.get(t, "")).astype(str))

    @cached_property
    def series(self) -> pd.DataFrame:
        return self.table("series")

    @cached_property
    def learners(self) -> pd.DataFrame:
        """Per-learner statistics, one row per learner group and replication (``learners.parquet``, or
        the summaries' ``learners`` lists for results written before that file existed)."""
        frames = []
        for number, folder in self._folders():
            path = folder / "learners.parquet"
            if path.exists():
                frame = pq.read_table(path).to_pandas()
            else:
                summary = next((s for s in self.raw if s.get(self.key) == number), {})
                frame = pd.DataFrame(summary.get("learners", []))
            frames.append(frame.assign(run=self.label, **{self.key: number}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", self.key, "name"])

    @property
    def chip_time(self) -> pd.DataFrame:
        """The ledger in long form: one row per replication and bucket."""
        return chip_time_long(self.summaries)

    @cached_property
    def hypotheses(self) -> pd.DataFrame:
        rows = []
        for summary in self.raw:
            for verdict in summary.get("hypotheses", []):
                rows.append(
                    {"run": self.label, self.key: summary.get(self.key, summary.get("replication")), **verdict}
                )
        columns = ["run", self.key, "metric", "value", "min", "max", "passed", "error", "halted"]
        frame = pd.DataFrame(rows)
        return frame.reindex(columns=columns) if len(frame) else pd.DataFrame(columns=columns)


def chip_time_long(summaries: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    """``chip_time.<bucket>`` / ``chip_time_fraction.<bucket>`` columns as rows (run, bucket, ...).

    Identifying columns (run, replication or index, point, policy, seed, and ``extra``) are kept.
    """
    ids = [c for c in ("run", "replication", "index", "point", "policy", "seed", *extra) if c in summaries]
    buckets = sorted(
        {c.split(".", 1)[1] for c in summaries.columns if str(c).startswith(("chip_time.", "chip_time_fraction."))}
    )
    rows = []
    for _, row in summaries.iterrows():
        for bucket in buckets:
            chip_s = row.get(f"chip_time.{bucket}", float("nan"))
            fraction = row.get(f"chip_time_fraction.{bucket}", float("nan"))
            rows.append({**{c: row[c] for c in ids}, "bucket": bucket, "chip_s": chip_s, "fraction": fraction})
    return pd.DataFrame(rows, columns=[*ids, "bucket", "chip_s", "fraction"])


def exposed_share(timeline: pd.DataFrame, summary: dict) -> float:
    """The share of ``running`` chip-time spent waiting on communication, from the chip-time ledger.

    The ledger books a running group's chip-time as compute (``useful`` or ``lost``) plus exposed
    communication and barrier idling (``waiting``); ``blocked`` spans are ``waiting`` too. So the
    exposed share is (waiting - blocked chip-seconds) / running chip-seconds, with both chip-second
    sums read from the same replication's timeline (``active_chips`` x span). 0 without running time.
    """
    waiting = (summary.get("chip_time") or {}).get("waiting", 0.0)
    chip_s = (timeline["end_s"] - timeline["start_s"]) * timeline["active_chips"]
    running = float(chip_s[timeline["phase"] == "running"].sum())
    blocked = float(chip_s[timeline["phase"] == "blocked"].sum())
    if running <= 0:
        return 0.0
    return min(max((waiting - blocked) / running, 0.0), 1.0)


def _load_run(folder: Path, label: str) -> Results:
    raw = []
    for number, rep in _replication_folders(folder):
        if (rep / "summary.json").exists():
            raw.append({"replication": number, **_read_json(rep / "summary.json")})
    if not raw and (folder / "summary.json").exists():
        # replication folders were not kept (or not written): the aggregate still lists every run
        raw = list(_read_json(folder / "summary.json").get("runs", []))
    if not raw:
        raise ResultsError(f"{folder}: no finished replication (no summary.json in it or in rep-*/)")
    summaries = pd.DataFrame([flatten(s) for s in raw])
    summaries.insert(0, "run", label)
    text = (folder / "scenario.yaml").read_text() if (folder / "scenario.yaml").exists() else ""
    top = _read_json(folder / "summary.json") if (folder / "summary.json").exists() else {}
    return Results(folder, label, "run", text, summaries, raw, provenance=top.get("provenance") or {})


_MISSING = object()


def sweep_level_names(plan: dict) -> dict[str, dict]:
    """Per factor key, each resolved level (as a sweep row holds it) -> the level as written in the
    sweep (``--grid`` or its ``sweep:`` section), from the points of ``sweep.json``. Keys whose
    written levels are not texts (``2``, ``true``) or resolve to one number twice are left out."""
    names: dict[str, dict] = {}
    clashes: set[str] = set()
    for point in plan.get("points") or []:
        setting, columns = point.get("setting") or {}, point.get("columns") or {}
        for key, text in setting.items():
            if key not in columns or not isinstance(text, str):
                continue
            value = columns[key]
            with contextlib.suppress(TypeError):
                known = names.setdefault(key, {})
                if known.get(value, text) != text:
                    clashes.add(key)  # "1h" and "60m" both resolved to 3600: neither names the level
                known[value] = text
    return {k: v for k, v in names.items() if k not in clashes and any(str(t) != str(r) for r, t in v.items())}


def _load_sweep(folder: Path, label: str) -> Results:
    rows = load_sweep_rows(folder)
    if rows.empty:
        raise ResultsError(f"{folder}: the sweep has no rows yet (rows/ holds no Parquet data)")
    rows = rows.copy()
    if "run" not in rows:
        rows.insert(0, "run", label)
    raw = []
    text = ""
    for name in ("scenario.yaml", "sweep.yaml"):
        if (folder / name).exists():
            text = (folder / name).read_text()
            break
    plan = _read_json(folder / "sweep.json") if (folder / "sweep.json").exists() else {}
    groups = [list(f.get("keys", [])) for f in plan.get("factors", [])]
    results = Results(folder, label, "sweep", text, rows, raw, sweep_factors(rows, folder), plan.get("provenance") or {}, groups,
                      sweep_level_names(plan))
    # the per-replication summaries carry what a row cannot: hypothesis verdicts, learner names
    raw.extend({"index": number, **_read_json(rep / "summary.json")} for number, rep in results._folders())
    return results


def load_results(path: str | Path, label: str | None = None) -> Results:
    """Load one results folder or sweep folder; ResultsError (one line) if it is neither."""
    folder = Path(path)
    if not folder.exists():
        raise ResultsError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ResultsError(f"{folder}: is a file; expected a results folder (chaossim run -o DIR) or a sweep folder")
    label = label or folder.resolve().name
    if (folder / "rows").is_dir():
        return _load_sweep(folder, label)
    if (folder / "summary.json").exists() or _replication_folders(folder):
        return _load_run(folder, label)
    if (folder / "compare.json").exists():
        variants = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "summary.json").exists())
        raise ResultsError(f"{folder}: a compare run; load one of its variant folders ({', '.join(variants)})")
    raise ResultsError(f"{folder}: not a results folder (expected summary.json and rep-*/ or a sweep's rows/)")


def _inputs(folder: Path) -> list[tuple[Path, str | None]]:
    """A compare run (``compare.json``) stands for its variants' folders, labelled by their values."""
    plan = folder / "compare.json"
    if folder.is_dir() and plan.exists():
        variants = _read_json(plan).get("variants", [])
        # a variant not yet started (the run was stopped) has no folder: leave it out
        return [(folder / v["folder"], v["label"]) for v in variants if (folder / v["folder"] / "summary.json").exists()]
    return [(folder, None)]


def _leaves(data, prefix: str = "") -> dict:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    if isinstance(data, list):
        return {k: v for i, value in enumerate(data) for k, v in _leaves(value, f"{prefix}{i}.").items()}
    return {prefix[:-1]: data}


def scenario_differences(texts: list[str]) -> list[str]:
    """Dotted keys whose resolved value differs between scenarios (``training.policy``), in file order."""
    from ruamel.yaml import YAML

    parsed = []
    for text in texts:
        with contextlib.suppress(Exception):  # an unreadable scenario.yaml differs in nothing we can name
            parsed.append(_leaves(YAML(typ="safe", pure=True).load(text) or {}))
    if len(parsed) < 2:
        return []
    keys = list(dict.fromkeys(k for leaves in parsed for k in leaves))
    return [k for k in keys if len({repr(leaves.get(k)) for leaves in parsed}) > 1 and k not in ("description",)]


LABEL_KEYS = 4
"""Runs that differ in at most this many scenario keys are labelled by them (``policy=elastic_dp``)."""
LABEL_CHARS = 80
"""... and only while every such label stays this short; past either, a run is named by its folder."""


def scenario_values(text: str, keys: list[str]) -> list:
    """The resolved values of dotted ``keys`` in one scenario text (``"-"`` where a key is absent)."""
    from ruamel.yaml import YAML

    leaves = _leaves(YAML(typ="safe", pure=True).load(text) or {})
    return [leaves.get(k, "-") for k in keys]


def _difference_label(text: str, keys: list[str]) -> str:
    return ", ".join(f"{short_key(k)}={value}" for k, value in zip(keys, scenario_values(text, keys)))


def short_key(key: str) -> str:
    """``training.policy`` -> ``policy``; a key through a list item stays whole (``hypotheses.0.min``)."""
    parts = key.split(".")
    return key if any(p.isdigit() for p in parts) else parts[-1]


def load_many(paths) -> list[Results]:
    """Load several inputs, each labelled by what differs between them.

    A compare run stands for its variants (labelled by their compared values). Other runs are
    labelled by the scenario keys whose values differ (``policy=elastic_dp, on_failure=elastic``)
    when there are at most :data:`LABEL_KEYS` of them and every label is at most
    :data:`LABEL_CHARS` long; runs of different scenarios (dozens of keys) and inputs that differ in
    none are labelled by folder name, made unique with their parents (the report spells the
    differences out in a table).
    """
    if not paths:
        raise ResultsError("no results folder given")
    inputs = [item for p in paths for item in _inputs(Path(p))]
    folders = [f for f, _ in inputs]
    names = [f.resolve().name for f in folders]
    labels = []
    for (folder, given), name in zip(inputs, names):
        label = given or (name if names.count(name) == 1 else f"{folder.resolve().parent.name}/{name}")
        while label in labels:
            label += "'"
        labels.append(label)
    results = [load_results(f, label) for f, label in zip(folders, labels)]
    runs = [r for r, (_, given) in zip(results, inputs) if r.kind == "run" and not given]
    keys = scenario_differences([r.scenario_text for r in runs])
    if keys and len(runs) > 1 and len(keys) <= LABEL_KEYS:
        with contextlib.suppress(Exception):  # an unreadable scenario.yaml keeps the folder names
            named = [_difference_label(r.scenario_text, keys) for r in runs]
            if max(map(len, named)) <= LABEL_CHARS and len(set(named)) == len(named):
                for r, label in zip(runs, named):
                    r.relabel(label)
    return results


def concat(results: list[Results], table: str) -> pd.DataFrame:
    """One table (``summaries``, ``timeline``, ``events``, ``series``, ``chip_time``) over inputs."""
    frames = [getattr(r, table) for r in results]
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
