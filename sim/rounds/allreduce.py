"""DiLoCo and Streaming DiLoCo, played round by round as all-reduces on the WAN ring.

Membership is lockstep. Learner m reports fragment p after its steps i with ``i mod H = t_p``
(``t_p = floor(p*H/P)``; plain DiLoCo is P = 1 with tau = 0: it blocks right after step H until the
round is done). The round (p, i) starts its all-reduce once every learner it expects has reported:
the alive learners that joined before step i and have not passed it, and a learner that went down
until ``training.round_timeout`` after it left (then it is dropped; one that comes back past step i
is not waited for). So the slowest learner paces everyone, and a learner that goes down blocks the
round until the timeout drops it.

The all-reduce is a bandwidth-optimal ring among the members in topology order: each member sends
``2 (M-1)/M`` of the fragment to the next over the channel between their regions (all at once, so
they share links with everything else in flight), and the round pays ``2 (M-1)`` latencies of its
slowest ring channel in all. Uncontended, that is the closed form of
:meth:`sim.context.LinkState.ring_allreduce_s`. A member that fails during the all-reduce is dropped
and the all-reduce starts over among the others. When it ends every member has the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..scenario import Policy
from .engine import Learner, Report, RoundEngine


@dataclass(eq=False)
class RingRound:
    fragment: int
    step: int
    opened_s: float
    reports: dict[int, Report] = field(default_factory=dict)
    reducing: bool = False
    flows: dict = field(default_factory=dict)  # transfer event -> sending member
    attempt: int = 0  # an all-reduce started over ignores the transfers of the earlier attempt
    extra_latency_s: float = 0.0


class AllReduceRounds(RoundEngine):
    def __init__(self, ctx, groups, wait_s, surrogate=None):
        super().__init__(ctx, groups, wait_s, surrogate)
        self.timeout_s = self.training.round_timeout
        self.rounds: dict[tuple[int, int], RingRound] = {}

    @classmethod
    def fragment_count(cls, training) -> int:
        return 1 if training.policy is Policy.DILOCO else training.fragments

    def _overlap_steps(self) -> int:
        return 0 if self.training.policy is Policy.DILOCO else self.training.overlap

    # ------------------------------------------------------------------------- reports

    def on_step(self, ls: Learner, step: int, now: float) -> None:
        p = self.fragment_at[step % self.inner_steps]
        if p in ls.in_flight:
            return  # its previous round of p is not back yet: its counters ride on the next one
        rnd = self.rounds.get((p, step))
        if rnd is None:
            rnd = self.rounds[(p, step)] = RingRound(p, step, now)
        rep = self.snapshot(ls, p, step, now, rnd)
        rnd.reports[ls.index] = rep
        self.track(ls, rep)
        self._check(rnd)

    def _expected(self, rnd: RingRound, ls: Learner, now: float) -> bool:
        if ls.index in rnd.reports or ls.join_mark >= rnd.step:
            return False
        if ls.alive:
            ls.clock.settle(now)
            return ls.clock.steps <= rnd.step
        return now < ls.left_s + self.timeout_s

    def _check(self, rnd: RingRound) -> None:
        if rnd.reducing:
            return
        now = self.env.now
        if not rnd.reports or any(self._expected(rnd, ls, now) for ls in self.learners):
            return
        self._start(rnd)

    def _check_all(self) -> None:
        for rnd in list(self.rounds.values()):
            self._check(rnd)

    # ------------------------------------------------------------------------- the ring

    def _start(self, rnd: RingRound) -> None:
        rnd.reducing = True
        rnd.attempt += 1
        members = sorted(rnd.reports)
        m = len(members)
        if m == 1:
            self._complete(rnd)
            return
        nbytes = 2 * (m - 1) / m * self.fragment_bytes
        latency = 0.0
        for i, index in enumerate(members):
            src, dst = self.learners[index], self.learners[members[(i + 1) % m]]
            transfer = self.channels.send(src.region, dst.region, nbytes)
            latency = max(latency, self.channels.network.stats(self.channels.channel(src.region, dst.region)).latency_s)
            rnd.flows[transfer] = index
            attempt = rnd.attempt
            transfer.callbacks.append(lambda ev, attempt=attempt: self._flow_done(rnd, ev, attempt))
        rnd.extra_latency_s = (2 * (m - 1) - 1) * latency  # the transfers pay one latency each

    def _flow_done(self, rnd: RingRound, transfer, attempt: int) -> None:
        if attempt != rnd.attempt:
            return
        rnd.flows.pop(transfer, None)
        if not rnd.flows:
            self.env.timeout(rnd.extra_latency_s).callbacks.append(
                lambda _e: attempt == rnd.attempt and self._complete(rnd))

    def _complete(self, rnd: RingRound) -> None:
        self.rounds.pop((rnd.fragment, rnd.step), None)
        members = tuple(sorted(rnd.reports))
        weights = tuple(1.0 / len(members) for _ in members)
        self.merged(rnd.fragment, rnd.reports, weights, rnd.opened_s, rnd.opened_s, "all-reduce")
        for index in members:
            self.result_arrived(rnd.reports[index])

    # ------------------------------------------------------------------------- membership

    def member_left(self, ls: Learner) -> None:
        for rnd in list(self.rounds.values()):
            rep = rnd.reports.pop(ls.index, None)
            if rep is None:
                continue
            self.release(rep)
            if rnd.reducing:
                for transfer in rnd.flows:
                    self.channels.cancel(transfer)
                rnd.flows.clear()
                rnd.reducing = False
                rnd.attempt += 1
            if not rnd.reports:
                del self.rounds[(rnd.fragment, rnd.step)]
        # the rounds stop waiting for it once the timeout has passed
        self.env.timeout(self.timeout_s).callbacks.append(lambda _e: self._check_all())
        self._check_all()

    def member_returned(self, ls: Learner) -> None:
        self._check_all()
