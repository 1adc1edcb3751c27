"""Failure-free stretches of lockstep training, settled without one SimPy event per checkpoint.

Between two chaos events a lockstep job with periodic checkpoints is a deterministic recurrence: run
for the work left in the period (W, or less when the job's work target is nearer), write for C,
commit, run again; after a restart the reload on the new allocation opens the stretch. The
event-per-checkpoint way plays every reload, run and write as a SimPy timeout;
a **stretch** plays none of them. The group waits for the next chaos event (a work-defined job also
wakes shortly before its work can be done, and plays its last few periods event by event); whenever
anything looks at it (a failure, a wake, a recorder row, the run's end) the periods completed since
are settled at once by :func:`replay`.

``replay`` repeats, in a tight loop (plain Python for a few periods, Numba-compiled for many), the
exact floating-point operations of the event path: each
phase end is ``start + delay`` as SimPy computes it, each ledger update is the one
:meth:`sim.metrics.Ledger.advance` and :meth:`~sim.metrics.Ledger.commit` make, in the same order. So
the ledger, the timeline rows and the checkpoint events of a stretch are bit-identical to the event
path's (``tests/test_stretch.py`` holds the two equal); only the SimPy event count differs.

State is one list of floats (indices below) that one call moves in place (copied into a float64
vector for the compiled kernel).

:func:`_play` goes one step further for :mod:`sim.restart_loop`: it strings stretches together across
restarts (the failure's booking, detect + reschedule, the reload), with the state vector extended by
what a restart touches. It lives here, beside the :func:`_replay` it calls, because Numba's on-disk
cache checks only the file of the function it caches: in another module a changed ``_replay`` would
leave a stale compiled ``_play``. Both kernels repeat the ledger's operations inline (a compiled loop
cannot call :class:`sim.metrics.Ledger`); the tests hold them to the ledger's event path.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import Bucket, Phase

# state vector layout
SUB, SUB_END, LAST, PENDING_CHIP, PENDING_STEPS, COMMITTED, ADVANCING, USEFUL, WAITING, CHECKPOINT = range(10)
DOWN, SPARE, PENDING_RUN, KEPT_RUN, RUN_STARTED, PHASE_END, DONE, RECOVERY = range(10, 18)
STATE_SIZE = 18
# the phases of a stretch: a reload (after a restart) may open it, then runs and writes alternate
RUNNING_SUB, CHECKPOINT_SUB, RELOAD_SUB = 0.0, 1.0, 2.0
SUB_NAMES = {RUNNING_SUB: "running", CHECKPOINT_SUB: "checkpoint", RELOAD_SUB: "reload"}
_PHASE_SUB = {Phase.RUNNING: RUNNING_SUB, Phase.CHECKPOINT: CHECKPOINT_SUB, Phase.RELOAD: RELOAD_SUB}

_kernel = None


def _compile():
    """Compile (or load from Numba's on-disk cache) the replay kernel, once per process."""
    global _kernel
    if _kernel is None:
        import numba

        _kernel = numba.njit(cache=True)(_replay)
    return _kernel


def _replay(state, active, down, spare, compute_fraction, steps_per_s, work_s, write_s, target_steps,
            limit_s, inclusive, times_out, steps_out, subs_out):
    """Settle phase ends before ``limit_s`` (at it too if ``inclusive``); returns how many.

    ``times_out[k]`` is the k-th phase end, ``subs_out[k]`` the phase that ended there and
    ``steps_out[k]`` the steps a checkpoint end committed.
    Stops early when the output arrays are full or the work target is committed (``state[DONE]``).
    The state is read into locals and written back once (the loop is the same in plain Python).
    """
    sub, sub_end, last = state[SUB], state[SUB_END], state[LAST]
    pending_chip, pending_steps, committed = state[PENDING_CHIP], state[PENDING_STEPS], state[COMMITTED]
    advancing, useful, waiting, checkpoint = state[ADVANCING], state[USEFUL], state[WAITING], state[CHECKPOINT]
    down_chip_s, spare_chip_s, pending_run, kept_run = state[DOWN], state[SPARE], state[PENDING_RUN], state[KEPT_RUN]
    run_started, phase_end, done, recovery = state[RUN_STARTED], state[PHASE_END], state[DONE], state[RECOVERY]
    n = 0
    capacity = len(times_out)
    while n < capacity and done == 0.0:
        end = sub_end
        if end > limit_s or (end == limit_s and not inclusive):
            break
        dt = end - last
        running = sub == RUNNING_SUB
        if dt > 0:  # Ledger.advance
            last = end
            if running:
                compute = active * dt * compute_fraction
                pending_chip += compute
                waiting += active * dt - compute
                pending_steps += dt * steps_per_s
                advancing += dt
                pending_run += dt
            elif sub == CHECKPOINT_SUB:
                checkpoint += active * dt
            else:
                recovery += active * dt
            down_chip_s += down * dt
            spare_chip_s += spare * dt
        times_out[n] = end
        subs_out[n] = sub
        # (``0.0 if 0.0 > x else x`` is what max(x, 0.0) gives, without a call; likewise for min)
        if running:  # the run's end: write a checkpoint
            sub = CHECKPOINT_SUB
            phase_end = end + write_s
            delay = phase_end - end
            sub_end = end + (0.0 if 0.0 > delay else delay)  # noqa: FURB136 - no call in the hot loop
            steps_out[n] = 0.0
            n += 1
            continue
        if sub == CHECKPOINT_SUB:  # the write's end: commit (Ledger.commit), then run the next period
            useful += pending_chip
            committed += pending_steps
            kept_run += pending_run
            steps_out[n] = pending_steps
            pending_chip = pending_steps = pending_run = 0.0
        else:  # the reload's end: run (its work left is a whole period)
            steps_out[n] = 0.0
        n += 1
        left = target_steps - committed - pending_steps
        if target_steps < math.inf and left <= target_steps * 1e-12:
            done = 1.0
            break
        sub = RUNNING_SUB
        run_started = end
        phase_end = math.nan
        # min(work_left_s, steps_left / rate), as the event path's plan computes it
        duration = work_s
        if steps_per_s > 0:
            to_target_s = left / steps_per_s
            duration = to_target_s if to_target_s < work_s else work_s  # noqa: FURB136
        sub_end = end + (0.0 if 0.0 > duration else duration)  # noqa: FURB136
    state[SUB], state[SUB_END], state[LAST] = sub, sub_end, last
    state[PENDING_CHIP], state[PENDING_STEPS], state[COMMITTED] = pending_chip, pending_steps, committed
    state[ADVANCING], state[USEFUL], state[WAITING], state[CHECKPOINT] = advancing, useful, waiting, checkpoint
    state[DOWN], state[SPARE], state[PENDING_RUN], state[KEPT_RUN] = down_chip_s, spare_chip_s, pending_run, kept_run
    state[RUN_STARTED], state[PHASE_END], state[DONE], state[RECOVERY] = run_started, phase_end, done, recovery
    return n


COMPILED_FROM = 256
"""Phase ends above which a settle runs compiled; below, the same function runs as plain Python
(the same IEEE operations: results are identical), so short stretches never load Numba."""


def replay(state: list[float], active: int, down: int, spare: int, compute_fraction: float, steps_per_s: float,
           work_s: float, write_s: float, target_steps: float, limit_s: float, inclusive: bool,
           ) -> tuple[list[float], list[float], list[float]]:
    """Settle every phase end before ``limit_s``; returns (end times, steps committed at each end,
    the phase that ended at each)."""
    period = work_s + write_s
    times_all: list[float] = []
    steps_all: list[float] = []
    subs_all: list[float] = []
    while True:
        room = int(min(2 * max(limit_s - state[SUB_END], 0.0) / period + 4, 1 << 20))
        args = (float(active), float(down), float(spare), compute_fraction, steps_per_s, work_s, write_s,
                target_steps, limit_s, inclusive)
        if room < COMPILED_FROM:
            times, steps, subs = [0.0] * room, [0.0] * room, [0.0] * room
            n = _replay(state, *args, times, steps, subs)
            times_all += times[:n]
            steps_all += steps[:n]
            subs_all += subs[:n]
        else:
            vector, times_np, steps_np, subs_np = np.array(state), np.empty(room), np.empty(room), np.empty(room)
            n = _compile()(vector, *args, times_np, steps_np, subs_np)
            state[:] = vector.tolist()
            times_all += times_np[:n].tolist()
            steps_all += steps_np[:n].tolist()
            subs_all += subs_np[:n].tolist()
        if n < room:
            return times_all, steps_all, subs_all


# --------------------------------------------------------------------------------- restarts too
# A lockstep job restarting under Poisson chip failures (sim.restart_loop) goes from one stretch to the
# next in the same compiled loop: the state vector grows by what a restart touches.
LOST, ROLLED_BACK, ROW_PHASE, ROW_SINCE, DETECT_END = range(STATE_SIZE, STATE_SIZE + 5)
PLAY_STATE_SIZE = STATE_SIZE + 5
DETECT_SUB = 3.0  # detect + reschedule: between stretches, holding no chips (arrivals are absorbed)
PLAY_SUB_NAMES = {**SUB_NAMES, DETECT_SUB: "detect"}
# what the loop writes into its event arrays
EV_CHECKPOINT, EV_FAILURE, EV_ABSORBED, EV_WORK_DONE = 0.0, 1.0, 2.0, 3.0
# why it returned: at the limit, output arrays (nearly) full, or the work target committed
PLAY_LIMIT, PLAY_FULL, PLAY_DONE = 0, 1, 2
# rows or events past those of a settle (capacity + 1) that one arrival can add: it returns before then
PLAY_MARGIN = 4

_play_kernel = None


def compiled_play():
    """The compiled restart loop (loaded from Numba's cache after the first compile on a machine)."""
    global _play_kernel, _REPLAY
    if _play_kernel is None:
        import numba

        _REPLAY = _compile()
        _play_kernel = numba.njit(cache=True)(_play)
    return _play_kernel


_REPLAY = _replay  # the compiled kernel once compiled_play ran (before it compiles _play); plain until then


def _play(state, active, down, spare, compute_fraction, steps_per_s, work_s, write_s, detect_s, reload_s,
          target_steps, arrivals, arrival_base, limit_s, times, steps, subs, row_phase, row_start, row_end,
          ev_time, ev_kind, ev_value):
    """Play ``arrivals`` (failure times, ascending, all before ``limit_s``) and the periods up to
    ``limit_s`` (exclusive); returns (rows, events, arrivals consumed, why it stopped).

    Each step is the event path's, operation for operation: the periods between failures are
    :func:`_replay`'s; a failure that finds the job holding chips books the ledger up to it
    (``Ledger.advance``), throws away the pending work (``Ledger.rollback``) and enters detect (or, when
    detect + reschedule is 0, the reload) at the phase end SimPy would compute, ``now + ((now + L) -
    now)``; a failure during detect is absorbed. Timeline rows are closed when the phase changes
    (consecutive reloads are one row, as the event path's timeline keeps them). ``times, steps, subs``
    are scratch for ``_replay``; an arrival's event carries ``arrival_base`` plus its index.
    """
    capacity = len(times)
    room = min(len(row_end), len(ev_time)) - capacity - PLAY_MARGIN
    n_rows = 0
    n_events = 0
    i = 0
    while True:
        at_limit = i >= len(arrivals)
        now = limit_s if at_limit else arrivals[i]
        # detect ends (a SimPy timeout scheduled before the arrival's, so first at a tie); at the limit
        # it does not: the event path's run(until=limit) stops first
        detect_end = state[DETECT_END]
        if not math.isnan(detect_end) and (detect_end < now or (detect_end == now and not at_limit)):
            dt = detect_end - state[LAST]
            if dt > 0:
                state[LAST] = detect_end
                state[RECOVERY] += active * dt
                state[DOWN] += down * dt
                state[SPARE] += spare * dt
            if detect_end > state[ROW_SINCE]:
                row_phase[n_rows], row_start[n_rows], row_end[n_rows] = DETECT_SUB, state[ROW_SINCE], detect_end
                n_rows += 1
            state[ROW_SINCE], state[ROW_PHASE] = detect_end, RELOAD_SUB
            state[SUB] = RELOAD_SUB
            state[PHASE_END] = detect_end + reload_s
            delay = state[PHASE_END] - detect_end
            state[SUB_END] = detect_end + (0.0 if 0.0 > delay else delay)  # noqa: FURB136
            state[DETECT_END] = math.nan
        if math.isnan(state[DETECT_END]):  # in a stretch: settle its periods up to now
            while True:
                n = _REPLAY(state, active, down, spare, compute_fraction, steps_per_s, work_s, write_s,
                            target_steps, now, False, times, steps, subs)
                for k in range(n):
                    if times[k] > state[ROW_SINCE]:
                        row_phase[n_rows], row_start[n_rows], row_end[n_rows] = subs[k], state[ROW_SINCE], times[k]
                        n_rows += 1
                    state[ROW_SINCE] = times[k]
                    if subs[k] == CHECKPOINT_SUB:
                        ev_time[n_events], ev_kind[n_events], ev_value[n_events] = times[k], EV_CHECKPOINT, steps[k]
                        n_events += 1
                state[ROW_PHASE] = state[SUB]
                if state[DONE] != 0.0:
                    ev_time[n_events], ev_kind[n_events], ev_value[n_events] = times[n - 1], EV_WORK_DONE, state[COMMITTED]
                    return n_rows, n_events + 1, i, PLAY_DONE
                if n < capacity:
                    break
                if n_rows > room or n_events > room:
                    return n_rows, n_events, i, PLAY_FULL
        if at_limit:
            return n_rows, n_events, i, PLAY_LIMIT
        if not math.isnan(state[DETECT_END]):  # holding no chips: nothing to lose
            ev_time[n_events], ev_kind[n_events], ev_value[n_events] = now, EV_ABSORBED, arrival_base + i
            n_events += 1
        else:
            ev_time[n_events], ev_kind[n_events], ev_value[n_events] = now, EV_FAILURE, arrival_base + i
            n_events += 1
            dt = now - state[LAST]
            sub = state[SUB]
            if dt > 0:  # Ledger.advance
                state[LAST] = now
                if sub == RUNNING_SUB:
                    compute = active * dt * compute_fraction
                    state[PENDING_CHIP] += compute
                    state[WAITING] += active * dt - compute
                    state[PENDING_STEPS] += dt * steps_per_s
                    state[ADVANCING] += dt
                    state[PENDING_RUN] += dt
                elif sub == CHECKPOINT_SUB:
                    state[CHECKPOINT] += active * dt
                else:
                    state[RECOVERY] += active * dt
                state[DOWN] += down * dt
                state[SPARE] += spare * dt
            # Ledger.rollback (fraction 1.0)
            lost_chip_s = state[PENDING_CHIP] * 1.0
            lost_steps = state[PENDING_STEPS] * 1.0
            state[LOST] += lost_chip_s
            state[PENDING_CHIP] -= lost_chip_s
            state[PENDING_STEPS] -= lost_steps
            state[ROLLED_BACK] += lost_steps
            state[PENDING_RUN] -= state[PENDING_RUN] * 1.0
            entering = RELOAD_SUB if detect_s == 0 else DETECT_SUB
            if entering != state[ROW_PHASE]:
                if now > state[ROW_SINCE]:
                    row_phase[n_rows], row_start[n_rows], row_end[n_rows] = state[ROW_PHASE], state[ROW_SINCE], now
                    n_rows += 1
                state[ROW_SINCE], state[ROW_PHASE] = now, entering
            state[PHASE_END] = now + (reload_s if detect_s == 0 else detect_s)
            delay = state[PHASE_END] - now
            end = now + (0.0 if 0.0 > delay else delay)  # noqa: FURB136
            if detect_s == 0:
                state[SUB], state[SUB_END] = RELOAD_SUB, end
            else:
                state[DETECT_END] = end
        i += 1
        if n_rows > room or n_events > room:
            return n_rows, n_events, i, PLAY_FULL


def exact_delay(now_s: float, at_s: float) -> float:
    """A delay ``d`` with ``now_s + d == at_s`` in floating point (SimPy schedules at ``now + delay``)."""
    delay = at_s - now_s
    for _ in range(8):
        reached = now_s + delay
        if reached == at_s:
            return delay
        delay = math.nextafter(delay, math.inf if reached < at_s else -math.inf)
    raise ArithmeticError(f"no delay from {now_s!r} reaches {at_s!r}")


def load_ledger(state, ledger) -> None:
    """Copy what a settle moves from the ledger into ``state`` (the ledger is the source of truth)."""
    buckets = ledger.buckets
    state[LAST], state[PENDING_CHIP], state[PENDING_STEPS] = ledger._last_s, ledger.pending_chip_s, ledger.pending_steps
    state[COMMITTED], state[ADVANCING] = ledger.committed_steps, ledger.advancing_s
    state[PENDING_RUN], state[KEPT_RUN] = ledger.pending_run_s, ledger.kept_run_s
    state[USEFUL], state[WAITING] = buckets[Bucket.USEFUL], buckets[Bucket.WAITING]
    state[CHECKPOINT], state[DOWN], state[SPARE] = buckets[Bucket.CHECKPOINT], buckets[Bucket.DOWN], buckets[Bucket.SPARE]
    state[RECOVERY] = buckets[Bucket.RECOVERY]


def store_ledger(state, ledger) -> None:
    """Copy a settle's results from ``state`` back into the ledger (floats, as Python floats)."""
    buckets = ledger.buckets
    ledger._last_s, ledger.pending_chip_s, ledger.pending_steps = float(state[LAST]), float(state[PENDING_CHIP]), float(state[PENDING_STEPS])
    ledger.committed_steps, ledger.advancing_s = float(state[COMMITTED]), float(state[ADVANCING])
    ledger.pending_run_s, ledger.kept_run_s = float(state[PENDING_RUN]), float(state[KEPT_RUN])
    buckets[Bucket.USEFUL], buckets[Bucket.WAITING] = float(state[USEFUL]), float(state[WAITING])
    buckets[Bucket.CHECKPOINT], buckets[Bucket.DOWN] = float(state[CHECKPOINT]), float(state[DOWN])
    buckets[Bucket.SPARE], buckets[Bucket.RECOVERY] = float(state[SPARE]), float(state[RECOVERY])


class Stretch:
    """The failure-free stretch a group is in: the recurrence's position, and how to settle it.

    The ledger stays the source of truth: every :meth:`settle` loads it, replays the phase ends up to
    the given time and stores it back, so bookings made in between (a spare returning to its pool)
    are honoured. Only the recurrence's own position lives here: the current phase (running or
    writing a checkpoint), the time SimPy would end it at, and when the running phase began.
    """

    def __init__(self, group, end_s: float, rates: tuple[float, float]):
        self.group = group
        self.state = [0.0] * STATE_SIZE
        self.state[SUB] = _PHASE_SUB[group.phase]
        self.state[SUB_END] = end_s
        self.state[RUN_STARTED] = group._run_started_s
        self.state[PHASE_END] = group.phase_end_s if group.phase_end_s is not None else math.nan
        # what every running phase of the stretch books (nothing re-times a step without a wake)
        self.compute_fraction, self.steps_per_s = rates

    @property
    def end_s(self) -> float:
        """When the current phase ends (as SimPy would end it)."""
        return self.state[SUB_END]

    @staticmethod
    def far_from_target(group, rate: float) -> bool:
        """True unless a work-defined job is within a few periods of its end (played event by event)."""
        if group.target_steps == math.inf:
            return True
        return rate > 0 and group.steps_left() / rate > 6 * group.checkpoint_interval_s

    def wait(self):
        """The event the group waits on: the next chaos event (an interrupt), or for a work-defined job
        a time before its work can possibly be done (all that is left, run at full rate)."""
        group = self.group
        env = group.env
        if group.target_steps == math.inf:
            return group._never
        return env.timeout(max(self._earliest_end_s() - env.now, 0.0))

    def _earliest_end_s(self) -> float:
        """Four periods before the earliest time a work-defined job's work can be done."""
        group = self.group
        return group.ledger._last_s + group.steps_left() / self.steps_per_s - 4 * group.checkpoint_interval_s

    def woke(self) -> bool:
        """The wait of a work-defined job ended: settle; True if the stretch goes on. It does not when
        the job is near its end, nor when the next wait would end now again (a phase longer than two
        periods, a long write or reload, is still in progress: its end is played as an event)."""
        now = self.group.env.now
        self.settle(now)
        return self.far_from_target(self.group, self.steps_per_s) and self._earliest_end_s() > now

    def settle(self, now_s: float) -> None:
        """Book every phase end before ``now_s``: ledger, timeline rows, checkpoint events, group state."""
        group, ledger, state = self.group, self.group.ledger, self.state
        if state[SUB_END] >= now_s:
            return
        load_ledger(state, ledger)
        times, steps, subs = replay(
            state, ledger.active_chips, ledger.down_chips, ledger.spare_chips, self.compute_fraction,
            self.steps_per_s, group.checkpoint_interval_s, group.training.checkpoint.write_time,
            group.target_steps, now_s, False,
        )
        if state[DONE]:
            raise AssertionError("a stretch must hand a work-defined job back before its work is done")
        if not times:
            return
        store_ledger(state, ledger)
        self._record(times, steps, subs)
        last = times[-1]
        running = state[SUB] == RUNNING_SUB
        phase = Phase.RUNNING if running else Phase.CHECKPOINT  # (a reload only ever opens a stretch)
        group.phase = group.intent = ledger.phase = phase
        # a running phase began: its rates are booked (Group._book)
        ledger.compute_fraction, ledger.steps_per_s = self.compute_fraction, self.steps_per_s
        group.phase_since_s = group._islands_since_s = last
        group.phase_end_s = None if running else state[PHASE_END]
        group._run_started_s = state[RUN_STARTED]
        group.work_left_s = group.checkpoint_interval_s if running else 0.0
        group._step_phase = 0.0
        group._was_running = running
        group._row = (phase, ledger.active_chips, ledger.down_chips)
        group._row_since_s = last

    def _record(self, times: list[float], steps: list[float], subs: list[float]) -> None:
        """The rows the event path writes at these phase ends: one timeline row per phase, one
        ``checkpoint`` event per commit."""
        group, recorder = self.group, self.group.recorder
        starts = [group._row_since_s, *times[:-1]]
        phases = [SUB_NAMES[sub] for sub in subs]
        recorder.intervals(group.name, phases, starts, times, group.ledger.active_chips, group.ledger.down_chips)
        ends = [k for k, sub in enumerate(subs) if sub == CHECKPOINT_SUB]
        details = [f"{steps[k]:.6g} steps committed" for k in ends]
        recorder.events_at([times[k] for k in ends], "checkpoint", group.name, details)
