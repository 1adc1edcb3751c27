"""The DiLoCo family on the simulator: one learner per island, outer rounds played by the round engine.

Each island is a learner (a :class:`~sim.learner.Group` of its own) that fails and recovers on its own
(``training.on_failure``). Its steps take their compute time; it never waits by formula. It waits
(phase ``blocked``, chip-time ``waiting``) only when the round engine says so: the result of a report
is not back within the overlap bound, because the round is short of quorum, a slower learner has not
reported, or the transfers are still crossing the WAN. What a round is and how it is played lives in
:mod:`sim.rounds`; this module wires the groups, the engine and the surrogate together and reports
the engine's metrics.

The surrogate (:class:`SurrogateDriver`) sees every round played (DESIGN.md, "Surrogate training"):

* a learner's surrogate runs the inner steps it owes (``surrogate.resolution`` surrogate steps per
  simulated step, within ``max_steps_per_learner``) when its parameters are next looked at;
* its **report** of fragment p snapshots theta_{m,p} at the report's step: that is what the round pulls;
* a merged round merges fragment p with exactly the round's members and token weights; each member's
  outer gradient is Theta_p - snapshot_{m,p}, anchored at the synchronizer's Theta_p before the
  merge as published (``training.outer.anchor: synchronizer``), or anchor_{m,p} - snapshot_{m,p}, its
  own progress since it last received p (``received``); RDA or mean, outer Nesterov on Theta_p;
* the result is applied when the member applies it (``training.apply``): ``keep_local`` keeps the
  steps taken since the report, ``overwrite`` discards them; a member whose result is lost keeps its
  parameters and counts only its progress since the snapshot next time;
* a rejoiner takes a peer's parameters, AdamW state and anchors (or Theta without a live peer).

Round resolution: a round is merged only when every member has trained at least H surrogate steps
since it last received p (the outer optimizer's cadence, as published); otherwise it is skipped
**whole** (its members carry their progress, as a non-member does), never merged with other members.
``surrogate.log_rounds`` writes what the surrogate did with each round (``surrogate_merges.parquet``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..context import RunContext
from ..learner import Group
from .lockstep import base_step_time_s


@dataclass(slots=True, eq=False)
class FragmentSnapshot:
    """A learner's fragment as reported (what the synchronizer pulls), and the round's result once merged."""

    values: np.ndarray
    fresh: int  # surrogate steps it had trained since it last received the fragment, at the report
    result: np.ndarray | None = None


class SurrogateDriver:
    """Turns simulated steps into surrogate steps at the scenario's resolution, and plays merges."""

    def __init__(self, ctx: RunContext, n_learners: int, fragments: int, tokens_fn=None):
        from ..surrogate import Surrogate

        cfg, training = ctx.scenario.surrogate, ctx.scenario.training
        self.ctx, self.cfg, self.tokens_fn = ctx, cfg, tokens_fn
        self.model = Surrogate(
            ctx.streams.get("surrogate"), n_learners, fragments, task=cfg.model, dim=cfg.dim, hidden=cfg.hidden,
            classes=cfg.classes, vocab=cfg.vocab, components=cfg.components, drift_steps=cfg.drift_steps,
            batch=cfg.batch, inner_lr=cfg.inner_lr, weight_decay=cfg.weight_decay,
            non_iid=cfg.non_iid, outer_lr=training.outer.lr, outer_momentum=training.outer.momentum,
            averaging=training.averaging, bits=training.bits,
        )
        # what each learner last received of the global model: with training.outer.anchor: received its
        # outer gradient is measured from there (its progress since it received Theta_p); as published
        # (synchronizer) it is measured from the synchronizer's Theta_p before the merge
        self.anchor_received = training.outer.anchor == "received"
        self.anchor = np.repeat(self.model.theta[None, :], n_learners, axis=0)
        self.carry = np.zeros(n_learners)
        self.done = np.zeros(n_learners, dtype=np.int64)
        # surrogate steps each learner has trained since it last received fragment p: a round of p is
        # merged once every member has trained H of them (the outer optimizer's cadence, as published)
        self.fresh = np.zeros((n_learners, fragments), dtype=np.int64)
        self.inner_per_merge = training.inner_steps
        self.merges = self.skipped = 0
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

    def train_owed(self, m: int, sim_steps: float) -> None:
        n = self.steps_for(m, sim_steps)
        if n > 0:
            with self.timed() as model:
                model.train(m, n)
            self.fresh[m, :] += n

    def report(self, m: int, p: int) -> FragmentSnapshot:
        """Learner m reports fragment p: the synchronizer will pull these values (once trained to the report)."""
        sl = self.model.fragment_slices[p]
        return FragmentSnapshot(self.model.params[m, sl].copy(), int(self.fresh[m, p]))

    def merge(self, round_id: int, p: int, members: tuple[int, ...], weights: tuple[float, ...],
              snaps: list[FragmentSnapshot]) -> None:
        """One played round of p: merged with exactly its members and weights, or skipped whole."""
        merged = all(snap.fresh >= self.inner_per_merge for snap in snaps)
        self.ctx.recorder.surrogate_merge(round_id, p, members, weights, merged)
        if not merged:
            self.skipped += 1
            return
        ids = list(members)
        with self.timed() as model:
            sl = model.fragment_slices[p]
            pulled = np.stack([snap.values for snap in snaps])  # outer gradients Theta_p - snapshot_m,p
            if self.anchor_received:
                # Theta_p - pulled = anchor_m,p - snapshot_m,p: each member's own progress since it received p
                pulled += model.theta[sl] - self.anchor[ids, sl]
            result = model.merge_fragment(p, ids, weights, pulled=pulled)
        for snap in snaps:
            snap.result = result
        self.merges += 1
        self.record(self.ctx.scenario.training.policy.value, self.tokens_fn())

    def apply(self, m: int, p: int, snap: FragmentSnapshot, overwrite: bool) -> None:
        """The merged Theta_p reaches learner m (``training.apply``): ``keep_local`` keeps the steps it took
        since the report (theta = Theta_p + theta - snapshot), ``overwrite`` discards them."""
        with self.timed() as model:
            sl = model.fragment_slices[p]
            if overwrite:
                model.params[m, sl] = snap.result
                self.fresh[m, p] = 0
            else:
                model.params[m, sl] += snap.result - snap.values
                self.fresh[m, p] -= snap.fresh  # what it trained since the report is not merged yet
            self.anchor[m, sl] = snap.result

    def result_lost(self, m: int, p: int, snap: FragmentSnapshot) -> None:
        """A merged report whose result never reaches learner m: what it reported is in Theta_p already,
        so its next outer gradient starts from the snapshot (counted once, not twice)."""
        sl = self.model.fragment_slices[p]
        self.anchor[m, sl] = snap.values
        self.fresh[m, p] -= snap.fresh

    def copy_learner(self, src: int, dst: int) -> None:
        with self.timed() as model:
            model.copy_learner(src, dst)
        self.anchor[dst] = self.anchor[src]
        self.fresh[dst] = self.fresh[src]

    def adopt_global(self, m: int) -> None:
        """Learner m restarts without a live peer: from the synchronizer's Theta, fresh AdamW state."""
        model = self.model
        model.params[m] = model.theta
        model.adam_m[m] = 0.0
        model.adam_v[m] = 0.0
        model.steps[m] = 0
        self.anchor[m] = model.theta
        self.fresh[m] = 0

    def record(self, key: str, tokens: float, force: bool = False) -> None:
        """Evaluate the global model, at most every ``eval_every`` of simulated time."""
        now = self.ctx.env.now
        if force or now >= self.next_eval_s:
            self.next_eval_s = now + self.eval_every_s
            with self.timed() as model:
                loss = model.eval_loss()
            self.ctx.recorder.point(now, "loss", key, loss, tokens)


class OuterPolicy:
    """Builds one learner group per island and the round engine that plays their outer rounds."""

    engine_class: type  # a sim.rounds engine

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.training = ctx.scenario.training
        self.groups: list[Group] = []
        self.wait_s: dict[int, float] = {}  # learner index -> 0, or inf while the engine blocks it
        self.surrogate: SurrogateDriver | None = None
        self.engine = None

    def build(self) -> list[Group]:
        ctx, training = self.ctx, self.training
        for island in ctx.topology.islands:
            group = Group(
                ctx.env, island.name, [island], training, training.on_failure, self.step_times, ctx.recorder,
                None, base_step_time_s(ctx.scenario, island.peak_flops),
            )
            self.groups.append(group)
            self.wait_s[island.index] = 0.0
        if ctx.scenario.surrogate.model != "off":
            tokens_per_step = ctx.scenario.workload.tokens_per_step
            self.surrogate = SurrogateDriver(
                ctx, len(self.groups), self.engine_class.fragment_count(training),
                lambda: sum(g.ledger.committed_steps for g in self.groups) * tokens_per_step,
            )
        self.engine = self.engine_class(ctx, self.groups, self.wait_s, self.surrogate)
        return self.groups

    def attach(self, effects) -> None:
        if hasattr(self.engine, "attach"):
            self.engine.attach(effects)

    def step_times(self, group: Group) -> tuple[float, float]:
        """(compute, wait) of one step: the wait is 0, or infinite while the round engine blocks it."""
        return group.compute_time_s(), self.wait_s[group.islands[0].index]

    def finish(self) -> None:
        self.engine.finish()
        if self.surrogate is not None:
            self.surrogate.record(self.training.policy.value, self.surrogate.tokens_fn(), force=True)

    def metrics(self, final: bool) -> dict:
        out = self.engine.metrics()
        if self.surrogate is not None:
            out["final_loss"] = self.surrogate.model.eval_loss()
            out["surrogate_wall_s"] = self.surrogate.wall_s
            out["surrogate_merges"] = self.surrogate.merges
            out["surrogate_rounds_skipped"] = self.surrogate.skipped
        return out
