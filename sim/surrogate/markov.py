"""The ``markov`` surrogate task: next-token prediction on synthetic Markov text whose statistics drift.

Text. The vocabulary has V tokens and there are J sources of text (``components``, like styles or
topics), each a first-order Markov chain with its own V x V transition matrix A_j(t). A sample is a
(context, next) token pair: the context token is uniform over the vocabulary (every row of the chain is
trained and evaluated equally), the next token is drawn from row ``context`` of a source picked from
the learner's mixture.

Non-IID shards. Learner m picks source j with probability ``(1 - non_iid) / J + non_iid * q_{m,j}``,
where q_m is uniform over the sources dealt to learner m (``data.shard_label_probs`` deals sources as
it deals classes): ``non_iid = 0`` gives every learner the same text, 1 only its own sources.

Drift. Each source moves along a cycle of ``KEYS`` random key matrices whose rows are Dirichlet(0.1)
draws (a few likely successors per context): at phase t (counted in steps)::

    A_j(t) = (1 - f) K_{j,r} + f K_{j,r+1 mod KEYS},   r + f = t / drift_steps,   r integer, 0 <= f < 1

so the text a model must predict keeps changing and a model trained on yesterday's text is worse on
today's. ``drift_steps = 0`` keeps every source at its first key (a stationary task).

The phase is supplied by ``Surrogate`` (training progress, which follows simulated time: see there).
The held-out loss at phase t is the exact expected cross-entropy under the global text (uniform
context, sources uniform): no sampling noise, and ``entropy(t)`` is its floor.

Model. A bigram logit table W (V x V, row = context; the flat row-major table is the parameter vector),
``p(next | ctx) = softmax(W[ctx])``: softmax regression on a one-hot context. It starts at zero, so the
initial loss is exactly log V. The loss is convex in W, so what separates schedules on this task is
the drift (a stale outer gradient pulls W towards old text) and the non-IID mixture, not the landscape.
A step costs about what an MLP step costs at the defaults (V = 32: 1,024 parameters against 808).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import kernels as K
from .data import shard_label_probs

KEYS = 16  # key matrices per source: a full cycle takes KEYS * drift_steps steps
CONCENTRATION = 0.1  # Dirichlet concentration of the key rows (smaller: fewer likely successors)


@numba.njit(cache=True, error_model="numpy")
def _search(cdf, u):
    """First index i with u < cdf[i] (cdf non-decreasing, last entry 1): inverse-CDF sampling."""
    lo, hi = 0, cdf.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if u < cdf[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, error_model="numpy")
def _search_row(cdf, j, key, ctx, u):
    """``_search(cdf[j, key, ctx], u)`` without building the row view in the sampling loop."""
    lo, hi = 0, cdf.shape[3] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if u < cdf[j, key, ctx, mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, error_model="numpy")
def sample_pairs(u, mix_cdf, key_cdf, phases, drift_steps, out):
    """(context, next) pairs into ``out`` (steps, batch, 2) from uniforms ``u`` (steps, batch, 4).

    Per sample: context from u0, source from the learner's mixture (``mix_cdf``) by u1, key r or r + 1 of
    the source's cycle by u2 (r + 1 with probability f: the interpolation of the module doc), next token
    from that key's row by u3. ``key_cdf`` (J, KEYS, V, V) holds the cumulative rows."""
    n_keys, vocab = key_cdf.shape[1], key_cdf.shape[2]
    for s in range(u.shape[0]):
        pos = phases[s] / drift_steps if drift_steps > 0 else 0.0
        base = math.floor(pos)
        f = pos - base
        r = int(base) % n_keys
        for b in range(u.shape[1]):
            ctx = min(int(u[s, b, 0] * vocab), vocab - 1)
            j = _search(mix_cdf, u[s, b, 1])
            key = r if u[s, b, 2] >= f else (r + 1) % n_keys
            out[s, b, 0] = ctx
            out[s, b, 1] = _search_row(key_cdf, j, key, ctx, u[s, b, 3])


@numba.njit(cache=True, fastmath=K.FASTMATH, error_model="numpy")
def _loss_grad_ws(params, pairs, vocab, grad, z):
    """Mean cross-entropy of ``pairs`` (n, 2); mean gradient into ``grad``; ``z`` (vocab,) is scratch."""
    W = params.reshape((vocab, vocab))
    G = grad.reshape((vocab, vocab))
    grad[:] = 0.0
    scale = 1.0 / pairs.shape[0]
    loss = 0.0
    for b in range(pairs.shape[0]):
        ctx = pairs[b, 0]
        nxt = pairs[b, 1]
        zmax = -np.inf
        for c in range(vocab):
            zmax = max(zmax, W[ctx, c])
        tot = 0.0
        for c in range(vocab):
            e = math.exp(W[ctx, c] - zmax)
            z[c] = e
            tot += e
        loss += math.log(tot) + zmax - W[ctx, nxt]
        # d loss / d W[ctx, c] = softmax_c - [c == next], pre-scaled by 1/batch (only row ctx is touched)
        inv = scale / tot
        for c in range(vocab):
            G[ctx, c] += z[c] * inv
        G[ctx, nxt] -= scale
    return loss * scale


@numba.njit(cache=True, error_model="numpy")
def bigram_loss_grad(params, pairs, vocab, grad):
    """Mean cross-entropy of the (context, next) ``pairs``; overwrites ``grad`` with its gradient."""
    return _loss_grad_ws(params, pairs, vocab, grad, np.empty(vocab))


@numba.njit(cache=True, error_model="numpy")
def train_steps(params, m, v, t0, pairs, vocab, lr, beta1, beta2, eps, weight_decay, grad):
    """``pairs.shape[0]`` fused steps (loss/grad on ``pairs[s]``, then AdamW); returns the mean loss."""
    z = np.empty(vocab)
    total = 0.0
    n = pairs.shape[0]
    for s in range(n):
        total += _loss_grad_ws(params, pairs[s], vocab, grad, z)
        K.adamw_step(params, grad, m, v, t0 + s + 1, lr, beta1, beta2, eps, weight_decay)
    return total / n if n > 0 else np.nan


@numba.njit(cache=True, fastmath=K.FASTMATH, error_model="numpy")
def bigram_evaluate(params, target, vocab):
    """(expected cross-entropy, expected accuracy) of the table against transition matrix ``target``,
    contexts uniform: accuracy is the probability that the most likely predicted token comes next."""
    loss = 0.0
    acc = 0.0
    for ctx in range(vocab):
        o = ctx * vocab
        zmax = -np.inf
        best = 0
        for c in range(vocab):
            if params[o + c] > zmax:
                zmax = params[o + c]
                best = c
        tot = 0.0
        for c in range(vocab):
            tot += math.exp(params[o + c] - zmax)
        lse = math.log(tot) + zmax
        for c in range(vocab):
            loss += target[ctx, c] * (lse - params[o + c])
        acc += target[ctx, best]
    return loss / vocab, acc / vocab


class MarkovTask:
    """A bigram model on learner m's share of drifting Markov sources (see the module doc)."""

    def __init__(self, rng: np.random.Generator, n_learners: int, batch: int, *, vocab: int,
                 components: int, drift_steps: int, non_iid: float):
        if vocab < 2 or components < 1 or drift_steps < 0:
            raise ValueError("need vocab >= 2, components >= 1 and drift_steps >= 0")
        self.vocab, self.components, self.drift_steps, self.batch = vocab, components, drift_steps, batch
        self.keys = rng.dirichlet(np.full(vocab, CONCENTRATION), size=(components, KEYS, vocab))
        self.mixture = shard_label_probs(rng, n_learners, components, non_iid)  # (M, J)
        self._key_cdf = _cdf(self.keys)
        self._mix_cdf = _cdf(self.mixture)
        self.n_params = vocab * vocab

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """A zero table: every next token equally likely (loss log V)."""
        return np.zeros(self.n_params)

    def transition(self, phase: float, mixture: np.ndarray | None = None) -> np.ndarray:
        """(V, V) transition matrix of the text at ``phase``: sources weighted by ``mixture`` (J,),
        uniform by default (the global text the held-out loss measures)."""
        pos = phase / self.drift_steps if self.drift_steps > 0 else 0.0
        r = math.floor(pos)
        f = pos - r
        sources = (1.0 - f) * self.keys[:, r % KEYS] + f * self.keys[:, (r + 1) % KEYS]
        w = np.full(self.components, 1.0 / self.components) if mixture is None else np.asarray(mixture)
        return np.tensordot(w, sources, axes=1)

    def entropy(self, phase: float) -> float:
        """The floor of the held-out loss at ``phase``: mean entropy of the global text's rows."""
        t = self.transition(phase)
        return float(-np.sum(t * np.log(np.where(t > 0, t, 1.0))) / self.vocab)

    def draw(self, rng: np.random.Generator, m: int, phases: np.ndarray) -> np.ndarray:
        """(steps, batch, 2) (context, next) pairs of learner m at ``phases`` (one per step), four uniform
        draws per sample (so a stream is chunking-invariant)."""
        u = rng.random((phases.size, self.batch, 4))
        out = np.empty((phases.size, self.batch, 2), dtype=np.int64)
        sample_pairs(u, self._mix_cdf[m], self._key_cdf, phases, self.drift_steps, out)
        return out

    def train(self, params, adam_m, adam_v, t0, pairs, lr, beta1, beta2, eps, weight_decay, grad) -> float:
        """``pairs.shape[0]`` fused AdamW steps; returns their mean training loss."""
        return train_steps(params, adam_m, adam_v, t0, pairs, self.vocab, lr, beta1, beta2, eps,
                           weight_decay, grad)

    def evaluate(self, params: np.ndarray, phase: int) -> tuple[float, float]:
        """Exact (cross-entropy, accuracy) on the global text at ``phase``."""
        return bigram_evaluate(params, self.transition(phase), self.vocab)


def _cdf(probs: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, the last entry set to exactly 1 (so every u < 1 is found)."""
    cdf = np.cumsum(probs, axis=-1)
    cdf[..., -1] = 1.0
    return np.ascontiguousarray(cdf)
