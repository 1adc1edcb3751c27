"""Time one inner step of the surrogate (forward/backward + AdamW): Numba kernels vs the same math in NumPy.

Usage: ``python bench/bench_surrogate.py [--steps N] [--repeats R]``

What is measured, per model size (the first row is ``Surrogate``'s default size):

* ``numpy``   : ``reference.loss_grad`` + ``reference.adamw_step`` called once per step from Python
                (vectorised NumPy with BLAS matmuls; its cost is mostly per-operation dispatch and
                temporaries at these sizes);
* ``nb-call`` : ``kernels.mlp_loss_grad`` + ``kernels.adamw_step`` called once per step from Python
                (two Numba dispatches per step);
* ``nb-fused``: ``kernels.train_steps`` running all steps in one call, which is how ``Surrogate.train``
                runs them (one dispatch per burst of steps).

Minibatch row indices are drawn up front and shared by all three, so the work is identical. Each figure is
the best of ``repeats`` timings (least disturbed by other processes) divided by the number of steps.
Numba wins at small sizes because the fused loops touch each number once, allocate nothing and pay no
per-operation interpreter cost; as the layers grow, BLAS matmuls in NumPy catch up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.surrogate import kernels as K
from sim.surrogate import reference as R

SIZES = [  # (dim, hidden, classes, batch); first = Surrogate defaults
    (16, 32, 8, 16),
    (32, 64, 10, 32),
    (64, 128, 10, 64),
]


def best_time(fn, steps: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / steps


def bench(dim: int, hidden: int, classes: int, batch: int, steps: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    n = K.param_count(dim, hidden, classes)
    X = rng.standard_normal((4096, dim))
    y = rng.integers(0, classes, 4096)
    rows = rng.integers(0, 4096, (steps, batch))
    p0 = rng.standard_normal(n) * 0.1
    hp = (1e-3, 0.9, 0.999, 1e-8, 0.01)

    def state():
        return p0.copy(), np.zeros(n), np.zeros(n), np.empty(n)

    def numpy_loop():
        p, m, v, g = state()
        for s in range(steps):
            R.loss_grad(p, X, y, rows[s], hidden, classes, g)
            R.adamw_step(p, g, m, v, s + 1, *hp)

    def numba_calls():
        p, m, v, g = state()
        for s in range(steps):
            K.mlp_loss_grad(p, X, y, rows[s], hidden, classes, g)
            K.adamw_step(p, g, m, v, s + 1, *hp)

    def numba_fused():
        p, m, v, g = state()
        K.train_steps(p, m, v, 0, X, y, rows, hidden, classes, *hp, g)

    # Warm up (JIT compile or load from cache) and check both paths agree before timing anything.
    pa, ma, va, ga = state()
    pb, mb, vb, gb = state()
    for s in range(5):
        R.loss_grad(pa, X, y, rows[s], hidden, classes, ga)
        R.adamw_step(pa, ga, ma, va, s + 1, *hp)
        K.mlp_loss_grad(pb, X, y, rows[s], hidden, classes, gb)
        K.adamw_step(pb, gb, mb, vb, s + 1, *hp)
    assert np.allclose(pa, pb, rtol=1e-9, atol=1e-12), "Numba and NumPy disagree"
    K.train_steps(*state()[:3], 0, X, y, rows[:2], hidden, classes, *hp, np.empty(n))

    return {
        "numpy": best_time(numpy_loop, steps, repeats),
        "nb-call": best_time(numba_calls, steps, repeats),
        "nb-fused": best_time(numba_fused, steps, repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"per inner step (forward/backward + AdamW), float64, best of {args.repeats} x {args.steps} steps")
    print(f"{'dim':>4} {'hid':>4} {'cls':>4} {'batch':>5} {'params':>7} | {'numpy':>9} {'nb-call':>9} "
          f"{'nb-fused':>9} | {'x call':>6} {'x fused':>7}")
    for dim, hidden, classes, batch in SIZES:
        t = bench(dim, hidden, classes, batch, args.steps, args.repeats)
        print(f"{dim:>4} {hidden:>4} {classes:>4} {batch:>5} {K.param_count(dim, hidden, classes):>7} | "
              f"{t['numpy'] * 1e6:>7.1f}us {t['nb-call'] * 1e6:>7.1f}us {t['nb-fused'] * 1e6:>7.1f}us | "
              f"{t['numpy'] / t['nb-call']:>6.1f} {t['numpy'] / t['nb-fused']:>7.1f}")


if __name__ == "__main__":
    main()
