"""The benchmark scripts' own scenarios stay runnable (the scripts are not timed tests, but a scenario
that the model refuses makes them crash before they print a figure)."""

from __future__ import annotations

import sys

from conftest import ROOT


def test_bench_scale_measures_its_smallest_size():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_scale
    finally:
        sys.path.pop(0)
    for variant in bench_scale.VARIANTS:
        result = bench_scale.measure_one(bench_scale.SIZES[0], variant, traced=False)
        assert result["chips"] >= bench_scale.SIZES[0] * 0.99 and 0 < result["goodput"] <= 1
        assert result["warmup_s"] > 0
