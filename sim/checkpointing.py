"""Checkpoint-interval rules and the closed forms of the synchronous baseline.

Notation (as in the checkpointing literature): ``C`` blocking checkpoint write time, ``M`` the job's
mean time between failures, ``D`` downtime (detection and rescheduling, during which the job holds no
chips and cannot fail), ``R`` the restart/reload time (failures can strike), ``W`` the useful work
between two checkpoints. All in seconds.

* Young (1974), first order: ``W = sqrt(2 C M)``.
* Daly (2006), higher order: ``W = sqrt(2 C M) * (1 + sqrt(C / 2M) / 3 + (C / 2M) / 9) - C`` for
  ``C < 2M``, else ``M``.
* Exact expected length of one period of ``W`` useful work under exponential failures
  (Bougeret et al., SC'11; checked by Monte Carlo): ``E[T] = e^{R/M} (M + D) (e^{(W + C)/M} - 1)``,
  so the expected goodput is ``W / E[T]``. Its optimum ``W* = M (1 + L0(-e^{-C/M - 1}))`` does not
  depend on R or D.

The simulator's ``sync_dp`` policy must reproduce ``W / E[T]``; the tests hold it to that.
"""

from __future__ import annotations

import math

from scipy.special import lambertw


def young_interval_s(write_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum sqrt(2 C M)."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def daly_interval_s(write_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum of the compute time between checkpoints."""
    if write_s >= 2.0 * mtbf_s:
        return mtbf_s
    ratio = write_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * write_s * mtbf_s) * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0) - write_s


def expected_period_s(work_s: float, write_s: float, down_s: float, reload_s: float, mtbf_s: float) -> float:
    """Exact expected wall time to complete one period of ``work_s`` useful work plus its checkpoint."""
    return math.exp(reload_s / mtbf_s) * (mtbf_s + down_s) * math.expm1((work_s + write_s) / mtbf_s)


def expected_goodput(work_s: float, write_s: float, down_s: float, reload_s: float, mtbf_s: float) -> float:
    """Fraction of wall time spent on work that is kept: W / E[T]."""
    return work_s / expected_period_s(work_s, write_s, down_s, reload_s, mtbf_s)


def exact_optimal_interval_s(write_s: float, mtbf_s: float) -> float:
    """The W that maximises :func:`expected_goodput` (Lambert W, principal branch)."""
    return mtbf_s * (1.0 + lambertw(-math.exp(-write_s / mtbf_s - 1.0), 0).real)


def first_order_waste(work_s: float, write_s: float, down_s: float, reload_s: float, mtbf_s: float) -> float:
    """The first-order approximation C/T + (D + R + T/2)/M, with T = W + C (overestimates for small M)."""
    period = work_s + write_s
    return write_s / period + (down_s + reload_s + period / 2.0) / mtbf_s
