"""Time one inner step of the surrogate (forward/backward + AdamW): Numba kernels vs the same math in NumPy.

Usage: ``python bench/bench_surrogate.py [--steps N] [--repeats R]``

What is measured, per model size (the first row is ``Surrogate``'s default size, the last the default
``markov`` task):

* ``numpy``   : ``reference.loss_grad`` (``reference.bigram_loss_grad``) + ``reference.adamw_step`` called
                once per step from Python (vectorised NumPy with BLAS matmuls; its cost is mostly
                per-operation dispatch and temporaries at these sizes);
* ``nb-call`` : ``kernels.mlp_loss_grad`` (``markov.bigram_loss_grad``) + ``kernels.adamw_step`` called once
                per step from Python (two Numba dispatches per step);
* ``nb-fused``: ``kernels.train_steps`` (``markov.train_steps``) running all steps in one call, which is
                how ``Surrogate.train`` runs them (one dispatch per burst of steps).

Minibatches (row indices, or token pairs) are drawn up front and shared by all three, so the work is
identical. The three are timed in turn within each repeat, so a burst of load from other processes hits
them alike; each figure is the best of ``repeats`` timings (least disturbed) divided by the number of
steps. Numba wins because it does the same matrix products (OpenBLAS, as NumPy does) without a Python dispatch and a
temporary per operation, and fuses the element-wise work into a few loops; the gap narrows as the layers
grow and the matrix products dominate. The last line compares the default size's fused ratio with the target.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.surrogate import kernels as K
from sim.surrogate import markov as MK
from sim.surrogate import reference as R

SIZES = [  # (dim, hidden, classes, batch); first = Surrogate defaults
    (16, 32, 8, 16),
    (32, 64, 10, 32),
    (64, 128, 10, 64),
]
MARKOV = (32, 16)  # (vocab, batch): the markov task's defaults
TARGET = 10.0  # fused Numba over NumPy at the default size


def best_times(fns: dict, steps: int, repeats: int) -> dict[str, float]:
    """Best time per step of each function, the functions timed in turn within every repeat."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t / steps for name, t in best.items()}


def variants(n, samples, loss_grad_np, loss_grad_nb, train_nb):
    """The three timed loops over ``samples`` (one minibatch per step), checked to agree first."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(n) * 0.1
    total = len(samples)
    hp = (1e-3, 0.9, 0.999, 1e-8, 0.01)

    def state():
        return p0.copy(), np.zeros(n), np.zeros(n), np.empty(n)

    def numpy_loop(steps=total):
        p, m, v, g = state()
        for s in range(steps):
            loss_grad_np(p, samples[s], g)
            R.adamw_step(p, g, m, v, s + 1, *hp)
        return p

    def numba_calls(steps=total):
        p, m, v, g = state()
        for s in range(steps):
            loss_grad_nb(p, samples[s], g)
            K.adamw_step(p, g, m, v, s + 1, *hp)
        return p

    def numba_fused(steps=total):
        p, m, v, g = state()
        train_nb(p, m, v, 0, samples[:steps], *hp, g)
        return p

    # Warm up (JIT compile or load from cache) and check the paths agree before timing anything.
    ref = numpy_loop(5)
    for fn in (numba_calls, numba_fused):
        assert np.allclose(fn(5), ref, rtol=1e-9, atol=1e-12), "Numba and NumPy disagree"
    return {"numpy": numpy_loop, "nb-call": numba_calls, "nb-fused": numba_fused}


def bench_mlp(dim: int, hidden: int, classes: int, batch: int, steps: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, dim))
    y = rng.integers(0, classes, 4096)
    rows = rng.integers(0, 4096, (steps, batch))
    fns = variants(
        K.param_count(dim, hidden, classes), rows,
        lambda p, r, g: R.loss_grad(p, X, y, r, hidden, classes, g),
        lambda p, r, g: K.mlp_loss_grad(p, X, y, r, hidden, classes, g),
        lambda p, m, v, t0, r, *rest: K.train_steps(p, m, v, t0, X, y, r, hidden, classes, *rest))
    return best_times(fns, steps, repeats)


def bench_markov(vocab: int, batch: int, steps: int, repeats: int) -> dict[str, float]:
    pairs = np.random.default_rng(0).integers(0, vocab, (steps, batch, 2))
    fns = variants(
        vocab * vocab, pairs,
        lambda p, b, g: R.bigram_loss_grad(p, b, vocab, g),
        lambda p, b, g: MK.bigram_loss_grad(p, b, vocab, g),
        lambda p, m, v, t0, b, *rest: MK.train_steps(p, m, v, t0, b, vocab, *rest))
    return best_times(fns, steps, repeats)


def row(label: str, params: int, t: dict[str, float]) -> str:
    return (f"{label:<22} {params:>7} | {t['numpy'] * 1e6:>7.1f}us {t['nb-call'] * 1e6:>7.1f}us "
            f"{t['nb-fused'] * 1e6:>7.1f}us | {t['numpy'] / t['nb-call']:>6.1f} {t['numpy'] / t['nb-fused']:>7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"per inner step (forward/backward + AdamW), float64, best of {args.repeats} x {args.steps} steps")
    print(f"{'task dim/hid/cls/batch':<22} {'params':>7} | {'numpy':>9} {'nb-call':>9} {'nb-fused':>9} | "
          f"{'x call':>6} {'x fused':>7}")
    default = None
    for dim, hidden, classes, batch in SIZES:
        t = bench_mlp(dim, hidden, classes, batch, args.steps, args.repeats)
        default = default or t
        print(row(f"mlp {dim}/{hidden}/{classes}/{batch}", K.param_count(dim, hidden, classes), t))
    vocab, batch = MARKOV
    print(row(f"markov vocab {vocab}/{batch}", vocab * vocab, bench_markov(vocab, batch, args.steps, args.repeats)))
    ratio = default["numpy"] / default["nb-fused"]
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"default size (mlp 16/32/8/16): Numba {ratio:.1f}x NumPy, target >= {TARGET:.0f}x: {verdict}")


if __name__ == "__main__":
    main()
