"""The learners' side of the outer rounds: step clocks, reports, the overlap bound, apply, accounting.

Every DiLoCo-family policy is played round by round on top of this base (DESIGN.md, "The Decoupled
DiLoCo protocol"). Per learner it keeps

* a :class:`~sim.rounds.clock.StepClock`: steps are counted exactly, with one SimPy event at the end
  of each step the protocol cares about (a report, an overlap deadline, an apply), never per chip;
* per fragment p the point of its last merged report (step, cumulative compute): the counters
  ``c_steps`` / ``c_tokens`` of its next report are measured from there;
* its reports in flight (at most one per fragment). The result of a report made after step j must be
  applied before step ``j + tau + 1`` starts; if it is not back by the end of step ``j + tau`` the
  learner **blocks** (phase ``blocked``, chip-time ``waiting``) until it arrives.

Accounting (protocol rule 7): each step counts 1/P towards every fragment. When a report of p is
merged, 1/P of the compute between the previous merged point and the report becomes ``useful``; a
restart throws away everything not yet merged (``lost``), ``apply: overwrite`` throws away p's share
of the steps between the report and the apply. Whatever is still pending when the run ends counts as
useful (the run-end convention).

Subclasses say what a round is: :class:`~sim.rounds.synchronizer.SynchronizerRounds` (Decoupled
DiLoCo: a central synchronizer, quorum, grace) and :class:`~sim.rounds.allreduce.AllReduceRounds`
(DiLoCo and Streaming DiLoCo: lockstep all-reduce rounds). Both move every byte through
:class:`~sim.rounds.channels.Channels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import simpy

from ..context import RunContext
from ..learner import Group
from ..metrics import Phase
from ..scenario import ApplyMode
from .channels import Channels
from .clock import StepClock

STATE_BYTES_PER_PARAM = 10.0  # a rejoin pulls bf16 parameters + fp32 AdamW moments from a peer


@dataclass(slots=True, eq=False)
class Report:
    """A learner's report of one fragment: the snapshot the round will pull, and its counters."""

    learner: int
    fragment: int
    step: int  # the learner's completed steps when it reported (the snapshot)
    chip_s: float  # its ledger's cumulative compute at that step
    compute_steps: float
    c_steps: int  # steps since its last merged report of this fragment (or since it joined)
    made_s: float
    deadline: int  # step + tau: the result must be applied by the end of this step
    round: object = None
    transfer: simpy.Event | None = None  # its pull or its result, while in flight
    resolved: bool = False  # applied, or released (no result will come)
    surrogate: object = None  # the surrogate's snapshot of the fragment (and, once merged, the result)
    entry: object = None  # its entry in a synchronizer's view, cached (see SynchronizerRounds.view)

    @property
    def surrogate_merged(self) -> bool:
        """The surrogate merged this report: a result exists for the learner to apply (or to lose)."""
        return self.surrogate is not None and self.surrogate.result is not None


@dataclass(slots=True, eq=False)
class Point:
    """Where a fragment's unmerged progress starts: the last merged report (or the (re)join)."""

    step: int
    chip_s: float
    compute_steps: float


@dataclass(eq=False)
class Learner:
    index: int
    group: Group
    region: str
    clock: StepClock
    points: list[Point]
    last_merge_s: list[float]
    in_flight: dict[int, Report] = field(default_factory=dict)
    applies: list[Report] = field(default_factory=list)  # results waiting for the next step boundary
    alive: bool = False
    blocked: bool = False
    left_s: float = -math.inf
    join_mark: int = 0  # step count when it last (re)joined: lockstep rounds expect it only after it
    rejoin_steps: int | None = None  # set while it reloads from a peer: the step count it takes over
    trained_to: int = 0  # steps handed to the surrogate so far
    generation: int = 0  # of its scheduled step-end event; older ones are stale

    @property
    def name(self) -> str:
        return self.group.name


def _overdue(ls: Learner) -> bool:
    """Some result in flight was due by the end of the learner's last completed step."""
    steps = ls.clock.steps
    for r in ls.in_flight.values():
        if not r.resolved and r.deadline <= steps:
            return True
    return False


class RoundEngine:
    """Learner clocks, reports, blocking and accounting shared by every outer-round protocol."""

    every_step = False  # metadata after every step (the synchronizer schedule)

    def __init__(self, ctx: RunContext, groups: list[Group], wait_s: dict[int, float], surrogate=None):
        self.ctx, self.env = ctx, ctx.env
        t = ctx.scenario.training
        self.training = t
        self.fragments = self.fragment_count(t)
        self.inner_steps = t.inner_steps
        self.overlap = self._overlap_steps()
        self.offsets = [p * t.inner_steps // self.fragments for p in range(self.fragments)]
        self.fragment_at = {offset: p for p, offset in enumerate(self.offsets)}
        # steps from residue r (of the step count mod H) to the next report step
        self._gap = [min((o - r) % t.inner_steps or t.inner_steps for o in self.offsets)
                     for r in range(t.inner_steps)]
        self.fragment_bytes = ctx.scenario.workload.params * t.bits / 8.0 / self.fragments
        self.tokens_per_step = ctx.scenario.workload.tokens_per_step
        self.wait_s = wait_s
        self.surrogate = surrogate
        self.channels = Channels(ctx)
        self.learners: list[Learner] = []
        self.blocked_count = 0  # learners with ``blocked`` set
        self._of_group: dict[Group, Learner] = {}
        for group in groups:
            island = group.islands[0]
            ls = Learner(island.index, group, island.region, StepClock(self.env.now),
                         [Point(0, 0.0, 0.0) for _ in range(self.fragments)], [0.0] * self.fragments)
            self.learners.append(ls)
            self._of_group[group] = ls
            group.plan_listeners.append(self._planned)
            group.on_restart = self._restarted
            group.reload_transfer = self._pull_state_from_peer
            group.transfer_cancelled.append(self.channels.cancel)
        # measured from the rounds played
        self.merged_rounds = 0
        self.member_merges = 0
        self.merges_of = [0] * len(self.learners)  # rounds each learner was merged in
        self.stale_sum_s = 0.0
        self.stale_count = 0
        self.rejoin_s: list[tuple[str, float]] = []
        self._reload_started: dict[int, float] = {}

    # ------------------------------------------------------------------------- what a subclass says

    @classmethod
    def fragment_count(cls, training) -> int:
        """P: how many fragments the rounds sync (and the surrogate splits its parameters into)."""
        return training.fragments

    def _overlap_steps(self) -> int:
        return self.training.overlap

    def on_step(self, ls: Learner, step: int, now: float) -> None:
        """A step of ``ls`` ended (one the engine scheduled): send metadata or reports."""

    def member_left(self, ls: Learner) -> None:
        """``ls`` stopped being alive: drop it from the rounds it is in."""

    def member_returned(self, ls: Learner) -> None:
        """``ls`` is alive again."""

    def alive_changed(self, ls: Learner) -> None:
        """``ls.alive`` was just set to a new value (before :meth:`member_left` or :meth:`member_returned`)."""

    def stall_changed(self) -> None:
        """Blocking or round state changed (for the quorum-unmet and deadlock clocks)."""

    # ------------------------------------------------------------------------- learner state

    def _planned(self, group: Group, old: Phase, new: Phase) -> None:
        ls, now = self._of_group[group], self.env.now
        if new is Phase.RUNNING:
            ls.clock.retime(now, group.step_wall_s)
        elif ls.clock.running:
            # blocked keeps the step in flight; pauses, reloads and downtime start the step over
            ls.clock.stop(now, keep_partial=new is Phase.BLOCKED)
        alive = group.active_chips > 0 and new in (Phase.RUNNING, Phase.BLOCKED) and group.intent is Phase.RUNNING
        if old in (Phase.RELOAD, Phase.UPSCALE) and new is not old and ls.index in self._reload_started and alive:
            self.rejoin_s.append((ls.name, now - self._reload_started.pop(ls.index)))
        if alive != ls.alive:
            ls.alive = alive
            self.alive_changed(ls)
            if alive:
                self._returned(ls)
            else:
                self._left(ls)
        self._schedule(ls)

    def _left(self, ls: Learner) -> None:
        ls.left_s = self.env.now
        if ls.blocked:  # it is not running anyway; when it is back nothing of this holds it
            ls.blocked = False
            self.blocked_count -= 1
        self.wait_s[ls.index] = 0.0
        self.member_left(ls)
        for rep in list(ls.in_flight.values()):
            self.release(rep)
        ls.applies.clear()
        self.stall_changed()

    def _returned(self, ls: Learner) -> None:
        now = self.env.now
        if ls.rejoin_steps is not None:
            # it runs on a peer's state: its step count, and nothing of its own left to merge
            ls.clock.steps, ls.clock.phase = ls.rejoin_steps, 0.0
            ls.rejoin_steps = None
            ledger = ls.group.ledger
            ledger.advance(now)
            for p in range(self.fragments):
                ls.points[p] = Point(ls.clock.steps, ledger.compute_chip_s, ledger.compute_steps)
                ls.last_merge_s[p] = now
            ls.trained_to = ls.clock.steps
        ls.join_mark = ls.clock.steps
        self.member_returned(ls)
        self.stall_changed()

    def _restarted(self, group: Group) -> None:
        """A restart loses exactly what no round has merged yet: everything still pending."""
        group.ledger.rollback(self.env.now)

    def _pull_state_from_peer(self, group: Group) -> simpy.Event | None:
        """A learner reloading (or back from zero chips) takes a healthy peer's state over the network.

        The peer is the one behind the fastest channel now (ties: lowest index). Without a live peer
        it restarts from the synchronizer's model (no transfer). Its own unmerged work is gone either
        way.
        """
        ls, now = self._of_group[group], self.env.now
        group.ledger.rollback(now)
        ls.in_flight.clear()
        self._reload_started[ls.index] = now
        peers = [p for p in self.learners if p.alive and p is not ls]
        if not peers:
            ls.rejoin_steps = ls.clock.steps
            if self.surrogate is not None:
                self.surrogate.adopt_global(ls.index)
            return None
        peer = max(peers, key=lambda p: (self.channels.capacity_bps(p.region, ls.region), -p.index))
        peer.clock.settle(now)
        ls.rejoin_steps = peer.clock.steps
        if self.surrogate is not None:
            self._train_to(peer, peer.clock.steps)
            self.surrogate.copy_learner(peer.index, ls.index)
        nbytes = self.ctx.scenario.workload.params * STATE_BYTES_PER_PARAM
        return self.channels.send(peer.region, ls.region, nbytes, tag=("rejoin", ls.name))

    # ------------------------------------------------------------------------- the step clock

    def _schedule(self, ls: Learner) -> None:
        """One event at the end of the next step the protocol cares about (older ones go stale)."""
        ls.generation += 1
        if not (ls.alive and ls.clock.running) or ls.blocked:
            return
        steps = ls.clock.steps
        nxt = steps + (1 if self.every_step or ls.applies else self._gap[steps % self.inner_steps])
        for rep in ls.in_flight.values():
            if not rep.resolved and steps < rep.deadline < nxt:
                nxt = rep.deadline
        delay = max(ls.clock.end_of_step(nxt) - self.env.now, 0.0)
        self.env.timeout(delay, (ls, ls.generation)).callbacks.append(self._step_end)

    def _step_end(self, event) -> None:
        ls, generation = event.value
        if generation != ls.generation or not ls.alive:
            return
        now = self.env.now
        ls.clock.settle(now)
        step = ls.clock.steps
        ls.group.ledger.advance(now)
        for rep in ls.applies:
            self._apply(ls, rep)
        ls.applies.clear()
        if step % self.inner_steps in self.fragment_at or self.every_step:
            self.on_step(ls, step, now)
        self.check_deadline(ls)
        self._schedule(ls)

    def check_deadline(self, ls: Learner) -> None:
        """Block if a result is due by the end of the step just completed and is not applied."""
        if ls.blocked or not ls.alive:
            return
        if _overdue(ls):
            ls.blocked = True
            self.blocked_count += 1
            self.wait_s[ls.index] = math.inf
            ls.group.wake("outer protocol: waiting for a round's result")
            self.stall_changed()

    def _maybe_unblock(self, ls: Learner) -> None:
        if not ls.blocked:
            return
        if not _overdue(ls):
            ls.blocked = False
            self.blocked_count -= 1
            self.wait_s[ls.index] = 0.0
            ls.group.wake("outer protocol: result applied")
            self.stall_changed()

    # ------------------------------------------------------------------------- reports and results

    def snapshot(self, ls: Learner, p: int, step: int, now: float, round_=None) -> Report:
        """A report of fragment p at ``step`` (the learner's ledger already advanced to ``now``)."""
        ledger = ls.group.ledger
        return Report(ls.index, p, step, ledger.compute_chip_s, ledger.compute_steps,
                      step - ls.points[p].step, now, step + self.overlap, round_)

    def track(self, ls: Learner, rep: Report) -> None:
        """``rep`` is in flight: its result must come back within the overlap bound."""
        ls.in_flight[rep.fragment] = rep
        ls.clock.settle(self.env.now)
        if self.surrogate is not None:
            self._train_to(ls, rep.step)
            rep.surrogate = self.surrogate.report(ls.index, rep.fragment)
        self.check_deadline(ls)  # a report learned of late can be past its deadline already

    def release(self, rep: Report) -> None:
        """No result will come for ``rep`` (not merged, or its result was lost): counters carry over."""
        if rep.resolved:
            return
        rep.resolved = True
        if rep.transfer is not None:
            self.channels.cancel(rep.transfer)
            rep.transfer = None
        ls = self.learners[rep.learner]
        if ls.in_flight.get(rep.fragment) is rep:
            del ls.in_flight[rep.fragment]
        if rep.surrogate_merged:
            self.surrogate.result_lost(ls.index, rep.fragment, rep.surrogate)
        self._maybe_unblock(ls)

    def merged(self, p: int, reports: dict[int, Report], weights: tuple[float, ...], opened_s: float,
               closed_s: float, reason: str) -> None:
        """A round of p merged ``reports`` (members sorted by id, ``weights`` normalised, same order)."""
        now = self.env.now
        members = tuple(sorted(reports))
        for m in members:
            self.commit(reports[m], now)
        round_id = self.merged_rounds
        self.merged_rounds += 1
        self.member_merges += len(members)
        if self.surrogate is not None:
            self.surrogate.merge(round_id, p, members, weights, [reports[m].surrogate for m in members])
        self.ctx.recorder.round(round_id, p, opened_s, closed_s, now, members, weights, reason)

    def commit(self, rep: Report, now: float) -> None:
        """``rep`` was merged: its fragment's share of the steps since the last merged point is useful."""
        ls = self.learners[rep.learner]
        point = ls.points[rep.fragment]
        p = self.fragments
        ls.group.ledger.commit_part(now, (rep.chip_s - point.chip_s) / p, (rep.compute_steps - point.compute_steps) / p)
        ls.points[rep.fragment] = Point(rep.step, rep.chip_s, rep.compute_steps)
        self.merges_of[rep.learner] += 1
        self.stale_sum_s += now - ls.last_merge_s[rep.fragment]
        self.stale_count += 1
        ls.last_merge_s[rep.fragment] = now

    def result_arrived(self, rep: Report) -> None:
        """The merged fragment is back at the learner: applied at the first step boundary from now."""
        rep.transfer = None
        if rep.resolved:
            return
        ls = self.learners[rep.learner]
        if self.training.apply is ApplyMode.OVERWRITE and ls.clock.running and not ls.blocked:
            ls.applies.append(rep)  # mid-step: the step boundary decides which steps it discards
            self._schedule(ls)
        else:
            ls.group.ledger.advance(self.env.now)
            ls.clock.settle(self.env.now)
            self._apply(ls, rep)

    def _apply(self, ls: Learner, rep: Report) -> None:
        if rep.resolved:
            return
        rep.resolved = True
        if ls.in_flight.get(rep.fragment) is rep:
            del ls.in_flight[rep.fragment]
        if self.training.apply is ApplyMode.OVERWRITE:
            ledger, p = ls.group.ledger, self.fragments
            ledger.rollback_part(self.env.now, (ledger.compute_chip_s - rep.chip_s) / p,
                                 (ledger.compute_steps - rep.compute_steps) / p)
            ls.points[rep.fragment] = Point(ls.clock.steps, ledger.compute_chip_s, ledger.compute_steps)
        if rep.surrogate_merged:
            self._train_to(ls, ls.clock.steps)  # the steps before the apply are trained on the old values
            self.surrogate.apply(ls.index, rep.fragment, rep.surrogate, self.training.apply is ApplyMode.OVERWRITE)
        self._maybe_unblock(ls)

    # ------------------------------------------------------------------------- surrogate

    def _train_to(self, ls: Learner, step: int) -> None:
        """The surrogate trains what ``ls`` owes up to its simulated step ``step``.

        Training is lazy: a learner's surrogate steps are run when its parameters are next looked at
        (a report's snapshot, an apply, a peer copy), so a snapshot is taken at the report's step up
        to one surrogate step (``1 / resolution`` simulated steps) of granularity."""
        if step > ls.trained_to:
            self.surrogate.train_owed(ls.index, step - ls.trained_to)
            ls.trained_to = step

    # ------------------------------------------------------------------------- results

    def finish(self) -> None:
        self.channels.record_window()

    def metrics(self) -> dict:
        link_bytes = self.channels.link_bytes()
        return {
            "outer_rounds": self.merged_rounds,
            "mean_learners_per_merge": self.member_merges / self.merged_rounds if self.merged_rounds else 0.0,
            "merges_by_learner": {ls.name: self.merges_of[ls.index] for ls in self.learners},
            "mean_staleness_s": self.stale_sum_s / self.stale_count if self.stale_count else 0.0,
            "rejoins": len(self.rejoin_s),
            "mean_rejoin_s": math.fsum(t for _, t in self.rejoin_s) / len(self.rejoin_s) if self.rejoin_s else 0.0,
            "rejoin_s": {name: [t for n, t in self.rejoin_s if n == name] for name in sorted({n for n, _ in self.rejoin_s})},
            "wan_bytes": sum(b for link, b in link_bytes.items() if not link.startswith("dcn:")),
            "link_bytes": link_bytes,
            "link_utilisation": self.channels.utilisation(),
            "peak_link_utilisation": max(self.channels.peak_utilisation.values(), default=0.0),
        }
