"""A lockstep job restarting under Poisson chip failures, played without a SimPy event per failure.

The reliability engineer's everyday case (one synchronous job, periodic checkpoints, chips failing at
a constant rate, every failure a restart from the last checkpoint) needs no event engine at all: the
failures do not depend on what the job does (exponential lifetimes, rescheduling replaces the failed
chips, nothing else happens), so the run is one loop over failure times, and between two failures the
job is in a stretch (:mod:`sim.stretch`) of periods with a closed-form recurrence. This module plays
that loop in compiled code (:func:`sim.stretch._play`; plain Python for small runs), in 100 slices
when halt bounds or progress are checked, at the times the event path checks them:

* the failure times and victims are drawn in Python from the faults' own streams, by the same
  :class:`sim.faults.PoissonChips` objects and in the same order as the fault processes draw them;
* the loop settles each stretch up to a failure, books the failure as the event path's
  ``Ledger.advance`` + ``Ledger.rollback`` do, and enters detect + reschedule (failures meanwhile are
  absorbed) or, when that is 0, the reload that opens the next stretch, at the phase ends SimPy would
  compute;
* the timeline rows and event rows it returns (checkpoints, failures, absorbed arrivals, the work's
  end) go to the recorder in bulk, and the ledger and group are left as the event path leaves them.

So summary, timeline and events are identical to the event path's (``tests/test_restart_loop.py``
holds them equal on random scenarios, against the stretch path and the event-per-checkpoint path);
only the SimPy event count differs. Anything else in the scenario (another fault kind, a non-Poisson
lifetime, spares, elastic, the DiLoCo family, a surrogate that trains on commits, a work target
within a few periods) plays on the event path: :func:`eligible` says which.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from . import stretch as S
from .faults import FaultProcesses, PoissonChips
from .learner import HOLDS_NO_CHIPS, RESTART, Group
from .metrics import Bucket, Phase
from .recorder import EVENT_SCHEMA, TIMELINE_SCHEMA
from .scenario import ChipFailure, OnFailure, Scenario

_PHASES = {S.RUNNING_SUB: Phase.RUNNING, S.CHECKPOINT_SUB: Phase.CHECKPOINT, S.RELOAD_SUB: Phase.RELOAD,
           S.DETECT_SUB: Phase.DETECT}
# row strings by code (the codes of sim.stretch: phases 0-3, event kinds 0-3)
_PHASE_NAMES = pa.array([S.PLAY_SUB_NAMES[float(code)] for code in range(4)], pa.string())
_EVENT_NAMES = pa.array(["checkpoint", "failure", "absorbed", "work_done"], pa.string())
SCRATCH = 4096  # phase ends per _replay call
DRAWN = 256  # arrivals drawn ahead
COMPILED_FROM_WORK = 10_000
"""Expected failures plus phase ends above which a run plays compiled; below, the same loop runs as
plain Python (the same IEEE operations: identical results), so a small run never waits ~0.2 s for the
compiled code to load."""
ROOM = 32768  # timeline and event rows per _play call


def eligible(scenario: Scenario, groups: list[Group]) -> bool:
    """Whether the run is one restarting lockstep job under Poisson chip failures and nothing else,
    and not within a few periods of its work target at the start (the loop opens with a stretch)."""
    if len(groups) != 1:
        return False
    group = groups[0]
    if group.mode is not OnFailure.RESTART or not group.stretches or group.on_restart is not None:
        return False
    if group.listeners or group.commit_listeners or group.plan_listeners or group.reload_transfer is not None:
        return False
    for fault in scenario.faults:
        poisson = isinstance(fault, ChipFailure) and fault.mtbf is not None and not fault.renews_each_chip
        if not poisson or fault.arrivals() is not None:
            return False
    rate = group.running_rates()[1]
    return rate > 0 and S.Stretch.far_from_target(group, rate)


class RestartLoop:
    """Plays one eligible replication's failures and periods, slice by slice (:meth:`advance`)."""

    def __init__(self, group: Group, faults: FaultProcesses, chip_faults: list[ChipFailure]):
        self.group, self.faults = group, faults
        group.driven = True  # its SimPy process ends at once: this loop plays it
        self.sources: list[PoissonChips] = faults.poisson_chip_arrivals(chip_faults)
        self.next_s = [source.gap_s() for source in self.sources]  # each process's first timeout, from t = 0
        # arrivals drawn and not played yet: (time, source, island name, escalated, cause)
        self.pending: list[tuple[float, int, str, bool, str]] = []
        self.played: list[tuple[float, int, str, bool, str]] = []  # played, their rows not recorded yet
        self.done_s: float | None = None
        training = group.training
        self.detect_s = training.recovery.detect + training.recovery.reschedule
        self.reload_s = training.recovery.reload
        self.state = np.full(S.PLAY_STATE_SIZE, math.nan)
        self.scratch = (np.empty(SCRATCH), np.empty(SCRATCH), np.empty(SCRATCH))
        self.rows = (np.empty(ROOM), np.empty(ROOM), np.empty(ROOM))
        self.events = (np.empty(ROOM), np.empty(ROOM), np.empty(ROOM))
        self.stretch: S.Stretch | None = None
        horizon_s = faults.horizon_s
        expected = horizon_s * sum(source.rate_per_s for source in self.sources) + 2 * horizon_s / group.checkpoint_interval_s
        self.play = S.compiled_play() if expected >= COMPILED_FROM_WORK else S._play

    def start(self) -> None:
        """t = 0: the job plans its first running phase, which opens a stretch (what its process would do)."""
        group = self.group
        self.stretch = group.open_loop_stretch()
        self.state[: S.STATE_SIZE] = self.stretch.state
        self.state[S.ROW_PHASE], self.state[S.ROW_SINCE] = S.RUNNING_SUB, group.row_since_s

    def advance(self, limit_s: float) -> bool:
        """Play every failure and phase end before ``limit_s``; True once the work target is committed."""
        group, ledger, state = self.group, self.group.ledger, self.state
        kernel = self.play
        active, down, spare = ledger.active_chips, ledger.down_chips, ledger.spare_chips
        fraction, rate = self.stretch.compute_fraction, self.stretch.steps_per_s
        write_s = group.training.checkpoint.write_time
        rows = events = 0  # filled so far: recorded at the end, or when the arrays are nearly full
        while True:
            # arrivals a few at a time (a work-defined job may be done long before the limit), played
            # up to the first one not drawn yet
            self._draw(limit_s)
            until_s = min(limit_s, *self.next_s) if self.next_s else limit_s
            # the ledger is the source of truth: a partial summary may have booked it up to a check
            S.load_ledger(state, ledger)
            state[S.LOST], state[S.ROLLED_BACK] = ledger.buckets[Bucket.LOST], ledger.rolled_back_steps
            arrivals = np.array([p[0] for p in self.pending], dtype=np.float64)
            n_rows, n_events, consumed, why = kernel(
                state, float(active), float(down), float(spare), fraction, rate, group.checkpoint_interval_s, write_s,
                self.detect_s, self.reload_s, group.target_steps, arrivals, len(self.played), until_s, *self.scratch,
                *(a[rows:] for a in self.rows), *(a[events:] for a in self.events),
            )
            rows, events = rows + n_rows, events + n_events
            self.played += self.pending[:consumed]
            del self.pending[:consumed]
            self._store()
            # (the next call needs room for a settle and an arrival beyond its own margin)
            if why == S.PLAY_FULL or ROOM - max(rows, events) < 2 * (SCRATCH + S.PLAY_MARGIN):
                self._record(rows, events, active, down)
                rows = events = 0
            if why == S.PLAY_DONE:
                self.done_s = float(state[S.LAST])
                group.loop_done()
            if why == S.PLAY_DONE or (why == S.PLAY_LIMIT and until_s >= limit_s):
                self._record(rows, events, active, down)
                return why == S.PLAY_DONE

    def _draw(self, limit_s: float) -> None:
        """Draw up to ``DRAWN`` arrivals before ``limit_s``, in time order over the faults (the lower
        fault first at a tie), each fault's gap, victim and repair in the order its process draws them."""
        sources, next_s, pending = self.sources, self.next_s, self.pending
        while sources and len(pending) < DRAWN:
            k = min(range(len(sources)), key=next_s.__getitem__) if len(sources) > 1 else 0
            at = next_s[k]
            if at >= limit_s:
                return
            island, _chip, _repair_s, escalated, cause = sources[k].strike()
            pending.append((at, k, island.name, escalated, cause))
            next_s[k] = at + sources[k].gap_s()

    def _record(self, n_rows: int, n_events: int, active: int, down: int) -> None:
        """The rows the event path writes, as Arrow tables; failures counted as the event path counts them."""
        group, recorder = self.group, self.group.recorder
        if n_rows:
            codes = self.rows[0][:n_rows].astype(np.int64)
            recorder.timeline.extend_table(pa.Table.from_arrays([
                pa.repeat(pa.scalar(group.name, pa.string()), n_rows), _PHASE_NAMES.take(pa.array(codes)),
                pa.array(self.rows[1][:n_rows].copy()), pa.array(self.rows[2][:n_rows].copy()),
                pa.array(np.where(codes == int(S.DETECT_SUB), 0, active)), pa.array(np.full(n_rows, down, np.int64)),
            ], schema=TIMELINE_SCHEMA))
        if not n_events:
            return
        kinds = self.events[1][:n_events]
        values = self.events[2][:n_events].tolist()
        # mostly checkpoints: every row written as one, then the few others put right
        faults, targets = [""] * n_events, [group.name] * n_events
        # (full periods commit the same steps: each distinct figure is formatted once)
        texts: dict[float, str] = {}
        details = [texts.get(v) or texts.setdefault(v, f"{v:.6g} steps committed") for v in values]
        for j in np.flatnonzero(kinds != S.EV_CHECKPOINT).tolist():
            if kinds[j] == S.EV_WORK_DONE:
                details[j] = f"{values[j]:.6g} steps"
                continue
            at, k, island, escalated, cause = self.played[int(values[j])]
            fault = self.sources[k].fault
            self.faults.count(fault, escalated, cause)
            faults[j], targets[j] = fault.name, island
            if kinds[j] == S.EV_FAILURE:
                group.count_interruption(at, fault.name)
                details[j] = f"{fault.kind}: {RESTART}"
            else:
                group.count_absorbed(fault.name)
                details[j] = f"{fault.kind}: {HOLDS_NO_CHIPS}"
        self.played.clear()
        recorder.events.extend_table(pa.Table.from_arrays([
            pa.array(self.events[0][:n_events].copy()), _EVENT_NAMES.take(pa.array(kinds.astype(np.int64))),
            pa.array(faults, pa.string()), pa.array(targets, pa.string()), pa.array(details, pa.string()),
        ], schema=EVENT_SCHEMA))

    def _store(self) -> None:
        """Leave the ledger and the group as the event path leaves them at this point."""
        group, ledger, state = self.group, self.group.ledger, self.state
        S.store_ledger(state, ledger)
        ledger.buckets[Bucket.LOST], ledger.rolled_back_steps = float(state[S.LOST]), float(state[S.ROLLED_BACK])
        detecting = not math.isnan(state[S.DETECT_END])
        if not detecting:
            self.stretch.state[:] = state[: S.STATE_SIZE].tolist()
        group.adopt_loop_state(
            Phase.DETECT if detecting else _PHASES[float(state[S.SUB])], float(state[S.PHASE_END]),
            float(state[S.RUN_STARTED]), _PHASES[float(state[S.ROW_PHASE])], float(state[S.ROW_SINCE]),
            None if detecting else self.stretch)
