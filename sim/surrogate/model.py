"""The ``Surrogate``: real parameters for every learner and for the synchronizer, and the DiLoCo numerics.

The simulator owns time: it decides when a learner runs inner steps, when a fragment is pulled and
merged, with which members and weights, and when the result reaches which learner. This class owns the
numbers those decisions act on:

* global parameters Theta (the synchronizer's copy) and one outer Nesterov momentum buffer per fragment
  (stored as one flat vector, so fragment p's momentum is ``outer_velocity[fragment_slices[p]]``);
* per-learner parameters theta_m with their AdamW state and step count, and a per-learner minibatch
  stream over the learner's own shard of the task;
* an AdamW state for Theta itself, used only by the data-parallel baseline (``train_data_parallel``).

Outer step for fragment p (DiLoCo Alg. 1; Decoupled DiLoCo Alg. 2, anchored at the syncer's own copy)::

    delta_m = Q_b(Theta_p - theta_{m,p})                 for each merged member m
    delta   = Merge_w(delta_m)                           weighted mean or RDA, weights normalised
    v_p     = mu * v_p + delta
    Theta_p = Theta_p - lr * (delta + mu * v_p)          torch SGD(nesterov=True), lr 0.7, mu 0.9

Q_b quantises each member's outer gradient of the fragment to ``bits`` per value as it would cross the
wire (``kernels.quantize``: per-fragment absmax with 2^(b-1)-1 levels a side, scaled sign for b = 1,
unchanged for b >= 16), so the bits that save bandwidth also cost the quality they cost.

Learners receiving the result overwrite theta_{m,p} (or mix it in, Streaming-DiLoCo style) and keep their
AdamW state. Everything random derives from the generator passed to the constructor, so a seed fixes the
whole trajectory; minibatches are drawn from per-learner streams as uniform floats (a fixed number per
sample), so ``train(m, 10)`` equals ten calls of ``train(m, 1)``.

Tasks. What the parameters mean is the task's business (``mlp``: a classifier on a stationary
Gaussian mixture; ``markov``: a bigram model on drifting Markov text). A task supplies ``n_params``,
``init_params(rng)``, ``draw(rng, m, phases)`` (learner m's minibatches, one per phase),
``train(...)`` (fused AdamW steps on them) and ``evaluate(params, phase)``; everything above works
on the flat vector whatever the task.

Phase. A drifting task needs the data's time. The surrogate has no clock, so it counts training
progress: the *frontier* is the most steps any learner (or the data-parallel model) has trained, which
grows with simulated time as the fastest live learner trains. A learner's step reads data at its own
step count but never behind the frontier (a slow or rejoining learner reads today's data, not the
past), and the held-out loss is measured at the frontier. ``copy_learner`` copies the step count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels as K
from .markov import MarkovTask
from .mlp import MLPTask

AVERAGING = ("rda", "mean")
TASKS = ("mlp", "markov")
SAMPLES_PER_DRAW = 1 << 20  # samples one draw of minibatches may hold: 16 MB (mlp) or 48 MB (markov)


@dataclass(frozen=True, eq=False)
class LearnerSnapshot:
    """A learner's checkpoint: parameters, AdamW state, step count and data-stream position."""

    params: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    steps: int
    rng_state: dict[str, Any]


@dataclass(frozen=True, eq=False)
class GlobalSnapshot:
    """The synchronizer's checkpoint: Theta, outer momentum, the data-parallel AdamW state and every
    learner's data-stream position (data-parallel steps draw from all members' streams)."""

    theta: np.ndarray
    outer_velocity: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    steps: int
    rng_states: tuple[dict[str, Any], ...]


def balanced_slices(n: int, parts: int) -> tuple[slice, ...]:
    """``parts`` contiguous slices covering ``range(n)`` whose lengths differ by at most one."""
    if not 1 <= parts <= n:
        raise ValueError(f"need 1 <= parts <= {n}, got {parts}")
    bounds = [(n * p) // parts for p in range(parts + 1)]
    return tuple(slice(bounds[p], bounds[p + 1]) for p in range(parts))


class Surrogate:
    """A small model trained by ``n_learners`` learners on sharded synthetic data; see the module doc.

    Args:
        rng: the only source of randomness (data, initialisation, minibatch streams are spawned from it).
        n_learners: M, number of learners (islands); learner ids are ``0..M-1``.
        fragments: P, number of balanced contiguous fragments of the flat parameter vector.
        task: ``"mlp"`` (``mlp.MLPTask``) or ``"markov"`` (``markov.MarkovTask``).
        dim, hidden, classes: mlp: sizes ``dim -> hidden (ReLU) -> classes``; layout in ``kernels``.
        vocab, components, drift_steps: markov: vocabulary, text sources, steps per key of the drift.
        batch: samples per inner step per learner (``tokens_per_step``).
        inner_lr, beta1, beta2, eps, weight_decay: inner AdamW (also used by ``train_data_parallel``).
        outer_lr, outer_momentum: outer Nesterov SGD (DiLoCo defaults 0.7 / 0.9).
        averaging: ``"rda"`` (radial-directional) or ``"mean"`` (weighted mean) merge of outer gradients.
        bits: bits per value of the outer gradients merged (``kernels.quantize``; >= 16: unquantised).
        non_iid: how far the learners' shards differ (both tasks; 0: IID).
        samples_per_learner, eval_samples, clusters_per_class, noise, separation: mlp: the synthetic
            data, see ``data.make_dataset``.

    Public state (NumPy arrays, mutate only through the methods): ``theta`` (Theta, shape (n,)),
    ``outer_velocity`` (n,), ``params``/``adam_m``/``adam_v`` (M, n), ``steps`` (M,) AdamW step counts,
    ``fragment_slices`` (P slices), ``task`` (the task object, e.g. ``task.data`` of the mlp).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        n_learners: int,
        fragments: int = 1,
        *,
        task: str = "mlp",
        dim: int = 16,
        hidden: int = 32,
        classes: int = 8,
        batch: int = 16,
        inner_lr: float = 2e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        outer_lr: float = 0.7,
        outer_momentum: float = 0.9,
        averaging: str = "rda",
        bits: int = K.FULL_PRECISION_BITS,
        non_iid: float = 0.5,
        samples_per_learner: int = 2048,
        eval_samples: int = 4096,
        clusters_per_class: int = 4,
        noise: float = 0.8,
        separation: float = 4.0,
        vocab: int = 32,
        components: int = 4,
        drift_steps: int = 1000,
    ):
        if averaging not in AVERAGING:
            raise ValueError(f"averaging must be one of {AVERAGING}, got {averaging!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if batch < 1:
            raise ValueError("need batch >= 1")
        if bits < 1:
            raise ValueError(f"bits must be >= 1, got {bits}")
        # Independent child streams: data, init, then one minibatch stream per learner.
        data_rng, init_rng, *learner_rngs = rng.spawn(2 + n_learners)
        if task == "mlp":
            self.task = MLPTask(data_rng, n_learners, batch, dim=dim, hidden=hidden, classes=classes,
                                non_iid=non_iid, samples_per_learner=samples_per_learner,
                                eval_samples=eval_samples, clusters_per_class=clusters_per_class,
                                noise=noise, separation=separation)
        else:
            self.task = MarkovTask(data_rng, n_learners, batch, vocab=vocab, components=components,
                                   drift_steps=drift_steps, non_iid=non_iid)
        self.n_learners, self.batch = n_learners, batch
        self.inner_lr, self.beta1, self.beta2, self.eps = inner_lr, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.outer_lr, self.outer_momentum, self.averaging = outer_lr, outer_momentum, averaging
        self.bits = bits
        self.n_params = self.task.n_params
        self.fragment_slices = balanced_slices(self.n_params, fragments)

        self.theta = self.task.init_params(init_rng)
        self.outer_velocity = np.zeros(self.n_params)
        # Learners start from Theta, as every DiLoCo replica starts from the same initialisation.
        self.params = np.tile(self.theta, (n_learners, 1))  # row m is theta_m
        self.adam_m = np.zeros((n_learners, self.n_params))
        self.adam_v = np.zeros((n_learners, self.n_params))
        self.steps = np.zeros(n_learners, dtype=np.int64)
        self._rngs = learner_rngs
        # AdamW state of Theta for the data-parallel baseline.
        self.dp_adam_m = np.zeros(self.n_params)
        self.dp_adam_v = np.zeros(self.n_params)
        self.dp_steps = 0
        self._grad = np.empty(self.n_params)  # scratch shared by all kernels (single-threaded use)
        longest = max(s.stop - s.start for s in self.fragment_slices)
        self._deltas = np.empty(n_learners * longest)  # outer-gradient scratch, reshaped per fragment

    # ------------------------------------------------------------------ setup helpers
    @property
    def fragments(self) -> int:
        return len(self.fragment_slices)

    @property
    def tokens_per_step(self) -> int:
        """Samples one learner consumes per inner step (the simulator's token counter)."""
        return self.batch

    def _members(self, members: Sequence[int], allow_empty: bool = False) -> np.ndarray:
        idx = np.asarray(members, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            if allow_empty:
                return idx
            raise ValueError("need at least one member")
        if idx.min() < 0 or idx.max() >= self.n_learners or np.unique(idx).size != idx.size:
            raise ValueError(f"members must be distinct learner ids in [0, {self.n_learners}), got {members}")
        return idx

    @staticmethod
    def _weights(weights: Sequence[float] | None, k: int) -> np.ndarray:
        if weights is None:
            return np.ones(k)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != k:
            raise ValueError(f"got {w.size} weights for {k} members")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all zero, got {weights}")
        return w

    @property
    def frontier(self) -> int:
        """The most steps any learner (or the data-parallel model) has trained: the data's present."""
        return max(int(self.steps.max()), self.dp_steps)

    def _phases(self, steps_done: int, n_steps: int) -> np.ndarray:
        """Data phase of each of the next ``n_steps`` steps of a model that has trained ``steps_done``:
        its own count, but never behind the frontier (a lagging learner reads today's data)."""
        return np.maximum(self.frontier, steps_done + np.arange(n_steps, dtype=np.int64))

    # ------------------------------------------------------------------ inner training
    def train(self, m: int, n_steps: int) -> float:
        """``n_steps`` inner AdamW steps of learner m on its shard; returns their mean training loss."""
        if n_steps <= 0:
            return float("nan")
        losses = []
        for n in self._chunks(n_steps, self.batch):
            samples = self.task.draw(self._rngs[m], m, self._phases(int(self.steps[m]), n))
            losses.append((n, self.task.train(self.params[m], self.adam_m[m], self.adam_v[m], int(self.steps[m]),
                                              samples, self.inner_lr, self.beta1, self.beta2, self.eps,
                                              self.weight_decay, self._grad)))
            self.steps[m] += n
        return float(self._mean_loss(losses))

    def train_data_parallel(self, n_steps: int, members: Sequence[int] | None = None) -> float:
        """Lockstep data parallelism on Theta: each step averages the gradient over one minibatch from each
        member's shard (drawn from that member's stream), then one AdamW step with the DP state.

        With M members this consumes M * batch samples per step, the same as one inner step on each of M
        DiLoCo learners, so equal steps here mean equal tokens there. Returns the mean training loss."""
        idx = self._members(range(self.n_learners) if members is None else members)
        if n_steps <= 0:
            return float("nan")
        losses = []
        for n in self._chunks(n_steps, self.batch * len(idx)):
            phases = self._phases(self.dp_steps, n)
            samples = np.concatenate([self.task.draw(self._rngs[m], int(m), phases) for m in idx], axis=1)
            losses.append((n, self.task.train(self.theta, self.dp_adam_m, self.dp_adam_v, self.dp_steps,
                                              np.ascontiguousarray(samples), self.inner_lr, self.beta1, self.beta2,
                                              self.eps, self.weight_decay, self._grad)))
            self.dp_steps += n
        return float(self._mean_loss(losses))

    @staticmethod
    def _mean_loss(losses: list[tuple[int, float]]) -> float:
        """Mean loss over the steps of split draws: each draw's mean, weighted by its steps."""
        if len(losses) == 1:
            return losses[0][1]
        return math.fsum(n * loss for n, loss in losses) / sum(n for n, _ in losses)

    @staticmethod
    def _chunks(n_steps: int, samples_per_step: int) -> list[int]:
        """``n_steps`` split so one draw holds at most :data:`SAMPLES_PER_DRAW` samples (at least one step).

        The streams are chunking-invariant and a step's data phase does not depend on the split, so
        the steps are the same however they are split; only the memory of one draw is bounded."""
        per = max(1, SAMPLES_PER_DRAW // samples_per_step)
        return [per] * (n_steps // per) + ([n_steps % per] if n_steps % per else [])

    # ------------------------------------------------------------------ synchronisation
    def pull_fragment(self, p: int, members: Sequence[int]) -> np.ndarray:
        """Copies of theta_{m,p} for ``members`` (k, len_p): what the syncer fetched, for a later merge."""
        s = self.fragment_slices[p]
        return self.params[self._members(members), s].copy()

    def merge_fragment(self, p: int, members: Sequence[int], weights: Sequence[float] | None = None,
                       pulled: np.ndarray | None = None, averaging: str | None = None) -> np.ndarray:
        """Outer step on Theta_p from the members' quantised outer gradients; returns a copy of Theta_p.

        ``weights`` (default uniform) are normalised here. ``pulled`` are fragments captured earlier by
        ``pull_fragment`` (same member order); by default the members' current theta_{m,p} are used.
        ``averaging`` overrides the constructor's rule for this fragment (the paper averages the embedding
        fragment plainly and uses RDA elsewhere)."""
        averaging = self.averaging if averaging is None else averaging
        if averaging not in AVERAGING:
            raise ValueError(f"averaging must be one of {AVERAGING}, got {averaging!r}")
        idx = self._members(members)
        w = self._weights(weights, idx.size)
        s = self.fragment_slices[p]
        lo, hi = s.start, s.stop
        deltas = self._deltas[: idx.size * (hi - lo)].reshape(idx.size, hi - lo)  # C-contiguous rows
        if pulled is None:
            K.outer_gradients(self.theta, self.params, idx, lo, hi, deltas)
        else:
            pulled = np.asarray(pulled, dtype=np.float64)
            if pulled.shape != (idx.size, hi - lo):
                raise ValueError(f"pulled has shape {pulled.shape}, expected {(idx.size, hi - lo)}")
            np.subtract(self.theta[s], pulled, out=deltas)
        K.quantize(deltas, self.bits)
        delta = np.empty(hi - lo)
        (K.rda if averaging == "rda" else K.weighted_mean)(deltas, w, delta)
        K.nesterov_step(self.theta[s], self.outer_velocity[s], delta, self.outer_lr, self.outer_momentum)
        return self.theta[s].copy()

    def broadcast_fragment(self, p: int, learners: Sequence[int], values: np.ndarray | None = None,
                           local_weight: float = 0.0) -> None:
        """theta_{m,p} <- local_weight * theta_{m,p} + (1 - local_weight) * values, for each learner.

        ``values`` defaults to the current Theta_p (pass what ``merge_fragment`` returned to deliver an
        older result). ``local_weight = 0`` is the Decoupled-DiLoCo overwrite; Streaming DiLoCo mixes with
        0.5. AdamW state is kept, as in DiLoCo."""
        s = self.fragment_slices[p]
        src = self.theta[s] if values is None else np.asarray(values, dtype=np.float64)
        if src.shape != (s.stop - s.start,):
            raise ValueError(f"values has shape {src.shape}, expected {(s.stop - s.start,)}")
        idx = self._members(learners, allow_empty=True)
        if local_weight == 0.0:
            self.params[idx, s] = src
        else:
            self.params[idx, s] = local_weight * self.params[idx, s] + (1.0 - local_weight) * src

    def merge_all(self, members: Sequence[int], weights: Sequence[float] | None = None) -> None:
        """Plain DiLoCo outer step: every fragment merged with the same members and weights."""
        for p in range(self.fragments):
            self.merge_fragment(p, members, weights)

    def broadcast_all(self, learners: Sequence[int]) -> None:
        """theta_m <- Theta for the given learners (AdamW state kept)."""
        for p in range(self.fragments):
            self.broadcast_fragment(p, learners)

    # ------------------------------------------------------------------ recovery and rollback
    def copy_learner(self, src: int, dst: int) -> None:
        """A recovering learner pulls parameters, AdamW state and step count from a healthy peer (its own
        data stream stays its own)."""
        self.params[dst] = self.params[src]
        self.adam_m[dst] = self.adam_m[src]
        self.adam_v[dst] = self.adam_v[src]
        self.steps[dst] = self.steps[src]

    def snapshot(self, m: int) -> LearnerSnapshot:
        return LearnerSnapshot(self.params[m].copy(), self.adam_m[m].copy(), self.adam_v[m].copy(),
                               int(self.steps[m]), self._rngs[m].bit_generator.state)

    def restore(self, m: int, snap: LearnerSnapshot) -> None:
        self.params[m] = snap.params
        self.adam_m[m] = snap.adam_m
        self.adam_v[m] = snap.adam_v
        self.steps[m] = snap.steps
        self._rngs[m].bit_generator.state = snap.rng_state

    def snapshot_global(self) -> GlobalSnapshot:
        return GlobalSnapshot(self.theta.copy(), self.outer_velocity.copy(), self.dp_adam_m.copy(),
                              self.dp_adam_v.copy(), self.dp_steps,
                              tuple(g.bit_generator.state for g in self._rngs))

    def restore_global(self, snap: GlobalSnapshot) -> None:
        self.theta[:] = snap.theta
        self.outer_velocity[:] = snap.outer_velocity
        self.dp_adam_m[:] = snap.adam_m
        self.dp_adam_v[:] = snap.adam_v
        self.dp_steps = snap.steps
        for g, state in zip(self._rngs, snap.rng_states):
            g.bit_generator.state = state

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params: np.ndarray | None = None) -> tuple[float, float]:
        """(loss, accuracy) held out, at the frontier; ``params`` defaults to Theta (e.g. ``s.params[m]``)."""
        p = self.theta if params is None else np.ascontiguousarray(params, dtype=np.float64)
        if p.shape != (self.n_params,):
            raise ValueError(f"params has shape {p.shape}, expected {(self.n_params,)}")
        loss, acc = self.task.evaluate(p, self.frontier)
        return float(loss), float(acc)

    def eval_loss(self, params: np.ndarray | None = None) -> float:
        """Held-out cross-entropy of ``params`` (default Theta)."""
        return self.evaluate(params)[0]
