"""Synthetic classification data for the surrogate workload, sharded over learners.

The task is a Gaussian mixture in which every class owns several clusters with random centres, so the
classes interleave: no linear model separates them, and a ReLU MLP has to carve many regions (the loss
surface is non-convex, like a real model's). Cluster noise sets a floor on the achievable loss, so the
loss keeps a measurable gap between better and worse training schedules instead of collapsing to zero.

Sharding. Learner m trains only on shard m. Its label distribution is

    p_m = (1 - non_iid) * uniform + non_iid * q_m

where q_m is uniform over a few classes dealt to shard m ("class-sorted", as in McMahan et al. 2017):
the classes are shuffled and dealt round-robin, ``ceil(classes / n_learners)`` per shard, so the union of
shards covers every class whenever there are at least as many shards as needed. ``non_iid = 0`` gives IID
shards; ``non_iid = 1`` gives shards that see only their own classes. The held-out evaluation set is IID
(uniform labels), so it measures the global model, not any one shard.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """All shards concatenated (shard m is rows ``[m*shard_size, (m+1)*shard_size)``) plus an eval set.

    Keeping the shards in one array lets a kernel address any learner's samples by row index, which is
    how data-parallel steps mix several shards in one minibatch.
    """

    x: np.ndarray  # (n_learners * shard_size, dim) float64, C-contiguous
    y: np.ndarray  # (n_learners * shard_size,) int64
    x_eval: np.ndarray  # (eval_samples, dim) float64
    y_eval: np.ndarray  # (eval_samples,) int64
    n_learners: int
    shard_size: int
    classes: int
    label_probs: np.ndarray  # (n_learners, classes): the distribution each shard was drawn from

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def shard(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Views (x, y) of learner m's shard."""
        lo = m * self.shard_size
        return self.x[lo:lo + self.shard_size], self.y[lo:lo + self.shard_size]

    def label_counts(self, m: int) -> np.ndarray:
        """How many samples of each class shard m holds."""
        return np.bincount(self.shard(m)[1], minlength=self.classes)


def shard_label_probs(rng: np.random.Generator, n_learners: int, classes: int, non_iid: float) -> np.ndarray:
    """(n_learners, classes) label distributions: IID mixed with a class-sorted skew (see module doc)."""
    if not 0.0 <= non_iid <= 1.0:
        raise ValueError(f"non_iid must be in [0, 1], got {non_iid}")
    per_shard = -(-classes // n_learners)  # ceil: enough classes per shard to cover all of them
    order = rng.permutation(classes)
    skew = np.zeros((n_learners, classes))
    for m in range(n_learners):
        dealt = order[(m * per_shard + np.arange(per_shard)) % classes]
        skew[m, dealt] = 1.0 / per_shard
    return (1.0 - non_iid) / classes + non_iid * skew


def make_dataset(
    rng: np.random.Generator,
    n_learners: int,
    *,
    dim: int = 16,
    classes: int = 8,
    samples_per_learner: int = 2048,
    eval_samples: int = 4096,
    non_iid: float = 0.5,
    clusters_per_class: int = 4,
    noise: float = 0.8,
    separation: float = 4.0,
) -> Dataset:
    """Draw the mixture, the shards and the IID eval set.

    Centres are normal with norm ~``separation`` (per-coordinate std ``separation / sqrt(dim)``), so two
    centres are ~``separation * sqrt(2)`` apart whatever ``dim`` is. ``noise`` is the per-coordinate
    standard deviation of a sample around its centre, i.e. the noise along any direction: together they
    set how much clusters of different classes overlap (hence the Bayes-optimal loss), roughly
    independently of ``dim``.
    """
    if n_learners < 1 or dim < 1 or classes < 2 or clusters_per_class < 1:
        raise ValueError("need n_learners >= 1, dim >= 1, classes >= 2, clusters_per_class >= 1")
    if samples_per_learner < 1 or eval_samples < 1:
        raise ValueError("need samples_per_learner >= 1 and eval_samples >= 1")
    centres = rng.standard_normal((classes, clusters_per_class, dim)) * (separation / np.sqrt(dim))
    probs = shard_label_probs(rng, n_learners, classes, non_iid)

    def draw(labels: np.ndarray) -> np.ndarray:
        cluster = rng.integers(0, clusters_per_class, size=labels.size)
        return centres[labels, cluster] + noise * rng.standard_normal((labels.size, dim))

    ys = [rng.choice(classes, size=samples_per_learner, p=probs[m]) for m in range(n_learners)]
    y = np.concatenate(ys).astype(np.int64)
    x = np.ascontiguousarray(draw(y))
    y_eval = rng.integers(0, classes, size=eval_samples, dtype=np.int64)
    x_eval = np.ascontiguousarray(draw(y_eval))
    return Dataset(x=x, y=y, x_eval=x_eval, y_eval=y_eval, n_learners=n_learners,
                   shard_size=samples_per_learner, classes=classes, label_probs=probs)
