"""The chip catalog and the step-time model.

Figures for TPU v5p and v6e come from the public Cloud TPU documentation (see
``reference/tpu.md`` in the design notes): peak bf16 FLOP/s, HBM, chips per host and the 64-chip cube as
the v5p reliability unit. Where the documentation gives no figure (v6e per-chip DCN bandwidth, a v6e
"cube") the value is a parameter: a scenario's ``chips:`` section overrides or extends the catalog.

Step time, when not given, follows the usual dense-transformer estimate: one step of a model with
``params`` parameters over ``tokens`` tokens costs ``6 * params * tokens`` FLOPs, delivered at
``chips * peak * mfu`` FLOP/s.
"""

from __future__ import annotations

from .scenario import ChipSpec

BUILTIN_CHIPS: dict[str, ChipSpec] = {
    # v5p: 459 TFLOP/s bf16, 95 GB HBM2e, 4 chips per host, cube 4x4x4 = 64 chips, 50 Gbps DCN per chip.
    "v5p": ChipSpec(peak_flops=459e12, hbm=95e9, chips_per_host=4, chips_per_cube=64, dcn_bandwidth=50e9),
    # v6e (Trillium): 918 TFLOP/s bf16, 32 GB HBM, 8 chips per host, 256-chip pod as its ICI domain;
    # the per-chip DCN figure is not published, so it is left unset (a parameter).
    "v6e": ChipSpec(peak_flops=918e12, hbm=32e9, chips_per_host=8, chips_per_cube=256, dcn_bandwidth=None),
}


def catalog(extra: dict[str, ChipSpec] | None = None) -> dict[str, ChipSpec]:
    """The built-in chips, extended or overridden by a scenario's ``chips:`` section."""
    return {**BUILTIN_CHIPS, **(extra or {})}


def step_flops(params: float, tokens: float) -> float:
    """FLOPs of one training step of a dense model: 6 * params * tokens."""
    return 6.0 * params * tokens


def derived_step_time_s(params: float, tokens: float, flops_per_s: float, mfu: float) -> float:
    """Seconds per step for a group delivering ``flops_per_s`` peak FLOP/s at utilisation ``mfu``."""
    return step_flops(params, tokens) / (flops_per_s * mfu)
