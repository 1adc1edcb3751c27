"""A learner's step counter: exact between re-timings, with no event per step.

While a learner runs, its steps end at ``since_s + (n - steps - phase) * step_s``; the round engine
asks for the end of the next step it cares about (a report, an overlap deadline, an apply) and
schedules one event there. Re-timings (a slowdown, an elastic resize) and stops fold the progress so
far into ``steps`` and ``phase`` (the fraction of the step in flight).
"""

from __future__ import annotations

import math

# A step boundary computed from float times lands within this fraction of a step of the integer; it is
# snapped to it, so an event scheduled for the end of step n counts exactly n steps.
_SNAP = 1e-6


class StepClock:
    __slots__ = ("phase", "running", "since_s", "step_s", "steps")

    def __init__(self, now_s: float = 0.0):
        self.steps = 0  # completed steps
        self.phase = 0.0  # fraction of the step in flight, as of since_s
        self.since_s = now_s
        self._set_pace(math.inf)

    def _set_pace(self, step_s: float) -> None:
        self.step_s = step_s  # wall seconds per step now (inf: not running)
        self.running = math.isfinite(step_s)

    def settle(self, now_s: float) -> None:
        """Fold the progress since the last settle into ``steps`` and ``phase``."""
        if self.running and now_s > self.since_s:
            done = self.phase + (now_s - self.since_s) / self.step_s
            whole = math.floor(done)
            frac = done - whole
            if frac > 1.0 - _SNAP:
                whole, frac = whole + 1, 0.0
            elif frac < _SNAP:
                frac = 0.0
            self.steps += whole
            self.phase = frac
        self.since_s = now_s

    def retime(self, now_s: float, step_s: float) -> None:
        self.settle(now_s)
        self._set_pace(step_s)

    def stop(self, now_s: float, keep_partial: bool) -> None:
        """Stop stepping; the step in flight is kept (blocked) or thrown away (a pause, a restart)."""
        self.settle(now_s)
        self._set_pace(math.inf)
        if not keep_partial:
            self.phase = 0.0

    def end_of_step(self, n: int) -> float:
        """When the completed-step count reaches ``n`` (> steps) at the current pace (inf if stopped)."""
        if not self.running:
            return math.inf
        return self.since_s + (n - self.steps - self.phase) * self.step_s
