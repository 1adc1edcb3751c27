"""A learner group: islands that train in lockstep, reacting to failures as interrupts.

Under lockstep policies (``sync_dp``, ``elastic_dp``) all islands form one group: the job. In the
DiLoCo family each island is a group of its own: a learner. A group is one SimPy process that moves
through phases (see :class:`sim.metrics.Phase`) and spends one event per phase change, never one per
step: a stretch of running is a single timeout that ends at the next checkpoint or chaos event, and
progress is integrated at the step rate in between.

What a failure does is chosen per scenario (``training.on_failure``):

``restart``  The group stops and loses the work since its last checkpoint; it pays D (detect +
             reschedule, holding no chips: nothing can fail) and then R (reload on the new
             allocation: failures can strike and start recovery over). Failed hardware is replaced by
             the rescheduling, so only island/region outages keep capacity away.
``spares``   As ``restart``, but a spare takes the failed unit's place instead of D: a warm standby
             after ``spares.swap``, else a spare-pool unit after ``spares.selection``, else (with
             ``when_empty: wait``) the first unit a repair returns (:mod:`sim.spares`).
``elastic``  The failed unit (the larger of the blast radius and ``elastic.unit``) is dropped after a
             downscale pause; the group continues smaller, losing only the step in flight, and re-adds
             the unit after its repair and an upscale pause. A failure during a pause joins it or
             starts it over (``elastic.during_pause``).

Per island the group keeps only counters and the set of failed units (indices, never objects), so
state grows with concurrent failures, not with chips.

A lockstep group with periodic checkpoints spends no event per checkpoint either: between chaos
events it is in a **stretch** (:mod:`sim.stretch`) whose periods are settled when anything looks at
it; every entry point (a failure, a wake, a repair, a recorder row, the run's end) settles first.
A restart that strikes a stretch is handled at once, without interrupting the process
(:meth:`Group._restart_at_once`).
A work-defined group (``target_steps``) ends its process once that many steps are committed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import simpy

from .metrics import Ledger, Phase
from .recorder import Recorder
from .scenario import BlastRadius, OnFailure, PauseConflict, Training
from .spares import SparePools, Tier
from .stretch import Stretch, exact_delay
from .topology import Island

_RADIUS_ORDER = [BlastRadius.CHIP, BlastRadius.HOST, BlastRadius.CUBE, BlastRadius.ISLAND]
_TIMED = (Phase.CHECKPOINT, Phase.DETECT, Phase.SWAP, Phase.RELOAD, Phase.DOWNSCALE, Phase.UPSCALE)
# the event details of a restart and of a failure while the group holds no chips ("<kind>: <text>")
RESTART, HOLDS_NO_CHIPS = "restart", "group holds no chips there"
# Phases in which the group holds chips, so that a failure interrupts it.
_HOLDING = (Phase.RUNNING, Phase.CHECKPOINT, Phase.RELOAD, Phase.DOWNSCALE, Phase.UPSCALE)


@dataclass(frozen=True, slots=True)
class Failure:
    """Interrupt cause: capacity was lost."""

    island: str
    kind: str
    fault: str
    swapped: bool = False  # a spare took (or, once repaired, will take) the failed unit's place
    swap_s: float = 0.0  # how long bringing the spare in takes


@dataclass(frozen=True, slots=True)
class Wake:
    """Interrupt cause: something changed (repair, outage end, slowdown, link); re-plan."""

    reason: str


@dataclass(frozen=True, slots=True)
class Planned:
    """Interrupt cause: the group already planned its next phase (a failure handled at once, see
    :meth:`Group._restart_at_once`); wait for ``wait``."""

    wait: simpy.Event


StepModel = Callable[["Group"], tuple[float, float]]  # -> (compute_s, exposed_comm_s) per step


class Group:
    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        islands: list[Island],
        training: Training,
        mode: OnFailure,
        step_model: StepModel,
        recorder: Recorder,
        checkpoint_interval_s: float | None,
        base_compute_s: float,
        *,
        target_steps: float = math.inf,
        stretches: bool = True,
    ):
        self.env, self.name, self.islands, self.training, self.mode = env, name, islands, training, mode
        self.step_model, self.recorder = step_model, recorder
        self.checkpoint_interval_s = checkpoint_interval_s
        self.target_steps = target_steps  # a work-defined job ends when this many steps are committed
        self.done = False  # the target is committed: the group's process has ended
        # failure-free stretches settled in closed form (sim.stretch); off: one event per phase end
        self.stretches = stretches and checkpoint_interval_s is not None
        self._stretch: Stretch | None = None
        self._resume_s: float | None = None  # a stretch handed back its phase, which ends then
        self.uptime_counts_kept = False  # lockstep: uptime is running time whose work was kept
        self.record_step_rate = False  # lockstep: a "step_rate" event whenever the running rate changes
        self._recorded_rate = -1.0
        self.base_compute_s = base_compute_s  # step compute time with every chip in the job, no slowdown
        self.elastic_unit = training.elastic.unit
        self.full_flops = sum(i.peak_flops for i in islands)
        self._compute_s: float | None = None
        self.island_out_s = {i.index: 0.0 for i in islands}  # see island_downtime_s
        self._out: list[int] = []
        self._islands_since_s, self._was_running = env.now, False
        # per island: chips in the job, failed unit indices (in elastic.unit granularity), spares free
        self.in_job = {i.index: i.chips for i in islands}
        self.down_units: dict[int, set[int]] = {i.index: set() for i in islands}
        self.down_chips = {i.index: 0 for i in islands}  # chips of those units (kept with them)
        spare_unit = {i.index: i.unit_chips(self.elastic_unit) for i in islands}
        spared = mode is OnFailure.SPARES
        self.spares = SparePools(
            {i.index: i.spare_units * spare_unit[i.index] if spared else 0 for i in islands},
            {i.index: training.spares.pool * spare_unit[i.index] if spared else 0 for i in islands},
            training.spares.swap, training.spares.selection, training.spares.when_empty == "wait",
        )
        self.spare_wait_s = 0.0  # time waiting for a repair to return a spare
        self._wait_since_s = 0.0
        self._swap_s = training.spares.swap
        t = training  # the lengths of the timed phases (a swap's depends on the spare: _swap_s)
        self._lengths_s = {
            Phase.CHECKPOINT: t.checkpoint.write_time, Phase.DETECT: t.recovery.detect + t.recovery.reschedule,
            Phase.RELOAD: t.recovery.reload, Phase.DOWNSCALE: t.elastic.downscale, Phase.UPSCALE: t.elastic.upscale,
        }
        spares = self.spares.idle_chips()
        self.ledger = Ledger(provisioned_chips=sum(i.chips for i in islands) + spares, start_s=env.now)
        self.interrupts_s: list[float] = []  # times of failures that interrupted the group
        self.absorbed = 0
        # per fault name: arrivals that interrupted the group, and arrivals it absorbed
        self.interrupts_by_fault: dict[str, int] = {}
        self.absorbed_by_fault: dict[str, int] = {}
        self.intent = Phase.RUNNING
        self.phase = Phase.BLOCKED
        self.phase_since_s = env.now
        self.phase_end_s: float | None = None
        self._row: tuple[Phase, int, int] | None = None  # the open timeline row: (phase, active, down)
        self._row_since_s = env.now
        self.work_left_s = checkpoint_interval_s if checkpoint_interval_s else math.inf
        self._run_started_s = env.now
        self._step_wall_s = math.inf
        self._never = env.event()
        self.listeners: list[Callable[[Group, Phase, Phase], None]] = []
        # told after every (re)plan: (group, old phase, new phase); a RUNNING -> RUNNING call is a
        # re-timing (the step time changed), which phase listeners do not see
        self.plan_listeners: list[Callable[[Group, Phase, Phase], None]] = []
        self.commit_listeners: list[Callable[[Group, float], None]] = []
        # policy hook: an event a reload (or the upscale of a learner back from zero chips) must also
        # wait for: state pulled from a peer over the network
        self.reload_transfer: Callable[[Group], simpy.Event | None] | None = None
        # policy hook: what a restart throws away (default: everything since the last commit); the DiLoCo
        # family loses only what its outer rounds had not merged yet, lockstep with C = 0 nothing
        self.on_restart: Callable[[Group], None] | None = None
        self._step_phase = 0.0  # fraction of the step in flight already computed
        self._transfer: simpy.Event | None = None
        self.transfer_cancelled: list[Callable[[simpy.Event], None]] = []
        self.driven = False  # played from outside (sim.restart_loop): the process ends at once
        self.process = env.process(self._run())
        if self.stretches:
            recorder.before_event.append(lambda _time_s: self.settle())

    # ----------------------------------------------------------------------------------- capacity

    def available_chips(self, island: Island) -> int:
        """Chips of ``island`` that could be in the job now."""
        if island.outages > 0:
            return 0
        if self.mode is OnFailure.ELASTIC:
            return island.chips - self.down_chips[island.index]
        return island.chips - self.spares.owed[island.index]  # (owed: failed chips waiting for a spare)

    @property
    def active_chips(self) -> int:
        return sum(self.in_job.values())

    def _sync_capacity(self, upscale: bool) -> None:
        """Drop chips that died; with ``upscale`` also take back chips that are available again.

        Called on every plan of a non-elastic group, so derived state (step time, islands sitting out)
        is only rebuilt when a count actually changed.
        """
        changed = False
        for island in self.islands:
            available = self.available_chips(island)
            if available != self.in_job[island.index] and (upscale or available < self.in_job[island.index]):
                self.in_job[island.index] = available
                changed = True
        if changed:
            self._compute_s = None
            self._account_islands()
            self._out = [index for index, chips in self.in_job.items() if chips == 0]

    def needs_upscale(self) -> bool:
        return any(self.available_chips(i) > self.in_job[i.index] for i in self.islands)

    @property
    def holding(self) -> bool:
        return self.phase in _HOLDING or (self.phase is Phase.BLOCKED and self.intent is Phase.RUNNING)

    @property
    def step_wall_s(self) -> float:
        """Wall seconds of one step as last planned (compute plus exposed communication)."""
        return self._step_wall_s

    def step_times(self) -> tuple[float, float]:
        """(compute_s, exposed_comm_s) of one step with the chips in the job now."""
        return self.step_model(self)

    def barrier_idle_fraction(self) -> float:
        """Share of the group's computing chip-time spent idle at the step barrier behind a straggler."""
        slowest = max((i.slowdown for i in self.islands if self.in_job[i.index] > 0), default=1.0)
        if slowest == 1.0:
            return 0.0
        idle = sum(self.in_job[i.index] * (1.0 - i.slowdown / slowest) for i in self.islands)
        return idle / max(self.active_chips, 1)

    def compute_time_s(self) -> float:
        """Compute time of one step: fixed global batch over the chips in the job, slowest island rules.

        Cached until the chips in the job change or a wake (slowdown, repair) arrives.
        """
        if self._compute_s is None:
            flops = sum(self.in_job[i.index] * i.chip.peak_flops for i in self.islands)
            slowdown = max((i.slowdown for i in self.islands if self.in_job[i.index] > 0), default=1.0)
            self._compute_s = math.inf if flops <= 0 else self.base_compute_s * (self.full_flops / flops) * slowdown
        return self._compute_s

    # ----------------------------------------------------------------------------------- faults in

    def fail_chip(self, island: Island, chip: int, radius: BlastRadius, repair_s: float, kind: str, fault: str) -> bool:
        """A failure of the unit around ``chip``; returns True if it took capacity from the group."""
        self.settle()
        if island.outages > 0 or (self.mode is not OnFailure.ELASTIC and not self.holding):
            return self._absorb(island, kind, fault, HOLDS_NO_CHIPS)
        if self.mode is OnFailure.RESTART:
            return self._hit(island, kind, fault, RESTART, at_once=self._stretch is not None)
        eff = max(radius, self.elastic_unit, key=_RADIUS_ORDER.index)
        size_eff, size_unit = island.unit_chips(eff), island.unit_chips(self.elastic_unit)
        first = (chip // size_eff) * size_eff
        last = min(first + size_eff, island.chips)
        units = set(range(first // size_unit, -(-last // size_unit))) - self.down_units[island.index]
        if not units:
            return self._absorb(island, kind, fault, "unit already down")
        chips = sum(min(size_unit, island.chips - u * size_unit) for u in units)
        if self.mode is OnFailure.SPARES:
            taken = self.spares.take(island.index, chips)
            if taken is None:
                return self._hit(island, kind, fault, "no spare left: reschedule")
            tier, swap_s = taken
            self._mark_down(island, units, repair_s, tier)
            if tier is Tier.OWED:
                self._wait_since_s = self.env.now
                return self._hit(island, kind, fault, f"no spare for {chips} chips: wait for a repair", True, swap_s)
            return self._hit(island, kind, fault, f"{tier.value} spare for {chips} chips", True, swap_s)
        self._mark_down(island, units, repair_s, None)
        return self._hit(island, kind, fault, f"dropped {chips} chips")

    def outage_changed(self, islands: list[Island], started: bool, kind: str, fault: str) -> None:
        """An island or region outage took (``island.outages`` already raised) or returned ``islands``."""
        self.settle()
        if started:
            elastic = self.mode is OnFailure.ELASTIC
            if (elastic and any(self.in_job[i.index] > 0 for i in islands)) or (not elastic and self.holding):
                self._hit(islands[0], kind, fault, "outage of " + ",".join(i.name for i in islands))
            else:  # e.g. during detect/reschedule: it keeps the capacity away, but stops nothing
                self._absorb(islands[0], kind, fault, "outage while the group holds no chips there")
            self._sync_capacity(upscale=False)  # their chips are out (down), whatever follows
            self._book()
        else:
            self.wake(",".join(i.name for i in islands) + " back")

    def wake(self, reason: str) -> None:
        """Something changed that may re-time or unblock the group."""
        self.settle()
        self._compute_s = None
        if self.env.active_process is self.process:
            # told from inside its own process (a listener): re-plan right after this step
            self.env.timeout(0).callbacks.append(lambda _e: self.wake(reason))
        elif self.process.is_alive:
            self.process.interrupt(Wake(reason))

    def _mark_down(self, island: Island, units: set[int], repair_s: float, spare: Tier | None) -> None:
        self.down_units[island.index] |= units  # (units not down already: fail_chip leaves those out)
        size = island.unit_chips(self.elastic_unit)
        chips = sum(min(size, island.chips - u * size) for u in units)
        self.down_chips[island.index] += chips

        def repaired(_event) -> None:
            self.settle()
            self.down_units[island.index] -= units
            self.down_chips[island.index] -= chips
            self.recorder.event(self.env.now, "repair", "", island.name, f"{chips} chips")
            if spare is not None:
                if self.spares.give_back(island.index, chips, spare):
                    if not self.spares.waiting():
                        self.spare_wait_s += self.env.now - self._wait_since_s
                    self.wake(f"spare back on {island.name}")
                else:
                    self._book()
            else:
                self.wake(f"repair on {island.name}")

        self.env.timeout(repair_s).callbacks.append(repaired)

    def count_absorbed(self, fault: str) -> None:
        """A failure arrived that cost the group nothing (counted per fault)."""
        self.absorbed += 1
        self.absorbed_by_fault[fault] = self.absorbed_by_fault.get(fault, 0) + 1

    def count_interruption(self, time_s: float, fault: str) -> None:
        """A failure interrupted the group (counted per fault, its time kept)."""
        self.interrupts_s.append(time_s)
        self.interrupts_by_fault[fault] = self.interrupts_by_fault.get(fault, 0) + 1

    def _absorb(self, island: Island, kind: str, fault: str, why: str) -> bool:
        self.count_absorbed(fault)
        self.recorder.event(self.env.now, "absorbed", fault, island.name, f"{kind}: {why}")
        return False

    def _hit(self, island: Island, kind: str, fault: str, detail: str, swapped: bool = False, swap_s: float = 0.0,
             at_once: bool = False) -> bool:
        self.count_interruption(self.env.now, fault)
        self.recorder.event(self.env.now, "failure", fault, island.name, f"{kind}: {detail}")
        if self.mode is OnFailure.ELASTIC:
            self._discard_step_in_flight()  # at the chip counts and step time it was running with
            self._sync_capacity(upscale=False)
            self._book()
        if at_once and self.process.is_alive and self.env.active_process is not self.process:
            self._restart_at_once(Failure(island.name, kind, fault, swapped, swap_s))
        elif self.process.is_alive:
            self.process.interrupt(Failure(island.name, kind, fault, swapped, swap_s))
        return True

    def _restart_at_once(self, cause: Failure) -> None:
        """A restart that strikes a stretch, handled now, as the interrupt would handle it, without one.

        The process waits on the stretch's event (never, or a work-defined job's earliest end, which a
        restart only moves later: waking early just settles and waits again). It keeps waiting on it when
        the restart opens a new stretch (one reload, then periods: the usual case), and is told what to
        wait for otherwise. Saves an interrupt, a resume and a timeout per failure.
        """
        self._leave_stretch()
        self._interrupted(cause)
        wait = self._plan_next()
        if wait is not None:
            self.process.interrupt(Planned(wait))

    # ----------------------------------------------------------------------------------- the process

    def _run(self):
        if self.driven:
            return
        planned = None
        while not self.done:
            wait, planned = planned or self._next_wait(), None
            try:
                yield wait
            except simpy.Interrupt as irq:
                if isinstance(irq.cause, Planned):
                    planned = irq.cause.wait
                    continue
                self._leave_stretch()
                self._interrupted(irq.cause)
            else:
                if self._stretch is None:
                    self._completed()
                elif not self._stretch.woke():  # near a work-defined job's end: play it event by event
                    self._resume_s = self._stretch.end_s
                    self._stretch = None

    def _next_wait(self) -> simpy.Event:
        if self._stretch is not None:
            return self._stretch.wait()
        if self._resume_s is not None:
            at, self._resume_s = self._resume_s, None
            return self.env.timeout(exact_delay(self.env.now, at))
        wait = self._plan_next()
        return self._stretch.wait() if wait is None else wait

    def _plan_next(self) -> simpy.Event | None:
        """Plan and enter the next phase; returns what to wait for, or None when it opens a stretch."""
        phase, duration = self._plan()
        self._enter(phase)
        if phase in (Phase.RUNNING, Phase.CHECKPOINT, Phase.RELOAD) and self.stretches and self._transfer is None:
            rates = self.running_rates()
            if self._stretch_fits(duration, rates[1]):
                self._stretch = Stretch(self, self.env.now + max(duration, 0.0), rates)
                return None
        wait = self._never if duration == math.inf else self.env.timeout(max(duration, 0.0))
        if phase in (Phase.RELOAD, Phase.UPSCALE) and self._transfer is not None:
            wait = self.env.all_of([wait, self._transfer])  # it also needs the state to arrive
        return wait

    # ---- the restart loop (sim.restart_loop) plays this job without its process: what it hands back

    def open_loop_stretch(self) -> Stretch:
        """t = 0 under the restart loop: plan the first running phase, which opens a stretch."""
        if self._plan_next() is not None or self._stretch is None:
            raise AssertionError("an eligible job opens a stretch at t = 0")
        return self._stretch

    @property
    def row_since_s(self) -> float:
        """When the timeline row now open started."""
        return self._row_since_s

    def adopt_loop_state(self, phase: Phase, phase_end_s: float, run_started_s: float, row_phase: Phase,
                         row_since_s: float, stretch: Stretch | None) -> None:
        """Take over where the restart loop left the job, as the event path would have left it: ``phase``
        (its end, when not running), the running phase's start, the open timeline row and the stretch."""
        ledger = self.ledger
        self.phase = self.intent = ledger.phase = phase
        self.phase_end_s = None if phase is Phase.RUNNING else phase_end_s
        self._run_started_s = run_started_s
        self.work_left_s = 0.0 if phase is Phase.CHECKPOINT else self.checkpoint_interval_s
        self._was_running = phase is Phase.RUNNING
        self._row = (row_phase, 0 if row_phase is Phase.DETECT else ledger.active_chips, ledger.down_chips)
        self._row_since_s = self.phase_since_s = row_since_s
        self._stretch = stretch

    def loop_done(self) -> None:
        """The restart loop committed the work target: the job is done."""
        self.done = True
        self._stretch = None

    def _stretch_fits(self, duration: float, rate: float) -> bool:
        """Whether the periods from here can be settled in closed form (nothing watches each one);
        ``rate``: the steps per second of its running phases."""
        if self.listeners or self.commit_listeners or self._out or not math.isfinite(duration):
            return False
        if rate <= 0 or self.needs_upscale() or (self.record_step_rate and rate != self._recorded_rate):
            return False  # (a unit waiting to be re-added, or a new step rate to log, changes the next period)
        return Stretch.far_from_target(self, rate)

    def settle(self) -> None:
        """Book a stretch's periods up to now (a no-op outside a stretch); see :mod:`sim.stretch`."""
        if self._stretch is not None:
            self._stretch.settle(self.env.now)

    def _leave_stretch(self) -> None:
        if self._stretch is not None:
            self._stretch.settle(self.env.now)
            self._stretch = None

    def steps_left(self) -> float:
        """Steps still to commit before a work-defined job is done (infinite otherwise)."""
        return self.target_steps - self.ledger.committed_steps - self.ledger.pending_steps

    def target_reached(self) -> bool:
        return self.target_steps < math.inf and self.steps_left() <= self.target_steps * 1e-12

    def _plan(self) -> tuple[Phase, float]:
        now = self.env.now
        if self.mode is not OnFailure.ELASTIC:
            self._sync_capacity(upscale=True)  # rescheduling replaces failed chips; outages keep theirs
        if self.intent is Phase.DETECT and self.phase_end_s is None and not self.listeners and self._phase_length(Phase.DETECT) == 0:
            self.intent = Phase.RELOAD  # nothing to detect or reschedule: no empty phase (and no event for it)
        reloading = self.intent is Phase.RELOAD and self.phase_end_s is None
        if reloading and self.mode is not OnFailure.ELASTIC and any(i.outages for i in self.islands):
            return Phase.BLOCKED, math.inf  # waiting for the capacity to come back
        if self.intent is Phase.RUNNING and self.mode is OnFailure.ELASTIC and self.needs_upscale():
            self.intent, self.phase_end_s = Phase.UPSCALE, now + self.training.elastic.upscale
            returning = self.active_chips == 0  # back from nothing: its state must come from a peer
            self._sync_capacity(upscale=True)
            if returning and self.reload_transfer is not None:
                self._transfer = self.reload_transfer(self)
        if self.intent is Phase.SWAP and self.spares.waiting():
            return Phase.BLOCKED, math.inf  # no spare anywhere: wait until a repair returns one
        if self.intent in _TIMED:
            if self.phase_end_s is None:
                self.phase_end_s = now + self._phase_length(self.intent)
                if self.intent is Phase.RELOAD and self.reload_transfer is not None:
                    self._transfer = self.reload_transfer(self)
            return self.intent, self.phase_end_s - now
        if self.active_chips == 0:
            return Phase.DOWN, math.inf
        compute_s, comm_s = self.step_times()
        if not math.isfinite(compute_s + comm_s):
            return Phase.BLOCKED, math.inf
        self._step_wall_s = compute_s + comm_s
        if self.target_steps < math.inf:  # stop running when the work is done
            return Phase.RUNNING, min(self.work_left_s, self.steps_left() / (1.0 / self._step_wall_s))
        return Phase.RUNNING, self.work_left_s

    def _phase_length(self, phase: Phase) -> float:
        return self._swap_s if phase is Phase.SWAP else self._lengths_s[phase]

    def _enter(self, phase: Phase) -> None:
        now = self.env.now
        if phase in _TIMED or phase is Phase.DOWN:
            self._step_phase = 0.0  # pauses, checkpoints and reloads happen between steps
        if phase is Phase.RUNNING:
            self._run_started_s = now
        old = self.phase
        if phase is not old:
            self.phase, self.phase_since_s = phase, now
            for listener in self.listeners:
                listener(self, old, phase)
        self._book()
        for listener in self.plan_listeners:
            listener(self, old, phase)

    def _account_islands(self) -> None:
        """Per-island downtime beyond the group's: time an island sat out while the group ran."""
        now = self.env.now
        if self._was_running:
            for index in self._out:
                self.island_out_s[index] += now - self._islands_since_s
        self._islands_since_s, self._was_running = now, self.phase is Phase.RUNNING

    def up_s(self) -> float:
        """Wall time the group advanced: running, or (``uptime_counts_kept``) running on work that was
        not rolled back since (committed, or still pending)."""
        if self.uptime_counts_kept:
            return self.ledger.kept_run_s + self.ledger.pending_run_s
        return self.ledger.advancing_s

    def island_downtime_s(self, island: Island) -> float:
        """Wall time the island did not train: the group's downtime plus its own time out of the job."""
        return self.env.now - self.up_s() + self.island_out_s[island.index]

    def _book(self) -> None:
        """Tell the ledger what the chips are doing now."""
        self._account_islands()
        active, spare = self.active_chips, self.spares.idle_chips()
        down = self.ledger.provisioned_chips - active - spare
        # in detect + reschedule the group holds no chips (the ledger still books them as recovery)
        self._timeline_row(0 if self.phase is Phase.DETECT else active, down)
        if self.phase is Phase.RUNNING:
            fraction, rate = self.running_rates()
            if self.record_step_rate and rate != self._recorded_rate:  # (what sim.goodput_log needs)
                self.recorder.event(self.env.now, "step_rate", "", self.name, repr(rate))  # steps/s, exact
                self._recorded_rate = rate
            self.ledger.set_state(
                self.env.now, Phase.RUNNING, active=active, down=down, spare=spare,
                compute_fraction=fraction, steps_per_s=rate,
            )
        else:
            self.ledger.set_state(self.env.now, self.phase, active=active, down=down, spare=spare)

    def running_rates(self) -> tuple[float, float]:
        """(share of running chip-time that is compute, steps per second) with the chips in the job now."""
        compute_s, comm_s = self.step_times()
        wall = compute_s + comm_s
        # an infinite step (a wake to re-plan is already queued) makes no progress meanwhile;
        # chips idle at the barrier behind a straggler are waiting, not computing
        fraction, rate = (compute_s / wall, 1.0 / wall) if math.isfinite(wall) else (0.0, 0.0)
        fraction *= 1.0 - self.barrier_idle_fraction()
        return fraction, rate

    def _timeline_row(self, active: int, down: int) -> None:
        """Close the open timeline row when the phase or the chip counts change (rows carry the
        counts that held during them, not the ones after the change)."""
        row = (self.phase, active, down)
        if row != self._row:
            self._close_row()
            self._row, self._row_since_s = row, self.env.now

    def _close_row(self) -> None:
        if self._row is not None:
            phase, active, down = self._row
            self.recorder.interval(self.name, phase.value, self._row_since_s, self.env.now, active, down)

    def _completed(self) -> None:
        now, phase = self.env.now, self.phase
        self.phase_end_s = None
        if phase is Phase.RUNNING:
            self.work_left_s = 0.0
            self.intent = Phase.CHECKPOINT
            if self.checkpoint_interval_s is None and self.target_reached():
                self._work_done()  # no checkpoints to write: the work in place is the result
        elif phase is Phase.CHECKPOINT:
            steps = self.ledger.commit(now)
            self.recorder.event(now, "checkpoint", "", self.name, f"{steps:.6g} steps committed")
            for listener in self.commit_listeners:
                listener(self, steps)
            self.work_left_s = self.checkpoint_interval_s or math.inf
            self.intent = Phase.RUNNING
            if self.target_reached():
                self._work_done()
        elif phase in (Phase.DETECT, Phase.SWAP):
            self.intent = Phase.RELOAD
        else:  # RELOAD, DOWNSCALE, UPSCALE
            self._transfer = None
            self.intent = Phase.RUNNING

    def _interrupted(self, cause: Failure | Wake) -> None:
        now, phase = self.env.now, self.phase
        if phase is Phase.RUNNING:
            self.work_left_s = max(self.work_left_s - (now - self._run_started_s), 0.0)
            self._step_phase = self._step_phase_now()
        if isinstance(cause, Wake):
            return  # re-plan: timed phases keep their end, running is re-timed
        if self.mode is OnFailure.ELASTIC:
            self._elastic_failure(phase, now)
            return
        if phase in (Phase.DETECT, Phase.SWAP) or not (phase in _HOLDING or self.intent is Phase.RUNNING):
            return  # holding no chips: nothing to lose, recovery goes on
        if self.on_restart is not None:
            self.on_restart(self)
        else:
            self.ledger.rollback(now)
        self._abandon_transfer()
        self.intent, self.phase_end_s = (Phase.SWAP if cause.swapped else Phase.DETECT), None
        self._swap_s = cause.swap_s
        self.work_left_s = self.checkpoint_interval_s or math.inf

    def _step_phase_now(self) -> float:
        """Fraction of the step in flight computed so far (steps carry across re-timings)."""
        if self.phase is not Phase.RUNNING or not math.isfinite(self._step_wall_s):
            return self._step_phase
        done = self._step_phase + (self.env.now - self._run_started_s) / self._step_wall_s
        return done - math.floor(done)

    def _discard_step_in_flight(self) -> None:
        """An elastic group loses the step it was computing when a unit died."""
        if self.phase is not Phase.RUNNING:
            return
        now, partial = self.env.now, self._step_phase_now()
        chip_s = partial * self._step_wall_s * self.ledger.compute_fraction * self.ledger.active_chips
        self.ledger.discard_chip_s(now, chip_s, partial, partial * self._step_wall_s)
        self._step_phase, self._run_started_s = 0.0, now

    def _elastic_failure(self, phase: Phase, now: float) -> None:
        if phase is Phase.CHECKPOINT:
            self.work_left_s = 0.0  # the write was cut short: write again after the pause
        if phase in (Phase.DOWNSCALE, Phase.UPSCALE) and self.training.elastic.during_pause is PauseConflict.JOIN:
            return
        if phase in (Phase.DOWN, Phase.BLOCKED) and self.active_chips == 0:
            return
        self._abandon_transfer()  # an upscale started over: its state transfer starts over too
        self.intent, self.phase_end_s = Phase.DOWNSCALE, now + self.training.elastic.downscale

    def _abandon_transfer(self) -> None:
        """A reload or upscale cut short: the state transfer it was waiting for is cancelled."""
        if self._transfer is not None:
            for listener in self.transfer_cancelled:
                listener(self._transfer)
            self._transfer = None

    def _work_done(self) -> None:
        self.done = True
        self.recorder.event(self.env.now, "work_done", "", self.name, f"{self.ledger.committed_steps:.6g} steps")

    def finish(self) -> None:
        """Close the last timeline interval and the ledger at the end of the run."""
        self._leave_stretch()
        now = self.env.now
        if self.spares.waiting():  # still waiting for a spare when the run ends
            self.spare_wait_s += now - self._wait_since_s
        self._account_islands()
        self._close_row()
        self._row = None
        self.ledger.finish(now)
