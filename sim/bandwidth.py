"""Compute utilisation against WAN bandwidth: the bucketed-overlap model (reference/diloco.md §3.3).

The question: with a WAN of ``bandwidth_bps`` per site, what fraction of wall time does compute run
(compute utilisation, CU), and how much bandwidth does a target CU need, for data-parallel (DP),
DiLoCo and Streaming DiLoCo? The model, as published by a DiLoCo author:

* A step lasts ``T = step_time_s``: forward ``T/3``, then backward ``2T/3``.
* What must be sent (gradients for DP, outer gradients otherwise) goes out as ``K = buckets`` equal
  buckets released evenly across the backward pass: bucket ``k`` (1..K) when its slice of the backward
  is done, at ``T/3 + k * (2T/3) / K`` after the step starts; the last one at the end of the step.
* One FIFO link per site: a bucket of ``b`` bits occupies it ``b / bandwidth_bps`` seconds (no latency).
* Volume: an all-reduce over ``M = sites`` moves ``2 (1 - 1/M) * size`` where ``size = params * bits``
  bits (``bits`` per value: 16 for bf16, 4 for FP4 quantisation).
* Deadlines: DP sends every step, due at the end of that step. DiLoCo sends the whole model every
  ``H = inner_steps`` steps, due at the end of that step. Streaming DiLoCo sends one fragment
  (``size / P``, ``P = fragments``) every ``H/P`` steps, released in step ``t`` and due at the end of
  step ``t + tau`` (``tau = overlap``: the fragment is overlapped with tau further steps; tau = 0 is
  DiLoCo's deadline). A missed deadline stalls compute until the data is there, and everything after
  shifts (the pipeline slips, it does not catch up).
* ``CU = compute / (compute + stall)`` in steady state.

How it is computed: exactly, in O(1), instead of by a long loop over steps. The recurrences "the next
step starts at max(end of compute, arrival of what is due)" and "a release finishes at max(link free +
its work, its own earliest finish)" are max-plus linear, and one period (``q`` steps, one release)
has three elementary cycles, so the steady-state period length is the largest of their means:

* compute only: ``q * T``;
* the link back to back: ``D``, the link time of one release (``payload_bits / bandwidth_bps``);
* a release, its transfer, its deadline, then compute up to the next release of the same phase:
  ``(a + (n*q - tau - 1) * T) / n`` with ``n = ceil((tau + 1) / q)`` periods, where
  ``a = max(T/3 + 2T/(3K) + D, T + D/K)`` is when a release alone on the link finishes, counted from
  the start of its step (its first bucket plus all the work, or its last bucket plus one bucket).

``tests/test_bandwidth.py`` checks this against a brute-force bucket-by-bucket simulation.
Units: seconds, bits per second, parameter counts; CU is a fraction in (0, 1].
"""

from __future__ import annotations

import math

METHODS = ("dp", "diloco", "streaming_diloco")

# Defaults: the Decoupled DiLoCo main setting (reference/diloco.md §1.2), H = P = 24, tau = 2.
DEFAULT_INNER_STEPS = 24
DEFAULT_FRAGMENTS = 24
DEFAULT_OVERLAP = 2


def _period(method: str, *, params: float, step_time_s: float, bandwidth_bps: float, sites: int,
            inner_steps: int, fragments: int, overlap: int, bits: float, buckets: int
            ) -> tuple[int, float]:
    """Steps per release period ``q`` and the steady-state wall time of one period (seconds)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (params > 0 and step_time_s > 0 and bits > 0 and bandwidth_bps > 0):
        raise ValueError("params, step_time_s, bits and bandwidth_bps must be > 0")
    for name, value, low in (("sites", sites, 1), ("inner_steps", inner_steps, 1),
                             ("fragments", fragments, 1), ("overlap", overlap, 0), ("buckets", buckets, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    volume_bits = 2.0 * (1.0 - 1.0 / sites) * params * bits
    if method == "dp":
        q, tau, payload_bits = 1, 0, volume_bits
    elif method == "diloco":
        q, tau, payload_bits = int(inner_steps), 0, volume_bits
    else:
        if inner_steps % fragments:
            # One fragment every H/P steps needs whole steps; uneven spacing would break the period.
            raise ValueError(f"inner_steps ({inner_steps}) must be a multiple of fragments ({fragments})")
        q, tau, payload_bits = int(inner_steps // fragments), int(overlap), volume_bits / fragments

    t = step_time_s
    link_s = payload_bits / bandwidth_bps  # 0 at infinite bandwidth
    alone_s = max(t / 3 + 2 * t / (3 * buckets) + link_s, t + link_s / buckets)
    n = -(-(tau + 1) // q)  # ceil: periods until the first release at or after the deadline
    period_s = max(q * t, link_s, (alone_s + (n * q - tau - 1) * t) / n)
    return q, period_s


def compute_utilisation(method: str, *, params: float, step_time_s: float, bandwidth_bps: float, sites: int,
                        inner_steps: int = DEFAULT_INNER_STEPS, fragments: int = DEFAULT_FRAGMENTS,
                        overlap: int = DEFAULT_OVERLAP, bits: float = 16, buckets: int = 128) -> float:
    """Steady-state compute utilisation of ``method`` in (0, 1]; parameters as in the module docstring.

    ``inner_steps`` (H) matters for diloco and streaming_diloco, ``fragments`` (P) and ``overlap``
    (tau) for streaming_diloco only.
    """
    q, period_s = _period(method, params=params, step_time_s=step_time_s, bandwidth_bps=bandwidth_bps,
                          sites=sites, inner_steps=inner_steps, fragments=fragments, overlap=overlap,
                          bits=bits, buckets=buckets)
    return q * step_time_s / period_s


def exposed_comm_time_per_step(method: str, *, params: float, step_time_s: float, bandwidth_bps: float,
                               sites: int, inner_steps: int = DEFAULT_INNER_STEPS,
                               fragments: int = DEFAULT_FRAGMENTS, overlap: int = DEFAULT_OVERLAP,
                               bits: float = 16, buckets: int = 128) -> float:
    """Seconds per step that compute stalls on the network in steady state (charge it as waiting)."""
    q, period_s = _period(method, params=params, step_time_s=step_time_s, bandwidth_bps=bandwidth_bps,
                          sites=sites, inner_steps=inner_steps, fragments=fragments, overlap=overlap,
                          bits=bits, buckets=buckets)
    return max(0.0, period_s - q * step_time_s) / q


def required_bandwidth(method: str, target_cu: float, *, rel_tol: float = 1e-9,
                       min_bps: float = 1.0, max_bps: float = 1e21, **model) -> float:
    """Smallest bandwidth (bits per second) at which ``method`` reaches ``target_cu``.

    Bisection on a log scale (CU is non-decreasing in bandwidth) until the bracket is within
    ``rel_tol``; returns the upper end, which is known to reach the target. ``model`` takes the keyword
    arguments of :func:`compute_utilisation` except ``bandwidth_bps``. Returns ``min_bps`` if even that
    is enough (nothing to send), and raises ValueError if ``max_bps`` is not.
    """
    if not 0 < target_cu <= 1:
        raise ValueError(f"target_cu must be in (0, 1], got {target_cu!r}")

    def cu(bps: float) -> float:
        return compute_utilisation(method, bandwidth_bps=bps, **model)

    lo, hi = min_bps, max_bps
    if cu(lo) >= target_cu:
        return lo
    if cu(hi) < target_cu:
        raise ValueError(f"{method} cannot reach CU {target_cu} with up to {max_bps:.3g} bit/s")
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)  # geometric midpoint: bandwidths span many decades
        if cu(mid) >= target_cu:
            hi = mid
        else:
            lo = mid
    return hi


def bandwidth_table(*, params: float, step_time_s: float, bandwidth_bps: float, sites: int,
                    target_cu: float = 0.95, methods: tuple[str, ...] = METHODS,
                    bits_options: tuple[float, ...] = (16, 4), inner_steps: int = DEFAULT_INNER_STEPS,
                    fragments: int = DEFAULT_FRAGMENTS, overlap: int = DEFAULT_OVERLAP,
                    buckets: int = 128) -> list[dict]:
    """One row per (method, bits): CU and exposed communication at ``bandwidth_bps``, and the
    bandwidth needed for ``target_cu``; rows are plain dicts for the CLI and DataFrames."""
    rows = []
    for method in methods:
        for bits in bits_options:
            model = {"params": params, "step_time_s": step_time_s, "sites": sites, "inner_steps": inner_steps,
                     "fragments": fragments, "overlap": overlap, "bits": bits, "buckets": buckets}
            try:
                needed = required_bandwidth(method, target_cu, **model)
            except ValueError:
                needed = math.inf  # unreachable at any bandwidth we consider
            rows.append({
                "method": method,
                "bits": bits,
                "bandwidth_bps": bandwidth_bps,
                "cu": compute_utilisation(method, bandwidth_bps=bandwidth_bps, **model),
                "exposed_comm_s_per_step": exposed_comm_time_per_step(
                    method, bandwidth_bps=bandwidth_bps, **model),
                "target_cu": target_cu,
                "required_bandwidth_bps": needed,
            })
    return rows
