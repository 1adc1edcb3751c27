"""Decoupled DiLoCo's synchronizer, played round by round (DESIGN.md, the protocol, rules 1-6).

One open round per fragment. A round opens

* ``schedule: synchronizer`` (default): when the synchronizer's slot counter reaches the fragment's
  offset ``t_p = floor(p*H/P)`` (mod H). The counter advances with the step count of the K-th fastest
  alive learner, as its metadata (sent after every step, latency only) arrives; it stands still with
  fewer than K alive and skips a fragment whose round is still open. Each alive, reachable learner's
  next metadata after the opening is its report (the metadata that opened it counts); a learner
  whose previous result of p is still in flight defers its report of p.
* ``schedule: learner``: at the first report after the previous round of p closed; learner m reports
  p after its own steps i with ``i mod H = t_p``.

Every report, membership change and timer asks the decision about the round (quorum among alive
reporters, grace window from the EMAs, fast path, round timeout): :func:`sim.syncer.rule`, decide's
control flow on the round's counts, says whether it merges; a merging round gets :func:`decide` on
its real view (members, weights, reason). On MERGE the members' fragments are pulled over their
channels to the synchronizer's region; the merge happens when the last pull has arrived (a member
that fails first is dropped; with fewer than K left and no timeout the round is abandoned and every
report given back), then the result is sent back to each member. Reports to an unreachable
synchronizer (outage, partition) fail at once: the learner trains on and carries its counters. A
synchronizer outage abandons every round not yet merged and stops the results in flight (that work
stays merged); a partition does the same to the learners it cuts off.

Stalls are measured from the rounds: ``quorum_unmet_s`` is the time some alive learner is blocked on
a round short of quorum; ``deadlock_s`` the time at least K learners are alive and every one of them
is (rule 6), with a ``deadlock`` event when one starts.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from ..scenario import RoundSchedule
from ..syncer import (
    Decision,
    Ema,
    LearnerReport,
    Rule,
    SyncConfig,
    SyncView,
    TrustedSyncView,
    decide,
    grace_s,
    grace_window_s,
    rule,
)
from .engine import Learner, Report, RoundEngine


@dataclass(eq=False)
class Round:
    fragment: int
    opened_s: float
    reports: dict[int, Report] = field(default_factory=dict)  # by learner
    quorum_met_s: float | None = None
    state: str = "open"  # open -> pulling -> sending
    members: dict[int, Report] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)
    closed_s: float = math.nan
    reason: str = ""
    pending: set[int] = field(default_factory=set)  # members whose pull (or result) is in flight
    timed_out: bool = False  # closed by the round timeout (short of quorum)
    timer: int = 0  # generation of its wake-up
    timer_s: float = math.nan  # when its live wake-up fires


class SynchronizerRounds(RoundEngine):
    def __init__(self, ctx, groups, wait_s, surrogate=None):
        super().__init__(ctx, groups, wait_s, surrogate)
        t = self.training
        self.every_step = t.schedule is RoundSchedule.SYNCHRONIZER
        self.config = SyncConfig(
            quorum=t.quorum, grace_mode=t.grace.mode, gamma=t.grace.gamma, grace_fixed_s=t.grace.fixed,
            grace_max_s=t.grace.max, overlap_steps=t.overlap, merge=t.merge,
            round_timeout_s=math.inf if t.round_timeout is None else t.round_timeout,
        )
        self.syncer_region = ctx.topology.syncer_region
        self.open: list[Round | None] = [None] * self.fragments
        self.open_fragments: list[int] = []  # the p with an open round, ascending (few of the P at a time)
        self.closing: list[Round] = []  # pulling or sending
        self.ema_step = self.ema_quorum = self.ema_sync = Ema(t.grace.ema_alpha)
        self.outages = 0
        self.reachable = {ls.index: True for ls in self.learners}
        # can_report of every learner, kept as flags (indexed by learner) and as the ids whose flag is
        # set: they change only when the synchronizer, a learner or a link goes down or comes back
        self._refresh_reporting()  # sets self.reporting and self.reporting_ids
        self._link_to_syncer = [self._link_of(ls) for ls in self.learners]
        # the view's entry of a learner that has not reported, by (alive, learner)
        self._absent = {alive: [LearnerReport(ls.index, alive, False, 0, 0 * self.tokens_per_step)
                                for ls in self.learners] for alive in (False, True)}
        # slot clock (synchronizer schedule)
        self.slot = 0
        self.kth_seen: int | None = 0  # every learner starts at step 0
        self.meta_steps = [0] * len(self.learners)
        # measured
        self.grace_s_sum = 0.0
        self.grace_rounds = 0
        self.timed_out = 0
        self.skipped_slots = 0
        self.abandoned = 0
        self.unmet_s = self.deadlock_s = 0.0
        self.deadlocks = 0
        self._unmet_since: float | None = None
        self._deadlock_since: float | None = None
        ctx.links.listeners.append(self._links_changed)

    def attach(self, effects) -> None:
        effects.syncer_hooks.append(self._syncer_changed)

    @property
    def up(self) -> bool:
        return self.outages == 0

    def can_report(self, ls: Learner) -> bool:
        return self.up and ls.alive and self.reachable[ls.index]

    def _refresh_reporting(self) -> None:
        """Recompute the cached :meth:`can_report` flags (after any of its inputs changed)."""
        self.reporting = [self.can_report(ls) for ls in self.learners]
        self.reporting_ids = tuple(ls.index for ls in self.learners if self.reporting[ls.index])

    def alive_changed(self, ls: Learner) -> None:
        self._refresh_reporting()

    def _reporters(self, rnd: Round) -> int:
        """Reporters of ``rnd`` that can report now: the ones that count towards the quorum."""
        return sum(map(self.reporting.__getitem__, rnd.reports))  # (flags are bools: True counts 1)

    # ------------------------------------------------------------------------- reports

    def on_step(self, ls: Learner, step: int, now: float) -> None:
        if not self.reporting[ls.index]:
            return  # the report fails at once: it trains on and carries its counters
        latency = self.ctx.links.current(self._link_to_syncer[ls.index])[1]
        if self.every_step:
            ledger = ls.group.ledger
            snap = (ls, step, ledger.compute_chip_s, ledger.compute_steps, now)
            self.env.timeout(latency, snap).callbacks.append(self._metadata)
            return
        p = self.fragment_at[step % self.inner_steps]
        if p in ls.in_flight:
            return  # its previous result of p is still on its way: this report waits for the next slot
        rep = self.snapshot(ls, p, step, now)
        self.track(ls, rep)
        self.env.timeout(latency, rep).callbacks.append(self._report_arrived)

    def _link_of(self, ls: Learner) -> str:
        if ls.region == self.syncer_region:
            return f"dcn:{ls.region}"
        return self.ctx.topology.link_between(ls.region, self.syncer_region)[0]

    def _report_arrived(self, event) -> None:
        """Learner schedule: a report reaches the synchronizer and joins (or opens) the round of p."""
        rep: Report = event.value
        if rep.resolved:
            return
        ls = self.learners[rep.learner]
        if not self.reporting[ls.index]:
            self.release(rep)
            return
        rnd = self.open[rep.fragment]
        if rnd is None:
            rnd = self._open_round(rep.fragment)
        rep.round = rnd
        rnd.reports[ls.index] = rep
        self.evaluate(rnd)

    def _metadata(self, event) -> None:
        """Synchronizer schedule: a learner's metadata after a step reaches the synchronizer.

        The event's value is what the learner sent: (learner, step, chip_s, compute_steps, made_s)."""
        ls, step, chip_s, compute_steps, made_s = event.value
        if not self.reporting[ls.index]:
            return
        self.meta_steps[ls.index] = step
        self._advance_slots()
        for p in tuple(self.open_fragments):  # (as of now: evaluating a round may close it)
            rnd = self.open[p]
            if rnd is None or ls.index in rnd.reports or p in ls.in_flight:
                continue
            rep = Report(ls.index, p, step, chip_s, compute_steps, step - ls.points[p].step, made_s,
                         step + self.overlap, rnd)
            rnd.reports[ls.index] = rep
            self.track(ls, rep)
            self.evaluate(rnd)

    def _advance_slots(self) -> None:
        """The slot counter moves with the K-th fastest alive learner's step count."""
        meta_steps, k = self.meta_steps, self.config.quorum
        counts = [meta_steps[m] for m in self.reporting_ids]
        if len(counts) < k:
            self.kth_seen = None  # stands still; the baseline is taken afresh when K are back
            return
        kth = max(counts) if k == 1 else sorted(counts, reverse=True)[k - 1]
        if self.kth_seen is None or kth < self.kth_seen:
            self.kth_seen = kth
            return
        if kth == self.kth_seen:
            return
        first, self.slot = self.slot + 1, self.slot + kth - self.kth_seen
        self.kth_seen = kth
        passed = range(first, self.slot + 1) if self.slot - first < self.inner_steps else range(
            self.slot - self.inner_steps + 1, self.slot + 1)
        opened = set()
        for s in passed:
            p = self.fragment_at.get(s % self.inner_steps)
            if p is None or p in opened:
                continue
            if self.open[p] is not None:
                self.skipped_slots += 1
                continue
            opened.add(p)
            self._open_round(p)

    def _open_round(self, p: int) -> Round:
        rnd = self.open[p] = Round(p, self.env.now)
        bisect.insort(self.open_fragments, p)
        return rnd

    def _clear_slot(self, p: int) -> None:
        self.open[p] = None
        self.open_fragments.remove(p)

    # ------------------------------------------------------------------------- the decision

    def view(self, rnd: Round, now: float) -> SyncView:
        """The round's view for :func:`decide`: one entry per learner, in learner order.

        Entries are cached (they are immutable): an absent learner's depends only on whether it can
        report, a reporter's on its report and that flag."""
        reports, absent = rnd.reports, self._absent
        learners = tuple([absent[alive][m] if (rep := reports.get(m)) is None else
                          rep.entry if rep.entry is not None and rep.entry.alive is alive else self._entry(rep, alive)
                          for m, alive in enumerate(self.reporting)])
        return TrustedSyncView(now, rnd.fragment, rnd.opened_s, rnd.quorum_met_s, learners,
                               self.ema_step.value_or(0.0), self.ema_quorum.value_or(0.0), self.ema_sync.value_or(0.0))

    def _entry(self, rep: Report, alive: bool) -> LearnerReport:
        steps = rep.c_steps
        rep.entry = LearnerReport(rep.learner, alive, True, steps, steps * self.tokens_per_step)
        return rep.entry

    def evaluate(self, rnd: Round) -> None:
        """Ask the decision about ``rnd`` now: merge it, or wake up again when the decision says.

        Most evaluations wait (a report short of quorum, or one more inside the grace window); which
        rule applies follows from counts alone (:func:`sim.syncer.rule`, decide's own control flow), so
        the view is built, and :func:`decide` called on it, only for the round that merges."""
        if rnd.state != "open":
            return
        now = self.env.now
        reported, k = self._reporters(rnd), self.config.quorum
        if reported >= k:
            if rnd.quorum_met_s is None:
                rnd.quorum_met_s = now
        else:
            rnd.quorum_met_s = None
        grace = grace_s(self.config, self.ema_step.value_or(0.0), self.ema_quorum.value_or(0.0),
                        self.ema_sync.value_or(0.0)) if reported >= k else 0.0
        which, wait_until_s = rule(now, len(self.reporting_ids), reported, rnd.opened_s, rnd.quorum_met_s,
                                   grace, self.config)
        if which.merges:
            view = self.view(rnd, now)
            rnd.timed_out = which is Rule.ROUND_TIMEOUT
            self._close(rnd, decide(now, view, self.config), view)
        elif wait_until_s is not None and wait_until_s != rnd.timer_s:
            # (a wake-up already set for that instant stands: the reports inside a grace window ask
            # for the same deadline again and again)
            rnd.timer += 1
            rnd.timer_s = wait_until_s
            self.env.timeout(wait_until_s - now, (rnd, rnd.timer)).callbacks.append(self._timer)
        self.stall_changed()

    def _timer(self, event) -> None:
        rnd, timer = event.value
        if rnd.timer == timer:
            self.evaluate(rnd)

    def _close(self, rnd: Round, decision: Decision, view: SyncView) -> None:
        now = self.env.now
        rnd.state, rnd.closed_s, rnd.reason = "pulling", now, decision.reason
        self._clear_slot(rnd.fragment)
        rnd.members = {m: rnd.reports[m] for m in decision.members}
        rnd.weights = dict(zip(decision.members, decision.weights))
        if rnd.timed_out:
            self.timed_out += 1
        if rnd.quorum_met_s is not None:
            self.grace_s_sum += grace_window_s(view, self.config)
            self.grace_rounds += 1
            kth = sorted(rnd.members.values(), key=lambda r: (r.made_s, r.learner))[self.config.quorum - 1]
            self.ema_step = self.ema_step.update(self.learners[kth.learner].group.step_wall_s)
            self.ema_quorum = self.ema_quorum.update(rnd.quorum_met_s - rnd.opened_s)
        self.closing.append(rnd)
        for m, rep in rnd.members.items():
            rnd.pending.add(m)
            rep.transfer = self.channels.send(self.learners[m].region, self.syncer_region, self.fragment_bytes)
            rep.transfer.callbacks.append(lambda _e, rep=rep: self._pulled(rnd, rep))

    def _pulled(self, rnd: Round, rep: Report) -> None:
        rep.transfer = None
        rnd.pending.discard(rep.learner)
        if not rnd.pending and rnd.state == "pulling":
            self._merge(rnd)

    def _merge(self, rnd: Round) -> None:
        members = tuple(sorted(rnd.members))
        total = math.fsum(rnd.weights[m] for m in members)
        weights = tuple(rnd.weights[m] / total for m in members) if total > 0 else tuple(1.0 / len(members) for _ in members)
        self.merged(rnd.fragment, rnd.members, weights, rnd.opened_s, rnd.closed_s, rnd.reason)
        rnd.state = "sending"
        for m in members:
            rep = rnd.members[m]
            rnd.pending.add(m)
            rep.transfer = self.channels.send(self.syncer_region, self.learners[m].region, self.fragment_bytes)
            rep.transfer.callbacks.append(lambda _e, rep=rep: self._sent(rnd, rep))

    def _sent(self, rnd: Round, rep: Report) -> None:
        self.result_arrived(rep)
        rnd.pending.discard(rep.learner)
        if not rnd.pending:
            self._done(rnd)

    def _done(self, rnd: Round) -> None:
        self.ema_sync = self.ema_sync.update(self.env.now - rnd.closed_s)
        self.closing.remove(rnd)

    # ------------------------------------------------------------------------- membership changes

    def _drop(self, ls: Learner) -> None:
        """``ls`` can no longer take part: out of open rounds, dropped from merges, results stopped."""
        for rnd in self.open:
            if rnd is not None and ls.index in rnd.reports:
                self.release(rnd.reports.pop(ls.index))
        for rnd in list(self.closing):
            if ls.index not in rnd.members:
                continue
            rep = rnd.members[ls.index]
            if rnd.state == "pulling":
                del rnd.members[ls.index]
                rnd.pending.discard(ls.index)
                self.release(rep)
                if not rnd.members or (len(rnd.members) < self.config.quorum and not rnd.timed_out):
                    self._abandon(rnd)
                elif not rnd.pending:
                    self._merge(rnd)
            elif ls.index in rnd.pending:  # sending: the merge stands, the result does not arrive
                rnd.pending.discard(ls.index)
                self.release(rep)
                if not rnd.pending:
                    self._done(rnd)

    def _abandon(self, rnd: Round) -> None:
        self.abandoned += 1
        for rep in rnd.members.values():
            self.release(rep)
        self.closing.remove(rnd)

    def member_left(self, ls: Learner) -> None:
        self._drop(ls)
        self._reevaluate()

    def member_returned(self, ls: Learner) -> None:
        self._reevaluate()

    def _reevaluate(self) -> None:
        for rnd in list(self.open):
            if rnd is not None:
                self.evaluate(rnd)

    def _links_changed(self, link: str, bandwidth_bps: float, latency_s: float) -> None:
        changed = False
        for ls in self.learners:
            reach = self.channels.capacity_bps(ls.region, self.syncer_region) > 0 and \
                self.channels.capacity_bps(self.syncer_region, ls.region) > 0
            if reach != self.reachable[ls.index]:
                self.reachable[ls.index] = reach
                self._refresh_reporting()
                changed = True
                if not reach:
                    self._drop(ls)
        if changed:
            self.kth_seen = None
            self._reevaluate()

    def _syncer_changed(self, started: bool, fault: str) -> None:
        was_up = self.up
        self.outages += 1 if started else -1
        self._refresh_reporting()
        if was_up == self.up:
            return  # an outage inside another changes nothing
        if started:
            for p, rnd in enumerate(self.open):
                if rnd is not None:
                    for rep in rnd.reports.values():
                        self.release(rep)
                    self._clear_slot(p)
            for rnd in list(self.closing):
                for m in list(rnd.pending if rnd.state == "sending" else rnd.members):
                    self.release(rnd.members[m])
                self.closing.remove(rnd)
            # reports the learners made that have not arrived yet fail too
            for ls in self.learners:
                for rep in list(ls.in_flight.values()):
                    self.release(rep)
        self.kth_seen = None
        self.stall_changed()

    # ------------------------------------------------------------------------- stalls

    def _blocked_on_unmet(self, ls: Learner) -> bool:
        if not ls.blocked:
            return False
        steps, k = ls.clock.steps, self.config.quorum
        for rep in ls.in_flight.values():
            rnd = rep.round  # None: still on its way to the synchronizer
            if (not rep.resolved and rep.deadline <= steps and rnd is not None and rnd.state == "open"
                    and self._reporters(rnd) < k):
                return True
        return False

    def stall_changed(self) -> None:
        if self._unmet_since is None and not self.blocked_count:
            return  # nobody blocked, no stall clock running: nothing can have changed
        now = self.env.now
        alive = [ls for ls in self.learners if ls.alive]
        stuck = [ls for ls in alive if ls.blocked and self._blocked_on_unmet(ls)]
        unmet = bool(stuck)
        deadlock = len(alive) >= self.config.quorum and len(stuck) == len(alive) and bool(alive)
        if unmet and self._unmet_since is None:
            self._unmet_since = now
        elif not unmet and self._unmet_since is not None:
            self.unmet_s += now - self._unmet_since
            self._unmet_since = None
        if deadlock and self._deadlock_since is None:
            self._deadlock_since = now
            self.deadlocks += 1
            self.ctx.recorder.event(now, "deadlock", "", "syncer",
                                    f"{len(alive)} alive learners all blocked on rounds short of quorum "
                                    f"{self.config.quorum}")
        elif not deadlock and self._deadlock_since is not None:
            self.deadlock_s += now - self._deadlock_since
            self._deadlock_since = None

    def metrics(self) -> dict:
        now = self.env.now
        out = super().metrics()
        out.update({
            "quorum_unmet_s": self.unmet_s + (now - self._unmet_since if self._unmet_since is not None else 0.0),
            "deadlock_s": self.deadlock_s + (now - self._deadlock_since if self._deadlock_since is not None else 0.0),
            "deadlocks": self.deadlocks,
            "mean_grace_s": self.grace_s_sum / self.grace_rounds if self.grace_rounds else 0.0,
            "rounds_timed_out": self.timed_out,
            "rounds_abandoned": self.abandoned,
            "slots_skipped": self.skipped_slots,
        })
        return out
