"""Export a lockstep replication as the per-step event log of Google's ml-goodput-measurement.

That library (``GoodputRecorder`` / ``GoodputCalculator``) computes goodput from a job's log entries:
``job_start_time`` at every (re)start, ``step_start_time`` with an integer ``step_count`` for every
step, and ``job_end_time``. A step whose number was logged before marks a restart from it: the
progress logged after its first start was lost. Productive time is the time between consecutive
step starts of the steps kept, and goodput is productive time over the job's time.

The log is rebuilt from a replication's rows: running intervals (``timeline.parquet``), and from
``events.parquet`` the step rate in force (``step_rate`` events, steps per second), commits
(``checkpoint``) and interruptions (``failure``). Progress is integrated at the step rate while running; step ``k`` starts when
``k`` steps are done; an interruption rolls progress back to the last commit, and the restart is
logged (``job_start_time``) when training resumes. Times are simulated seconds (the epoch is 0).

How our chip-time buckets map onto its badput types (``BadputType``):

=======================  ===============================================================================
ours                     ml-goodput-measurement
=======================  ===============================================================================
useful                   productive step time (goodput)
lost, recovery, and      WASTED_PROGRESS_FROM_DISRUPTION: from the replayed step's first start to the
waiting/down while       restart, i.e. the rolled-back work and the whole restart gap (no TPU-init or
stopped                  training-prep events are logged; PROGRAM_STARTUP is 0, since the first step
                         after a restart is logged when training resumes)
checkpoint               a completed write is productive: it falls between two step starts (the
                         library subtracts it only given its checkpoint-manager events, which are not
                         written); a write a failure cut short is wasted progress
waiting while running    productive: exposed communication is inside the step time
=======================  ===============================================================================

So the two goodputs agree (to float rounding) for one island with free checkpoints and constant
chips; otherwise theirs exceeds ours by the completed writes' share (and the exposed-communication
share; and ours is chip-time, so idle spares or down chips lower ours alone).
Only lockstep runs under ``restart`` or ``spares`` have one job whose steps roll back this way.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

_SNAP = 1e-6  # progress this close to an integer is that integer (float integration of whole steps)


class GoodputLogError(ValueError):
    """The folder cannot be exported (not a replication folder, not a lockstep restart run)."""


def _snap(progress: float) -> float:
    nearest = round(progress)
    return float(nearest) if abs(progress - nearest) < _SNAP else progress


def replication_folder(run_dir: Path, replication: int) -> Path:
    """``RUN/rep-<r>/`` of a results folder (``run_dir`` itself when it is one replication's folder, such
    as a sweep's ``runs/<i>/``), or a GoodputLogError saying what ``run_dir`` is instead (missing, a
    comparison of variants, a run without that replication)."""
    if not run_dir.is_dir():
        raise GoodputLogError(f"{run_dir}: no such folder")
    compare = run_dir / "compare.json"
    if compare.is_file():
        try:
            folders = [run_dir / v["folder"] for v in json.loads(compare.read_text())["variants"]]
        except (ValueError, KeyError, TypeError):
            folders = []
        raise GoodputLogError(f"{run_dir}: holds compared variants; export one of them: "
                              + (", ".join(str(f) for f in folders) or "its variant folders"))
    if (run_dir / "timeline.parquet").is_file():  # one replication's own folder: RUN/rep-R, a sweep's runs/I
        if replication != 0:
            raise GoodputLogError(f"{run_dir}: is one replication's folder; -r applies to a run folder")
        return run_dir
    rep_dir = run_dir / f"rep-{replication}"
    held = sorted(int(p.name[4:]) for p in run_dir.glob("rep-*") if p.name[4:].isdigit())
    if not rep_dir.is_dir() and held:
        raise GoodputLogError(f"{run_dir}: has no replication {replication} (-r {held[0]} to {held[-1]})")
    return rep_dir


def entries(rep_dir: Path, job_name: str = "chaossim") -> Iterator[dict]:
    """The log entries of one replication folder (``rep-<r>/``), in time order; the folder is checked
    (GoodputLogError) before the first entry is asked for."""
    need = [rep_dir / name for name in ("summary.json", "timeline.parquet", "events.parquet")]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise GoodputLogError(f"{rep_dir}: not a replication folder (missing {', '.join(missing)})")
    summary = json.loads(need[0].read_text())
    if summary.get("policy") not in ("sync_dp", "elastic_dp") or summary.get("on_failure") not in ("restart", "spares"):
        raise GoodputLogError(
            f"{rep_dir}: the goodput log needs a lockstep run with on_failure restart or spares, "
            f"got {summary.get('policy')} with {summary.get('on_failure')}"
        )
    rows = sorted((r["start_s"], r["end_s"]) for r in pq.read_table(need[1]).to_pylist() if r["phase"] == "running")
    events = pq.read_table(need[2]).to_pylist()
    points = [(e["time_s"], float(e["detail"])) for e in events if e["kind"] == "step_rate"]
    marks = [(e["time_s"], e["kind"]) for e in events if e["kind"] in ("checkpoint", "failure")]
    return _log(job_name, rows, points, marks, summary["duration_s"])


def _log(job_name: str, rows: list, points: list, marks: list, job_end_s: float) -> Iterator[dict]:
    rate_times = [t for t, _ in points]
    yield {"job_name": job_name, "job_start_time": 0.0}
    progress = committed = 0.0
    restarted = False
    m = 0
    for start_s, end_s in rows:
        while m < len(marks) and marks[m][0] <= start_s:  # commits and interruptions before this run
            if marks[m][1] == "checkpoint":
                committed = progress
            else:
                progress, restarted = committed, True
            m += 1
        if restarted:
            yield {"job_name": job_name, "job_start_time": start_s}
            restarted = False
        # the rate may change inside a row (a slowdown re-times steps without a new row)
        cuts = [start_s, *[t for t in rate_times[bisect.bisect_right(rate_times, start_s):] if t < end_s], end_s]
        for a, b in itertools.pairwise(cuts):
            rate = points[bisect.bisect_right(rate_times, a) - 1][1]
            done = _snap(progress + (b - a) * rate)
            for k in range(math.ceil(progress), math.ceil(done)):
                yield {"job_name": job_name, "step_start_time": a + (k - progress) / rate, "step_count": k}
            progress = done
    yield {"job_name": job_name, "job_end_time": job_end_s}


def write(rep_dir: Path, out_file: Path, job_name: str = "chaossim") -> int:
    """Write the log as JSON lines (one entry per line); returns the number of entries. The folder
    and then ``out_file`` are checked before anything is written (an ``out_file`` that is a folder or
    in a missing one is a :class:`GoodputLogError`), and a write that fails leaves nothing behind."""
    log = entries(rep_dir, job_name)
    out_file = Path(out_file)
    if out_file.is_dir():
        raise GoodputLogError(f"{out_file}: is a folder (-o takes the file to write)")
    if not out_file.parent.is_dir():
        raise GoodputLogError(f"{out_file}: no such folder {out_file.parent}")
    partial = out_file.with_name(f".{out_file.name}.tmp")
    n = 0
    try:
        with partial.open("w") as handle:
            for entry in log:
                handle.write(json.dumps(entry) + "\n")
                n += 1
        partial.replace(out_file)  # complete or not at all
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return n
