"""The DiLoCo family on the simulator: learners, outer rounds in fast-forward, rejoin, and metrics.

Each island is a learner (a :class:`~sim.learner.Group` of its own) that fails and recovers on its own
(``training.on_failure``). Between chaos events (a failure, repair, pause end, outage or link edge) the
system is in a steady state in which outer rounds repeat identically, so rounds are not played one by
one: an *epoch* process settles them in blocks. An epoch lasts the longer of H steps of the fastest
learner and 1/1000 of the run, and ends early at every change. Nothing measured depends on that
length: rounds, learners per merge and staleness follow the round cadence of the steady state, and a
restart loses only the work its learner's last rounds had not merged. At each epoch end it

* commits the compute of every learner whose work was merged (``useful``; under ``restart`` whatever
  is still unmerged at a failure is lost),
* advances the surrogate model (inner steps at ``surrogate.resolution``, then one merge per fragment
  with the epoch's contributors, weighted as the policy says), and records its evaluation loss,
* recomputes the steady state: per learner the seconds per step spent waiting (exposed
  communication from the bucketed-overlap model of :mod:`sim.bandwidth`, plus barrier, quorum and
  grace waits), which the learners' step model charges as ``waiting`` chip-time.

Subclasses say how members are weighted and how long learners wait (:meth:`steady_state`). An epoch
stands for many rounds: a learner that misses one round (it reported after the grace window) joins a
later one with larger counters, so every running learner's work in the epoch is merged, while the
per-round decision sets the waits, the quorum-unmet time and the learners per merge.
A learner that restarts pulls its state from a healthy peer (parameters and AdamW moments, 10 bytes
per parameter) as a real transfer on the fair-share WAN model (:mod:`sim.network`), so concurrent
rejoins over one link share it and a brownout slows them; its reload ends when both the reload time
and the transfer are done. Outer traffic is booked per link (bytes and utilisation over time).
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager

import numpy as np
import simpy

from ..bandwidth import exposed_comm_time_per_step
from ..context import RunContext
from ..learner import Group
from ..metrics import Phase
from ..network import Network
from .lockstep import base_step_time_s

STATE_BYTES_PER_PARAM = 10.0  # bf16 parameters + fp32 AdamW moments


class SurrogateDriver:
    """Turns simulated steps into surrogate steps at the scenario's resolution, within a budget."""

    def __init__(self, ctx: RunContext, n_learners: int, fragments: int):
        from ..surrogate import Surrogate

        cfg, training = ctx.scenario.surrogate, ctx.scenario.training
        self.ctx, self.cfg = ctx, cfg
        self.model = Surrogate(
            ctx.streams.get("surrogate"), n_learners, fragments, dim=cfg.dim, hidden=cfg.hidden,
            classes=cfg.classes, batch=cfg.batch, inner_lr=cfg.inner_lr, weight_decay=cfg.weight_decay,
            non_iid=cfg.non_iid, outer_lr=training.outer.lr, outer_momentum=training.outer.momentum,
            averaging=training.averaging,
        )
        self.carry = np.zeros(n_learners)
        self.done = np.zeros(n_learners, dtype=np.int64)
        self.eval_every_s = cfg.eval_every or ctx.scenario.duration / 200.0
        self.next_eval_s = 0.0
        self.wall_s = 0.0  # wall time spent in surrogate numerics (reported as surrogate_wall_s)

    @contextmanager
    def timed(self):
        start = time.perf_counter()
        try:
            yield self.model
        finally:
            self.wall_s += time.perf_counter() - start

    def steps_for(self, m: int, sim_steps: float) -> int:
        """Surrogate steps owed to learner m for ``sim_steps`` simulated steps (fractions carried over)."""
        budget = int(self.cfg.max_steps_per_learner * min(self.ctx.env.now / self.ctx.scenario.duration, 1.0))
        self.carry[m] += sim_steps * self.cfg.resolution
        n = min(int(self.carry[m]), max(budget - int(self.done[m]), 0))
        self.carry[m] -= int(self.carry[m])
        self.done[m] += n
        return n

    def record(self, key: str, tokens: float, force: bool = False) -> None:
        """Evaluate the global model, at most every ``eval_every`` of simulated time."""
        now = self.ctx.env.now
        if force or now >= self.next_eval_s:
            self.next_eval_s = now + self.eval_every_s
            with self.timed() as model:
                loss = model.eval_loss()
            self.ctx.recorder.point(now, "loss", key, loss, tokens)


class OuterPolicy(ABC):
    comm_method = "diloco"
    has_syncer = False  # peer all-reduce: no central synchronizer to lose

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.training = ctx.scenario.training
        self.params = ctx.scenario.workload.params
        self.groups: list[Group] = []
        self.wait_s: dict[int, float] = {}  # learner index -> waiting seconds per step (inf: blocked)
        self.merges = 0.0
        self.member_merges = 0.0
        self.rejoin_s: list[tuple[str, float]] = []  # (learner, seconds from reload start to training)
        self.quorum_unmet_s = 0.0
        self.syncer_outages = 0  # overlapping synchronizer outages in force
        self.surrogate: SurrogateDriver | None = None
        self.alive_now: list[Group] = []  # refreshed at every steady-state computation
        self._stall_cache: dict[tuple, float] = {}
        self._link_cache: dict[tuple[str, str], tuple[float, float]] = {}  # cleared on link changes
        self._ring_cache: dict[tuple[str, ...], tuple[float, float]] = {}  # cleared on any change
        self.round_interval_s = math.inf  # seconds between outer rounds (per fragment) in this state
        self.members_per_round = 0.0  # expected learners in one round in this state
        self.late: set[int] = set()  # learners whose reports miss the round they aim at (decoupled)
        self.stale_sum_s = 0.0
        self.stale_count = 0.0
        self._owed: dict[int, int] = {}  # learner index -> simulated steps merged but not yet given to the surrogate
        self.network = Network(ctx.env)
        for name, (bandwidth, latency) in ctx.links.nominal.items():
            self.network.add_link(name, bandwidth, latency)
        self.wan_bytes: dict[str, float] = dict.fromkeys(ctx.links.nominal, 0.0)
        self._window_bytes: dict[str, float] = dict.fromkeys(ctx.links.nominal, 0.0)
        self._window_start = 0.0
        self._reload_started: dict[int, float] = {}
        self._pending_recompute = False
        self._epoch_start = 0.0

    # ------------------------------------------------------------------------------- building

    def build(self) -> list[Group]:
        ctx, training = self.ctx, self.training
        for island in ctx.topology.islands:
            group = Group(
                ctx.env, island.name, [island], training, training.on_failure, self.step_times, ctx.recorder,
                None, base_step_time_s(ctx.scenario, island.peak_flops),
            )
            group.reload_transfer = self.pull_state_from_peer
            group.on_restart = self.restart_loss
            group.transfer_cancelled.append(self.network.cancel)
            group.listeners.append(self._phase_changed)
            self.groups.append(group)
            self.wait_s[island.index] = 0.0
        if ctx.scenario.surrogate.model != "off":
            self.surrogate = SurrogateDriver(ctx, len(self.groups), self.training.fragments)
        ctx.links.listeners.append(self._link_changed)
        self.process = ctx.env.process(self._epochs())
        return self.groups

    def attach(self, effects) -> None:
        effects.syncer_hooks.append(self._syncer_changed)

    # ------------------------------------------------------------------------------- step model

    def step_times(self, group: Group) -> tuple[float, float]:
        compute = group.compute_time_s()
        wait = self.wait_s[group.islands[0].index]
        if not math.isfinite(compute) or not math.isfinite(wait):
            return compute, math.inf
        return compute, self.exposed_comm_s(group, compute) + wait

    def link_to(self, group: Group, region: str) -> tuple[float, float]:
        """(bandwidth_bps, latency_s) now between the learner's region and ``region``."""
        key = (group.islands[0].region, region)
        if key not in self._link_cache:
            self._link_cache[key] = self.ctx.links.current(self.ctx.topology.link_between(*key)[0])
        return self._link_cache[key]

    def exposed_comm_s(self, group: Group, compute_s: float) -> float:
        """Stall per step from the outer communication (bucketed-overlap model) at the current WAN."""
        bandwidth, latency = self.comm_link(group)
        if bandwidth <= 0:
            return math.inf
        sites = max(2, len({g.islands[0].region for g in self.alive_now}))
        t = self.training
        stall = self.stall_s(self.comm_method, compute_s, bandwidth, sites)
        syncs_per_step = (t.fragments if self.comm_method == "streaming_diloco" else 1) / t.inner_steps
        return stall + latency * syncs_per_step

    def stall_s(self, method: str, compute_s: float, bandwidth_bps: float, sites: int) -> float:
        """Exposed communication per step (memoised: steady states repeat the same few arguments)."""
        key = (method, compute_s, bandwidth_bps, sites)
        if key not in self._stall_cache:
            t = self.training
            self._stall_cache[key] = exposed_comm_time_per_step(
                method, params=self.params, step_time_s=compute_s, bandwidth_bps=bandwidth_bps, sites=sites,
                inner_steps=t.inner_steps, fragments=t.fragments, overlap=t.overlap, bits=t.bits,
            )
        return self._stall_cache[key]

    def ring_regions(self, group: Group) -> list[str]:
        """Regions of the live learners (and this one), in topology order: the all-reduce ring."""
        present = {g.islands[0].region for g in self.alive_now} | {group.islands[0].region}
        return [r for r in self.ctx.topology.regions if r in present]

    def comm_link(self, group: Group) -> tuple[float, float]:
        """The slowest link of the all-reduce ring among the live learners' regions (cached per state)."""
        regions = tuple(self.ring_regions(group))
        if regions not in self._ring_cache:
            if len(regions) == 1:
                self._ring_cache[regions] = self.ctx.links.current(f"dcn:{regions[0]}")
            else:
                ring = [(regions[k], regions[(k + 1) % len(regions)]) for k in range(len(regions))]
                states = [self.ctx.links.current(self.ctx.topology.link_between(a, b)[0]) for a, b in ring]
                self._ring_cache[regions] = (min(st[0] for st in states), max(st[1] for st in states))
        return self._ring_cache[regions]

    # ------------------------------------------------------------------------------- membership

    def alive(self) -> list[Group]:
        """Learners that hold chips and are training or blocked by the outer protocol (not recovering)."""
        return [g for g in self.groups if g.active_chips > 0 and g.phase in (Phase.RUNNING, Phase.BLOCKED)
                and g.intent is Phase.RUNNING]

    def pull_state_from_peer(self, group: Group):
        """Start the transfer of a healthy peer's state to a rejoining learner (None: no peer alive).

        The peer is the one behind the fastest link now (ties: lowest index); the surrogate learner
        takes that peer's parameters and optimizer state.
        """
        peers = [g for g in self.alive() if g is not group]
        self._reload_started[group.islands[0].index] = self.ctx.env.now
        if not peers:
            return None
        peer = max(peers, key=lambda g: (self.link_to(group, g.islands[0].region)[0], -g.islands[0].index))
        link, _ = self.ctx.topology.link_between(group.islands[0].region, peer.islands[0].region)
        nbytes = self.params * STATE_BYTES_PER_PARAM
        self.wan_bytes[link] += nbytes
        self._window_bytes[link] += nbytes
        if self.surrogate is not None:
            self.surrogate.model.copy_learner(peer.islands[0].index, group.islands[0].index)
        return self.network.transfer(link, nbytes, tag=("rejoin", group.name))

    def restart_loss(self, group: Group) -> None:
        """A restarting learner loses only what no outer round has merged yet.

        Fragment p (of P, offsets p H / P; plain DiLoCo syncs everything at once: P = 1) was last synced
        ``(t - offset_p) mod H`` steps ago at the learner's step t; its share of the lost work is 1/P of
        that. Everything older was merged by rounds the epoch has not settled yet: it is committed.
        """
        now, ledger = self.ctx.env.now, group.ledger
        ledger.advance(now)
        h = self.training.inner_steps
        p = 1 if self.comm_method == "diloco" else self.training.fragments
        t = ledger.committed_steps + ledger.pending_steps
        unmerged = sum((t - k * h / p) % h for k in range(p)) / p
        if ledger.pending_steps > 0:
            ledger.rollback(now, min(unmerged / ledger.pending_steps, 1.0))
        self._commit_member(group, now)

    def _commit_member(self, group: Group, now: float) -> float:
        """Commit a learner's merged work (useful) and owe the surrogate its steps."""
        index = group.islands[0].index
        steps = group.ledger.commit(now)
        if self.surrogate is not None and steps > 0:
            self._owed[index] = self.surrogate.steps_for(index, steps) + self._owed.get(index, 0)
        return steps

    # ------------------------------------------------------------------------------- epochs

    def _phase_changed(self, group: Group, old: Phase, new: Phase) -> None:
        rejoining = group.islands[0].index in self._reload_started
        if rejoining and old in (Phase.RELOAD, Phase.UPSCALE) and new is not old and group.intent is Phase.RUNNING:
            self.rejoin_s.append((group.name, self.ctx.env.now - self._reload_started.pop(group.islands[0].index)))
        if old is not new:
            self._schedule_recompute()

    def _link_changed(self, link: str, bandwidth_bps: float, latency_s: float) -> None:
        self.network.set_capacity(link, bandwidth_bps)
        self.network.set_latency(link, latency_s)
        self._link_cache.clear()
        self._ring_cache.clear()
        self._schedule_recompute()

    def _syncer_changed(self, started: bool, fault: str) -> None:
        self.syncer_outages += 1 if started else -1
        self._schedule_recompute()

    @property
    def syncer_up(self) -> bool:
        return self.syncer_outages == 0

    def _schedule_recompute(self) -> None:
        # Listeners run inside a group's process, which must not interrupt itself: defer to a callback.
        if not self._pending_recompute:
            self._pending_recompute = True
            self.ctx.env.timeout(0).callbacks.append(lambda _e: self._interrupt_epoch())

    def _interrupt_epoch(self) -> None:
        self._pending_recompute = False
        if self.process.is_alive and self.process is not self.ctx.env.active_process:
            self.process.interrupt("change")

    def _epochs(self):
        env = self.ctx.env
        self._epoch_start = env.now
        self._apply_steady_state()
        while True:
            with contextlib.suppress(simpy.Interrupt):  # a change ends the epoch early
                yield env.timeout(self.epoch_length_s())
            self.settle()
            self._apply_steady_state()

    def epoch_length_s(self) -> float:
        alive = self.alive_now
        steps = [g.step_times() for g in alive]
        pace = min((c + w for c, w in steps if math.isfinite(c + w)), default=math.inf)
        floor = self.ctx.scenario.duration / 1000.0
        return max(self.training.inner_steps * pace if math.isfinite(pace) else floor, floor)

    def _apply_steady_state(self) -> None:
        self.alive_now = self.alive()
        self._ring_cache.clear()
        new = self.steady_state()
        for group in self.groups:
            index = group.islands[0].index
            value = new.get(index, 0.0)
            if value != self.wait_s[index]:
                self.wait_s[index] = value
                group.wake("outer protocol")
            elif group.phase is Phase.RUNNING and self._comm_changed(group):
                group.wake("communication re-timed")

    def _comm_changed(self, group: Group) -> bool:
        compute, comm = group.step_times()
        wall = compute + comm
        return math.isfinite(wall) and abs(group.ledger.steps_per_s * wall - 1.0) > 1e-12

    def settle(self) -> None:
        """Merge what the learners did since the last epoch: commit it, and advance the surrogate."""
        now = self.ctx.env.now
        elapsed = now - self._epoch_start
        self._epoch_start = now
        if elapsed <= 0:
            return
        if self.has_syncer and not self.syncer_up:
            return  # learners train on; their work is merged when the synchronizer is back
        contributors = []
        for group in self.groups:
            group.ledger.advance(now)
            if group.ledger.pending_steps > 0 and group.phase is Phase.RUNNING:
                contributors.append(group)
        members, weights = self.members_and_weights(contributors, elapsed)
        if not members:
            return
        for group in members:
            link, per_step = self.traffic(group)
            self.wan_bytes[link] += group.ledger.pending_steps * per_step
            self._window_bytes[link] += group.ledger.pending_steps * per_step
        self._record_utilisation(now)
        tokens_per_step = self.ctx.scenario.workload.tokens_per_step
        rounds = elapsed / self.round_interval_s if math.isfinite(self.round_interval_s) else 0.0
        self.merges += rounds
        self.member_merges += rounds * self.members_per_round
        h = self.training.inner_steps
        slots = h if self.comm_method == "diloco" else h // self.training.fragments
        for group in members:
            # each contribution was trained for H steps of this learner since it received the
            # fragment; a late one waits for the next round of that fragment as well
            wall = 1.0 / group.ledger.steps_per_s if group.ledger.steps_per_s > 0 else 0.0
            contributions = group.ledger.pending_steps / slots
            late_extra = self.round_interval_s * self.training.fragments if group.islands[0].index in self.late else 0.0
            if math.isfinite(late_extra) and contributions > 0:
                self.stale_sum_s += contributions * (h * wall + late_extra)
                self.stale_count += contributions
            self._commit_member(group, now)
        if self.surrogate is not None and sum(self._owed.values()) >= len(members):
            # a surrogate round once the members owe at least one surrogate step each on average,
            # so chaos events that cut epochs short do not multiply the (real) merges
            self.surrogate_round(members, weights)
            committed = sum(g.ledger.committed_steps for g in self.groups)
            self.surrogate.record(self.training.policy.value, committed * tokens_per_step)

    def surrogate_round(self, members: list[Group], weights: list[float]) -> None:
        """Inner steps owed to each member, then one merge of every fragment, broadcast to the living."""
        with self.surrogate.timed() as model:
            for index, n in self._owed.items():
                model.train(index, n)
            self._owed = {}
            ids = [g.islands[0].index for g in members]
            receivers = [g.islands[0].index for g in self.alive_now] or ids
            for p in range(self.training.fragments):
                model.merge_fragment(p, ids, weights)
                model.broadcast_fragment(p, receivers)

    def traffic(self, group: Group) -> tuple[str, float]:
        """The link a learner's outer traffic crosses and its bytes per inner step (sent + received).

        An all-reduce among M sites moves 2 (M-1)/M of the model per member per round, every H steps,
        on the member's link towards the next region of the ring.
        """
        regions = sorted({g.islands[0].region for g in self.alive_now} | {group.islands[0].region})
        here = regions.index(group.islands[0].region)
        link, _ = self.ctx.topology.link_between(regions[here], regions[(here + 1) % len(regions)])
        m = len(regions)
        model_bytes = self.params * self.training.bits / 8
        volume = 2 * (m - 1) / m * model_bytes if m > 1 else 0.0
        return link, volume / self.training.inner_steps

    def _record_utilisation(self, now: float) -> None:
        """Link utilisation (bits sent / capacity x time) over the last window, every 1/200 of the run."""
        window = now - self._window_start
        if window < self.ctx.scenario.duration / 200.0 and now < self.ctx.scenario.duration:
            return
        for link, nbytes in self._window_bytes.items():
            if nbytes > 0:
                capacity = self.ctx.links.current(link)[0]
                value = nbytes * 8 / (capacity * window) if capacity > 0 else 0.0
                self.ctx.recorder.point(now, "link_utilisation", link, value)
        self._window_bytes = dict.fromkeys(self._window_bytes, 0.0)
        self._window_start = now

    def members_and_weights(self, contributors: list[Group], elapsed_s: float) -> tuple[list[Group], list[float]]:
        """Every contributor, weighted uniformly (plain DiLoCo averages the pseudo-gradients)."""
        k = len(contributors)
        return contributors, [1.0 / k] * k if k else []

    @abstractmethod
    def steady_state(self) -> dict[int, float]:
        """Waiting seconds per step for each alive learner index (inf: blocked)."""

    # ------------------------------------------------------------------------------- results

    def finish(self) -> None:
        self.settle()
        if self.surrogate is not None:
            if any(self._owed.values()):
                members = [g for g in self.groups if g.islands[0].index in self._owed]
                self.surrogate_round(members, [1.0 / len(members)] * len(members))
            committed = sum(g.ledger.committed_steps for g in self.groups)
            self.surrogate.record(self.training.policy.value, committed * self.ctx.scenario.workload.tokens_per_step, True)

    def metrics(self, final: bool) -> dict:
        out = {
            "outer_rounds": self.merges,
            "mean_learners_per_merge": self.member_merges / self.merges if self.merges else 0.0,
            "mean_staleness_s": self.stale_sum_s / self.stale_count if self.stale_count else 0.0,
            "rejoins": len(self.rejoin_s),
            "mean_rejoin_s": float(np.mean([t for _, t in self.rejoin_s])) if self.rejoin_s else 0.0,
            "rejoin_s": {name: [t for n, t in self.rejoin_s if n == name] for name in sorted({n for n, _ in self.rejoin_s})},
            "quorum_unmet_s": self.quorum_unmet_s,
            "wan_bytes": sum(b for link, b in self.wan_bytes.items() if not link.startswith("dcn:")),
            "link_bytes": {link: b for link, b in self.wan_bytes.items() if b > 0},
        }
        if self.surrogate is not None:
            out["final_loss"] = self.surrogate.model.eval_loss()
            out["surrogate_wall_s"] = self.surrogate.wall_s
        return out
