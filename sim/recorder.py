"""Rows, not plots: the state timeline and the event log, streamed to Parquet as a run goes.

A :class:`Recorder` collects two kinds of typed rows:

* **timeline**: one row per state interval of a learner group (``group, phase, start_s, end_s,
  active_chips, down_chips``), the source of the learner-state timeline figure and of downtimes;
* **events**: one row per thing that happened (``time_s, kind, fault, target, detail``):
  failures, repairs, checkpoints, merges, link changes;
* **rounds**: one row per outer round played by the DiLoCo family (``round, fragment, opened_s,
  closed_s, merged_s, members, weights, reason``; ``round`` numbers the merged rounds from 0; members and
  weights comma-separated, sorted by learner id);
* **surrogate_merges** (only with ``surrogate.log_rounds``): one row per played round as the surrogate
  saw it (``round, fragment, members, weights, merged``; ``merged`` false when the surrogate's resolution
  skipped the round whole), so a test can hold it equal to the rounds table.

Rows are buffered and flushed to Parquet in row groups as the run goes, into ``<table>.parquet.partial``;
:meth:`Recorder.close` finishes the file and renames it to ``<table>.parquet``. A replication that is
killed therefore never leaves a ``.parquet`` file without its footer: what it leaves is clearly marked
``.partial`` (and its folder has no ``summary.json``), and every reader skips it. Without an output
folder the rows stay in memory (tests, sweeps that only need summaries).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TIMELINE_SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("phase", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("active_chips", pa.int64()),
        ("down_chips", pa.int64()),
    ]
)
EVENT_SCHEMA = pa.schema(
    [
        ("time_s", pa.float64()),
        ("kind", pa.string()),
        ("fault", pa.string()),
        ("target", pa.string()),
        ("detail", pa.string()),
    ]
)
SERIES_SCHEMA = pa.schema(
    [
        ("time_s", pa.float64()),
        ("series", pa.string()),
        ("key", pa.string()),
        ("value", pa.float64()),
        ("tokens", pa.float64()),
    ]
)
ROUND_SCHEMA = pa.schema(
    [
        ("round", pa.int64()),
        ("fragment", pa.int64()),
        ("opened_s", pa.float64()),
        ("closed_s", pa.float64()),
        ("merged_s", pa.float64()),
        ("members", pa.string()),
        ("weights", pa.string()),
        ("reason", pa.string()),
    ]
)
MERGE_LOG_SCHEMA = pa.schema(
    [
        ("round", pa.int64()),
        ("fragment", pa.int64()),
        ("members", pa.string()),
        ("weights", pa.string()),
        ("merged", pa.bool_()),
    ]
)


class _Table:
    """A buffered Parquet writer for one schema (or an in-memory list when ``path`` is None).

    Rows arrive one by one, column by column, or as whole Arrow tables (a caller that builds its rows
    in arrays); they are kept in order and written in row groups of at least ``flush_rows`` rows.
    """

    def __init__(self, schema: pa.Schema, path: Path | None, flush_rows: int):
        self.schema, self.path, self.flush_rows = schema, path, flush_rows
        self.columns: dict[str, list] = {name: [] for name in schema.names}
        self.pending: list[pa.Table] = []  # rows ready as tables, before those in ``columns``
        self.pending_rows = 0
        self.kept: list[pa.Table] = []
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def append(self, row: tuple) -> None:
        for column, value in zip(self.columns.values(), row):
            column.append(value)
        self.rows += 1
        if len(next(iter(self.columns.values()))) >= self.flush_rows:
            self.flush()

    def extend(self, columns: tuple[list, ...]) -> None:
        """Append many rows given column by column (equal lengths)."""
        for column, values in zip(self.columns.values(), columns):
            column.extend(values)
        self.rows += len(columns[0])
        if len(next(iter(self.columns.values()))) >= self.flush_rows:
            self.flush()

    def extend_table(self, table: pa.Table) -> None:
        """Append the rows of ``table`` (this table's schema), after every row appended before."""
        self._columns_to_pending()
        self.pending.append(table)
        self.pending_rows += len(table)
        self.rows += len(table)
        if self.pending_rows >= self.flush_rows:
            self.flush()

    def _columns_to_pending(self) -> None:
        if next(iter(self.columns.values())):
            table = pa.table(self.columns, schema=self.schema)
            self.columns = {name: [] for name in self.schema.names}
            self.pending.append(table)
            self.pending_rows += len(table)

    def flush(self) -> None:
        self._columns_to_pending()
        if not self.pending:
            return
        table = self.pending[0] if len(self.pending) == 1 else pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        if self.path is None:
            self.kept.append(table)
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.partial, self.schema)
        self._writer.write_table(table)

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    def close(self) -> pa.Table | None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self.partial, self.path)  # complete, footer and all: now readers may see it
            return None
        if self.path is not None:  # nothing was ever written: still leave a valid empty file
            pq.write_table(self.schema.empty_table(), self.partial)
            os.replace(self.partial, self.path)
            return None
        return pa.concat_tables(self.kept) if self.kept else self.schema.empty_table()


class Recorder:
    def __init__(self, folder: Path | None = None, flush_rows: int = 4096, merge_log: bool = False):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        path = (lambda name: folder / name) if folder is not None else (lambda name: None)
        self.timeline = _Table(TIMELINE_SCHEMA, path("timeline.parquet"), flush_rows)
        self.events = _Table(EVENT_SCHEMA, path("events.parquet"), flush_rows)
        self.series = _Table(SERIES_SCHEMA, path("series.parquet"), flush_rows)
        self.rounds = _Table(ROUND_SCHEMA, path("rounds.parquet"), flush_rows)
        self.merge_log = _Table(MERGE_LOG_SCHEMA, path("surrogate_merges.parquet"), flush_rows) if merge_log else None
        # called with the row's time before an event row is written: writers that settle lazily (a
        # group in a failure-free stretch) write their earlier rows first, so rows stay in time order
        self.before_event: list = []

    def interval(self, group: str, phase: str, start_s: float, end_s: float, active: int, down: int) -> None:
        if end_s > start_s:
            self.timeline.append((group, phase, start_s, end_s, active, down))

    def intervals(self, group: str, phases: list[str], starts: list[float], ends: list[float], active: int, down: int) -> None:
        """Many :meth:`interval` rows of one group at fixed chip counts (empty intervals left out)."""
        keep = [k for k in range(len(ends)) if ends[k] > starts[k]]
        if len(keep) < len(ends):
            phases, starts, ends = [phases[k] for k in keep], [starts[k] for k in keep], [ends[k] for k in keep]
        n = len(ends)
        if n:
            self.timeline.extend(([group] * n, phases, starts, ends, [active] * n, [down] * n))

    def event(self, time_s: float, kind: str, fault: str = "", target: str = "", detail: str = "") -> None:
        for settle in self.before_event:
            settle(time_s)
        self.events.append((time_s, kind, fault, target, detail))

    def events_at(self, times: list[float], kind: str, target: str, details: list[str]) -> None:
        """Many event rows of one kind and target, without fault name."""
        n = len(times)
        if n:
            self.events.extend((times, [kind] * n, [""] * n, [target] * n, details))

    def point(self, time_s: float, series: str, key: str, value: float, tokens: float = float("nan")) -> None:
        """A sample of a time series (loss, link utilisation, ...)."""
        self.series.append((time_s, series, key, value, tokens))

    def round(self, round_: int, fragment: int, opened_s: float, closed_s: float, merged_s: float,
              members: tuple[int, ...], weights: tuple[float, ...], reason: str) -> None:
        """One merged outer round (``reason``: why the synchronizer closed it)."""
        self.rounds.append((round_, fragment, opened_s, closed_s, merged_s, _ids(members), _floats(weights), reason))

    def surrogate_merge(self, round_: int, fragment: int, members: tuple[int, ...], weights: tuple[float, ...],
                        merged: bool) -> None:
        """The surrogate's view of one played round (kept only with ``surrogate.log_rounds``)."""
        if self.merge_log is not None:
            self.merge_log.append((round_, fragment, _ids(members), _floats(weights), merged))

    def close(self) -> dict[str, pa.Table | None]:
        tables = {"timeline": self.timeline.close(), "events": self.events.close(), "series": self.series.close(),
                  "rounds": self.rounds.close()}
        if self.merge_log is not None:
            tables["surrogate_merges"] = self.merge_log.close()
        return tables


def _ids(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def _floats(values: tuple[float, ...]) -> str:
    return ",".join(f"{w:.17g}" for w in values)
