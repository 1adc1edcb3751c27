"""The chip-time ledger and the run summary.

Every provisioned chip-second falls in exactly one bucket:

==========  ==========================================================================
useful      compute whose result reached the global model (committed by a checkpoint or a merge,
            or still in place when the run ends)
lost        compute rolled back (failure since the last checkpoint) or never merged
recovery    detect, reschedule, reload, swap, downscale and upscale pauses
checkpoint  blocking checkpoint writes
waiting     blocked on a barrier, a quorum, the network, or capacity that is not there yet
down        failed hardware awaiting repair
spare       idle hot spares
==========  ==========================================================================

A :class:`Ledger` belongs to one learner group (a set of islands that run in lockstep). It is told
what its chips are doing (``set_state``) and integrates chip-seconds piecewise between changes, so its
cost is one update per state change, never per step or per chip. Compute is first booked as
*pending*; ``commit`` moves it to useful and ``rollback`` to lost. At the end of a run whatever is
still pending was neither rolled back nor lost and counts as useful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class Bucket(str, Enum):
    USEFUL = "useful"
    LOST = "lost"
    RECOVERY = "recovery"
    CHECKPOINT = "checkpoint"
    WAITING = "waiting"
    DOWN = "down"
    SPARE = "spare"


class Phase(str, Enum):
    """What a group's active chips are doing; each phase books into one bucket (RUNNING splits)."""

    RUNNING = "running"  # compute (pending) + exposed communication (waiting)
    CHECKPOINT = "checkpoint"
    DETECT = "detect"  # detect + reschedule: D
    RELOAD = "reload"  # R
    SWAP = "swap"  # hot spare swap in place of D
    DOWNSCALE = "downscale"
    UPSCALE = "upscale"
    BLOCKED = "blocked"  # waiting for capacity, a barrier, a quorum or the network
    DOWN = "down"  # nothing left to run on

    @property
    def bucket(self) -> Bucket:
        return _PHASE_BUCKET[self]

    @property
    def advancing(self) -> bool:
        return self is Phase.RUNNING


_PHASE_BUCKET = {
    Phase.RUNNING: Bucket.USEFUL,  # placeholder: RUNNING is split into pending compute and waiting
    Phase.CHECKPOINT: Bucket.CHECKPOINT,
    Phase.DETECT: Bucket.RECOVERY,
    Phase.RELOAD: Bucket.RECOVERY,
    Phase.SWAP: Bucket.RECOVERY,
    Phase.DOWNSCALE: Bucket.RECOVERY,
    Phase.UPSCALE: Bucket.RECOVERY,
    Phase.BLOCKED: Bucket.WAITING,
    Phase.DOWN: Bucket.DOWN,
}


@dataclass
class Ledger:
    """Chip-seconds of one learner group, integrated between state changes."""

    provisioned_chips: int
    start_s: float = 0.0
    buckets: dict[Bucket, float] = field(default_factory=lambda: {b: 0.0 for b in Bucket})
    pending_chip_s: float = 0.0
    pending_steps: float = 0.0
    committed_steps: float = 0.0
    rolled_back_steps: float = 0.0
    advancing_s: float = 0.0  # wall seconds in RUNNING
    # cumulative compute kept so far (pending + committed + rolled back, less the discarded steps in
    # flight): the outer rounds commit the difference between two of its readings, fragment by fragment
    compute_chip_s: float = 0.0
    compute_steps: float = 0.0
    pending_run_s: float = 0.0  # wall seconds in RUNNING whose work is not committed yet
    kept_run_s: float = 0.0  # wall seconds in RUNNING whose work was committed (never rolled back)
    # pending compute the end of the run counted as useful (work no round merged, no checkpoint kept)
    useful_at_end_chip_s: float = 0.0
    # current state
    phase: Phase = Phase.BLOCKED
    active_chips: int = 0
    down_chips: int = 0
    spare_chips: int = 0
    compute_fraction: float = 1.0  # share of a RUNNING step that is compute (rest: exposed comm)
    steps_per_s: float = 0.0  # progress rate while RUNNING
    _last_s: float = 0.0

    def __post_init__(self) -> None:
        self._last_s = self.start_s

    def advance(self, now_s: float) -> None:
        """Book everything from the last change up to ``now_s``."""
        dt = now_s - self._last_s
        if dt <= 0:
            return
        self._last_s = now_s
        if self.phase is Phase.RUNNING:
            compute = self.active_chips * dt * self.compute_fraction
            self.pending_chip_s += compute
            self.buckets[Bucket.WAITING] += self.active_chips * dt - compute
            self.pending_steps += dt * self.steps_per_s
            self.compute_chip_s += compute
            self.compute_steps += dt * self.steps_per_s
            self.advancing_s += dt
            self.pending_run_s += dt
        else:
            self.buckets[self.phase.bucket] += self.active_chips * dt
        self.buckets[Bucket.DOWN] += self.down_chips * dt
        self.buckets[Bucket.SPARE] += self.spare_chips * dt

    def set_state(
        self,
        now_s: float,
        phase: Phase,
        *,
        active: int | None = None,
        down: int | None = None,
        spare: int | None = None,
        compute_fraction: float | None = None,
        steps_per_s: float | None = None,
    ) -> None:
        self.advance(now_s)
        self.phase = phase
        if active is not None:
            self.active_chips = active
        if down is not None:
            self.down_chips = down
        if spare is not None:
            self.spare_chips = spare
        if compute_fraction is not None:
            self.compute_fraction = compute_fraction
        if steps_per_s is not None:
            self.steps_per_s = steps_per_s
        assert self.active_chips + self.down_chips + self.spare_chips == self.provisioned_chips, (
            self.active_chips,
            self.down_chips,
            self.spare_chips,
            self.provisioned_chips,
        )

    def commit(self, now_s: float) -> float:
        """Pending compute reached the global model; returns the steps committed."""
        self.advance(now_s)
        self.buckets[Bucket.USEFUL] += self.pending_chip_s
        steps = self.pending_steps
        self.committed_steps += steps
        self.kept_run_s += self.pending_run_s
        self.pending_chip_s = self.pending_steps = self.pending_run_s = 0.0
        return steps

    def commit_part(self, now_s: float, chip_s: float, steps: float) -> None:
        """Part of the pending compute reached the global model (one fragment's share of a report)."""
        self._move_part(now_s, chip_s, steps, Bucket.USEFUL)

    def rollback_part(self, now_s: float, chip_s: float, steps: float) -> None:
        """Part of the pending compute was discarded by the protocol (``apply: overwrite``)."""
        self._move_part(now_s, chip_s, steps, Bucket.LOST)

    def _move_part(self, now_s: float, chip_s: float, steps: float, bucket: Bucket) -> None:
        self.advance(now_s)
        chip_s, steps = min(max(chip_s, 0.0), self.pending_chip_s), min(max(steps, 0.0), self.pending_steps)
        self.buckets[bucket] += chip_s
        self.pending_chip_s -= chip_s
        self.pending_steps -= steps
        if bucket is Bucket.USEFUL:
            self.committed_steps += steps
        else:
            self.rolled_back_steps += steps

    def rollback(self, now_s: float, fraction: float = 1.0) -> float:
        """``fraction`` of pending compute is thrown away (1.0: back to the last checkpoint)."""
        self.advance(now_s)
        lost_chip_s = self.pending_chip_s * fraction
        lost_steps = self.pending_steps * fraction
        self.buckets[Bucket.LOST] += lost_chip_s
        self.pending_chip_s -= lost_chip_s
        self.pending_steps -= lost_steps
        self.rolled_back_steps += lost_steps
        self.pending_run_s -= self.pending_run_s * fraction
        return lost_steps

    def discard_chip_s(self, now_s: float, chip_s: float, steps: float, wall_s: float = 0.0) -> None:
        """Throw away a given amount of pending compute (the step in flight when a unit died), which
        took ``wall_s`` of running time."""
        self.advance(now_s)
        self.pending_run_s -= min(wall_s, self.pending_run_s)
        chip_s = min(chip_s, self.pending_chip_s)
        steps = min(steps, self.pending_steps)
        self.compute_chip_s -= chip_s
        self.compute_steps -= steps
        self.buckets[Bucket.LOST] += chip_s
        self.pending_chip_s -= chip_s
        self.pending_steps -= steps
        self.rolled_back_steps += steps

    def finish(self, now_s: float) -> None:
        """Close the books at the end of the run: pending work was never rolled back, so it counts as
        useful (the run-end convention); how much that was is kept in ``useful_at_end_chip_s``."""
        self.advance(now_s)
        self.useful_at_end_chip_s = self.pending_chip_s
        self.commit(now_s)

    @property
    def total_chip_s(self) -> float:
        return math.fsum(self.buckets.values())


def combine(ledgers: list[Ledger]) -> dict[str, float]:
    """Chip-seconds per bucket summed over groups (``math.fsum``: exact to the last bit we can)."""
    return {b.value: math.fsum(ledger.buckets[b] for ledger in ledgers) for b in Bucket}
