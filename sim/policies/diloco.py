"""DiLoCo, Streaming DiLoCo and Decoupled DiLoCo (reference/diloco.md).

``diloco``            Each learner runs H inner steps, then a blocking outer all-reduce of the
                      pseudo-gradients of all live learners over the WAN. Rounds are lockstep: every
                      learner waits for the slowest, and a learner that goes down blocks the round until
                      ``training.round_timeout`` drops it.
``streaming_diloco``  The same lockstep membership, but P fragments sync on a staggered schedule,
                      overlapped with tau steps of compute and optionally quantised (``bits``), so the
                      exposed communication is far smaller (bucketed-overlap model).
``decoupled_diloco``  Learners never wait for each other. Fragment rounds are run by the synchronizer
                      (in ``syncer.region``): wait for the minimum quorum K, then the grace window,
                      merge the learners present with token weights, broadcast. A learner waits only
                      when the result of a round it joined is not back within tau steps of its report
                      (the slack the adaptive grace window is bounded by), or when fewer than K learners
                      are alive. During a synchronizer outage learners train on and are merged later.

The decision in every steady state is :func:`sim.syncer.decide` on the view of one representative
fragment round; its reason is logged whenever it changes.
"""

from __future__ import annotations

import math

from ..learner import Group
from ..metrics import Phase
from ..syncer import (
    Action,
    Decision,
    Ema,
    LearnerReport,
    SyncConfig,
    SyncView,
    decide,
    grace_window_s,
    token_weights,
)
from .outer import OuterPolicy


class DiLoCo(OuterPolicy):
    comm_method = "diloco"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.left_at: dict[int, float] = {}

    def _phase_changed(self, group: Group, old: Phase, new: Phase) -> None:
        was_alive = old in (Phase.RUNNING, Phase.BLOCKED)
        if was_alive and new not in (Phase.RUNNING, Phase.BLOCKED):
            self.left_at[group.islands[0].index] = self.ctx.env.now
            # the round stops blocking on this learner once the timeout has passed
            self.ctx.env.timeout(self.training.round_timeout).callbacks.append(lambda _e: self._schedule_recompute())
        super()._phase_changed(group, old, new)

    def steady_state(self) -> dict[int, float]:
        now, alive = self.ctx.env.now, self.alive_now
        blocking = [
            g for g in self.groups
            if g not in alive and now - self.left_at.get(g.islands[0].index, -math.inf) < self.training.round_timeout
        ]
        if blocking:
            self.round_interval_s, self.members_per_round = math.inf, 0.0
            return {g.islands[0].index: math.inf for g in alive}
        walls = {}
        for group in alive:
            compute = group.compute_time_s()
            walls[group.islands[0].index] = compute + self.exposed_comm_s(group, compute)
        slowest = max(walls.values(), default=0.0)
        # lockstep rounds: every live learner in every round, at the pace of the slowest
        h = self.training.inner_steps
        per_round = h if self.comm_method == "diloco" else h // self.training.fragments
        self.round_interval_s = per_round * slowest if slowest > 0 else math.inf
        self.members_per_round = float(len(walls))
        return {index: slowest - wall for index, wall in walls.items()}


class StreamingDiLoCo(DiLoCo):
    comm_method = "streaming_diloco"


class DecoupledDiLoCo(OuterPolicy):
    comm_method = "streaming_diloco"
    has_syncer = True

    def __init__(self, ctx):
        super().__init__(ctx)
        t = self.training
        self.weighting = t.merge
        self.config = SyncConfig(
            quorum=t.quorum, grace_mode=t.grace.mode, gamma=t.grace.gamma, grace_fixed_s=t.grace.fixed,
            grace_max_s=t.grace.max, overlap_steps=t.overlap, merge=self.weighting,
        )
        # the synchronizer tracks step, quorum-wait and sync times by exponential moving averages; in a
        # steady state they settle on its values, across changes they smooth the grace window
        self.ema_step = self.ema_quorum = self.ema_sync = Ema(t.grace.ema_alpha)
        self.unmet = False
        self.last_reason = ""
        self.grace_s: list[float] = []

    def comm_link(self, group: Group) -> tuple[float, float]:
        return self.link_to(group, self.ctx.topology.syncer_region)

    def exposed_comm_s(self, group: Group, compute_s: float) -> float:
        # learner <-> synchronizer: a point-to-point exchange (two sites), whatever M is
        bandwidth, latency = self.comm_link(group)
        if bandwidth <= 0:
            return 0.0  # cut off from the synchronizer: it trains on locally, nothing leaves
        t = self.training
        return self.stall_s("streaming_diloco", compute_s, bandwidth, 2) + latency * t.fragments / t.inner_steps

    def traffic(self, group: Group) -> tuple[str, float]:
        """To and from the synchronizer: one fragment each way every H/P steps."""
        link, _ = self.ctx.topology.link_between(group.islands[0].region, self.ctx.topology.syncer_region)
        return link, 2 * self.params * self.training.bits / 8 / self.training.inner_steps

    def sync_time_s(self, group: Group) -> float:
        """Pull and broadcast of one fragment between a learner and the synchronizer."""
        bandwidth, latency = self.comm_link(group)
        bits = self.params * self.training.bits / self.training.fragments
        return math.inf if bandwidth <= 0 else 2 * bits / bandwidth + 2 * latency

    def own_step_s(self, group: Group) -> float:
        """A learner's step without protocol waits: compute plus exposed communication."""
        compute = group.compute_time_s()
        return compute + self.exposed_comm_s(group, compute)

    def reachable(self, group: Group) -> bool:
        """Whether the learner's link to the synchronizer carries anything now (not partitioned)."""
        return self.comm_link(group)[0] > 0

    def representative_round(self) -> tuple[Decision, dict[int, float], dict[int, float], float, float]:
        """decide() on one fragment round of the current steady state.

        Times are relative to the first report; learner m reports after its lag behind the fastest
        (its slot interval minus the fastest one's); the quorum is met at the K-th report, the round
        closes at the end of the grace window, or earlier when every reachable learner has reported
        (the fast path). Learners cut off from the synchronizer do not report. Returns the decision,
        the lags, each reporter's sync time, the closing time and the grace window.
        """
        t = self.training
        q = t.inner_steps // t.fragments
        reporting = [g for g in self.alive_now if self.reachable(g)]
        step = {g.islands[0].index: self.own_step_s(g) for g in reporting}
        sync = {g.islands[0].index: self.sync_time_s(g) for g in reporting}
        order = sorted(step, key=lambda i: (step[i], i))
        lag = {i: q * (step[i] - step[order[0]]) for i in order}
        k = t.quorum
        quorum_at = lag[order[k - 1]] if len(order) >= k else None
        if quorum_at is not None:
            self.ema_step = self.ema_step.update(step[order[k - 1]])
            self.ema_quorum = self.ema_quorum.update(quorum_at)
            self.ema_sync = self.ema_sync.update(max(sync.values()))
        emas = (self.ema_step.value_or(0.0), self.ema_quorum.value_or(0.0), self.ema_sync.value_or(0.0))
        silent = tuple(LearnerReport(g.islands[0].index, g.islands[0].index in step, False, 0, 0.0) for g in self.groups)
        grace = 0.0
        close = 0.0
        if quorum_at is not None:
            grace = grace_window_s(SyncView(quorum_at, 0, 0.0, quorum_at, silent, *emas), self.config)
            last = max(lag.values())
            close = max(quorum_at, last) if last <= quorum_at + grace else quorum_at + grace
        tokens = q * self.ctx.scenario.workload.tokens_per_step
        reports = tuple(
            LearnerReport(r.learner_id, r.alive, r.alive and lag[r.learner_id] <= close + 1e-12,
                          q if r.alive else 0, tokens if r.alive else 0.0)
            for r in silent
        )
        view = SyncView(close, 0, 0.0, quorum_at if quorum_at is not None else None, reports, *emas)
        return decide(close, view, self.config), lag, sync, close, grace

    def steady_state(self) -> dict[int, float]:
        alive = self.alive_now
        if not self.syncer_up:
            self.unmet = False
            return {g.islands[0].index: 0.0 for g in alive}
        decision, lag, sync, close, grace = self.representative_round()
        if decision.reason != self.last_reason:
            self.last_reason = decision.reason
            self.ctx.recorder.event(self.ctx.env.now, "sync_decision", "", "syncer", decision.reason)
        self.unmet = decision.action is Action.WAIT
        # learners cut off from the synchronizer train on locally and are merged when the link heals
        waits = {g.islands[0].index: 0.0 for g in alive}
        if self.unmet:
            self.round_interval_s, self.members_per_round, self.late = math.inf, 0.0, set()
            waits.update({index: math.inf for index in lag})
            return waits
        self.grace_s.append(grace)
        q = self.training.inner_steps // self.training.fragments
        step: dict[int, float] = {}
        for group in alive:
            index = group.islands[0].index
            if index not in lag:
                continue
            own_step = step[index] = self.own_step_s(group)
            if index in decision.members:
                back_at = close + sync[index]  # the merged fragment is back at the learner
                needed_at = lag[index] + self.training.overlap * own_step
                waits[index] = max(0.0, back_at - needed_at) / q
        # rounds of a fragment come at the pace of the K-th fastest learner's slots (waits included);
        # a slower learner reports in a share slot_K / slot_m of them (on time if within the window,
        # else late, contributing to the next round of that fragment)
        slots = {index: q * (step[index] + waits[index]) for index in lag}
        slot_k = sorted(slots.values())[self.training.quorum - 1]
        self.round_interval_s = slot_k  # one fragment round per slot
        self.members_per_round = sum(min(1.0, slot_k / slot) for slot in slots.values())
        self.late = set(slots) - set(decision.members)
        return waits

    def settle(self) -> None:
        if self.unmet:
            self.quorum_unmet_s += self.ctx.env.now - self._epoch_start
        super().settle()

    def members_and_weights(self, contributors: list[Group], elapsed_s: float) -> tuple[list[Group], list[float]]:
        contributors = sorted((g for g in contributors if self.reachable(g)), key=lambda g: g.islands[0].index)
        if not contributors:
            return [], []
        tokens_per_step = self.ctx.scenario.workload.tokens_per_step
        steps = [max(round(g.ledger.pending_steps), 1) for g in contributors]
        weights = token_weights(steps, [s * tokens_per_step for s in steps], self.weighting)
        return contributors, list(weights)

    def finish(self) -> None:
        super().finish()
        now = self.ctx.env.now
        for group in self.groups:
            if not self.reachable(group):
                group.ledger.rollback(now)  # still cut off at the end: that work was never merged

    def metrics(self, final: bool) -> dict:
        out = super().metrics(final)
        out["mean_grace_s"] = sum(self.grace_s) / len(self.grace_s) if self.grace_s else 0.0
        return out

