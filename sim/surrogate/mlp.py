"""The ``mlp`` surrogate task: a two-layer ReLU classifier on the Gaussian-mixture shards of ``data``.

The task is stationary: a sample's distribution does not depend on when it is drawn, so ``draw`` and
``evaluate`` ignore the phase ``Surrogate`` passes (see ``markov`` for a task that drifts). The held-out
set is IID over classes. Kernels and the parameter layout are in ``kernels``.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .data import Dataset, make_dataset


class MLPTask:
    """``dim -> hidden (ReLU) -> classes`` trained on learner m's shard of ``data.make_dataset``."""

    def __init__(self, rng: np.random.Generator, n_learners: int, batch: int, *, dim: int, hidden: int,
                 classes: int, non_iid: float, samples_per_learner: int, eval_samples: int,
                 clusters_per_class: int, noise: float, separation: float):
        if hidden < 1:
            raise ValueError("need hidden >= 1")
        self.data: Dataset = make_dataset(
            rng, n_learners, dim=dim, classes=classes, samples_per_learner=samples_per_learner,
            eval_samples=eval_samples, non_iid=non_iid, clusters_per_class=clusters_per_class, noise=noise,
            separation=separation)
        self.dim, self.hidden, self.classes, self.batch = dim, hidden, classes, batch
        self.n_params = K.param_count(dim, hidden, classes)

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """He-normal weights (ReLU layer), Glorot-scaled output layer, zero biases."""
        theta = np.zeros(self.n_params)
        d, h, c = self.dim, self.hidden, self.classes
        theta[: d * h] = rng.standard_normal(d * h) * np.sqrt(2.0 / d)
        o2 = d * h + h
        theta[o2: o2 + c * h] = rng.standard_normal(c * h) * np.sqrt(1.0 / h)
        return theta

    def draw(self, rng: np.random.Generator, m: int, phases: np.ndarray) -> np.ndarray:
        """(steps, batch) row indices into ``data.x`` from learner m's shard, with replacement.

        Uniform floats (one 64-bit draw each, no buffering) make the stream chunking-invariant."""
        n = self.data.shard_size
        local = np.minimum((rng.random((phases.size, self.batch)) * n).astype(np.int64), n - 1)
        return local + m * n

    def train(self, params, adam_m, adam_v, t0, rows, lr, beta1, beta2, eps, weight_decay, grad) -> float:
        """``rows.shape[0]`` fused AdamW steps on the minibatches ``rows``; returns their mean loss."""
        return K.train_steps(params, adam_m, adam_v, t0, self.data.x, self.data.y, rows, self.hidden,
                             self.classes, lr, beta1, beta2, eps, weight_decay, grad)

    def evaluate(self, params: np.ndarray, phase: int) -> tuple[float, float]:
        """(cross-entropy, accuracy) on the IID held-out set (the task does not drift: phase unused)."""
        return K.mlp_evaluate(params, self.data.x_eval, self.data.y_eval, self.hidden, self.classes)
