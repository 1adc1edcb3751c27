"""Does a simulated day cost the same at 10k, 1M and 10M chips? (sync_dp, chip failures on.)

Usage: ``python bench/bench_scale.py [--repeats R]``

The DESIGN budget: nothing is simulated per chip, so memory and time follow the islands and the
failure events, not the chips ("10M chips must cost about what 10k chips cost, apart from the extra
failure events"; a 10M-chip day well under 10 s). This script runs the same scenario (one simulated
day of ``sync_dp`` with restart, chip failures at 50,000 h per chip, host blast radius, Daly
checkpoints) at three sizes, each in a fresh Python process so that memory is measured honestly:

* ``wall``    : seconds inside ``run_replication`` (best of ``repeats`` processes), after a tiny warm-up
                run that pays the one-time lazy imports (reported once per variant);
* ``rss``     : growth of the process's peak resident set (``ru_maxrss``) during the run, over the
                level reached after imports and scenario validation (includes numpy/arrow buffers);
* ``traced``  : ``tracemalloc`` peak of Python and numpy allocations during the run (a separate
                process, since tracing slows the run down);
* ``events``  : SimPy events processed; ``failures``: chip failures injected.

Variants:

* ``fixed-islands``  16 islands whose size grows with the chip count: isolates the cost of chips;
* ``6144-slices``    islands of 6,144 chips, so their number grows with the chips (2, 163, 1,628):
                     the realistic layout, whose cost grows with the islands;
* ``weibull``        as ``fixed-islands`` with Weibull(k = 0.7) lifetimes. Weibull lifetimes are not
                     memoryless, so their failures are not one Poisson stream: the process keeps one
                     next-failure time per chip in a numpy array, 8 bytes x chips (80 MB at 10M chips;
                     the peak is about three times that, with argpartition's index array and the
                     draw's temporaries). It is the one O(chips) structure in the simulator, used only
                     for non-exponential lifetimes. All chips start new, so k < 1 front-loads failures
                     (infant mortality): far more failures in the first day than at the same MTBF with
                     exponential lifetimes.

Ratios compare 1M and 10M with 10k for wall time and memory against the ratio of failure events.
Print figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc

SIZES = [10_000, 1_000_000, 10_000_000]
VARIANTS = ["fixed-islands", "6144-slices", "weibull"]


def scenario_dict(chips: int, variant: str) -> dict:
    if variant == "6144-slices":
        count, per = max(1, round(chips / 6144)), 6144
    else:
        count, per = 16, chips // 16
    fault = {"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": "50000h", "blast_radius": "host",
             "repair": {"distribution": "lognormal", "median": "2h", "sigma": 0.6}}
    if variant == "weibull":
        fault.update(lifetime="weibull", shape=0.7)
    return {
        "name": f"scale-{variant}-{chips}",
        "seed": 1,
        "duration": "1d",
        "topology": {
            "regions": [{"name": "campus", "islands": [{"name": "slice", "chip": "v5p", "chips": per, "count": count}]}],
            "intra_region": {"bandwidth": "1000Tbps", "latency": "500us"},
        },
        "workload": {"params": "400B", "tokens_per_step": "16M", "step_time": "auto", "mfu": 0.45},
        "training": {"policy": "sync_dp", "on_failure": "restart", "checkpoint": {"interval": "daly", "write_time": "60s"},
                     "recovery": {"detect": "2m", "reschedule": "8m", "reload": "5m"}},
        "faults": [fault],
    }


def measure_one(chips: int, variant: str, traced: bool) -> dict:
    """Run one replication in this process and report its cost (called in a fresh subprocess)."""
    from sim.loading import validate
    from sim.runner import run_replication

    # warm up first: the first run pays one-time lazy imports (pyarrow builds its tables through
    # pandas: ~0.5 s and ~20 MB) that have nothing to do with the chip count
    warm = scenario_dict(64, "fixed-islands")
    # a tiny job whose 400B step (13 h on 64 chips) fits in the run: a step longer than the run is refused
    warm["duration"] = "1d"
    start = time.perf_counter()
    run_replication(validate(warm, "<warm-up>"), 0)
    warmup_s = time.perf_counter() - start
    scenario = validate(scenario_dict(chips, variant), "<bench>")
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    summary = run_replication(scenario, 0).summary
    wall = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "chips": summary["chips"], "islands": summary["islands"], "failures": summary["failures_total"],
        "events": summary["events"], "wall_s": wall, "rss_mb": (after_kb - before_kb) / 1024,
        "traced_mb": peak / 2**20, "goodput": summary["goodput"], "warmup_s": warmup_s,
    }


def in_subprocess(chips: int, variant: str, traced: bool) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(chips), variant] + (["--traced"] if traced else []),
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="processes per size; the fastest is kept")
    parser.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--one", nargs=2, metavar=("CHIPS", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(int(args.one[0]), args.one[1], args.traced)))
        return

    for variant in args.variants:
        rows = []
        for chips in SIZES:
            runs = [in_subprocess(chips, variant, traced=False) for _ in range(args.repeats)]
            row = min(runs, key=lambda r: r["wall_s"])
            row["rss_mb"] = max(r["rss_mb"] for r in runs)
            row["traced_mb"] = in_subprocess(chips, variant, traced=True)["traced_mb"]
            rows.append(row)
        print(f"\n== {variant}: one simulated day of sync_dp, chip MTBF 50,000 h, restart 15 min")
        print(f"{'chips':>11} {'islands':>7} {'failures':>8} {'events':>7} {'wall s':>7} {'events/s':>9} "
              f"{'rss MB':>7} {'traced MB':>9} {'goodput':>7}")
        for r in rows:
            print(f"{r['chips']:>11,} {r['islands']:>7} {r['failures']:>8} {r['events']:>7} {r['wall_s']:>7.3f} "
                  f"{r['events'] / r['wall_s']:>9,.0f} {r['rss_mb']:>7.1f} {r['traced_mb']:>9.2f} {r['goodput']:>7.4f}")
        base = rows[0]
        for r in rows[1:]:
            def ratio(key: str, r: dict = r, base: dict = base) -> float:
                return r[key] / base[key] if base[key] > 0 else math.nan

            print(f"  {r['chips'] / base['chips']:>6,.0f}x chips: failures x{ratio('failures'):.1f}, "
                  f"events x{ratio('events'):.1f}, wall x{ratio('wall_s'):.1f}, "
                  f"traced memory x{ratio('traced_mb'):.1f} ({base['traced_mb']:.2f} -> {r['traced_mb']:.2f} MB), "
                  f"rss growth {base['rss_mb']:.1f} -> {r['rss_mb']:.1f} MB")
        print(f"  (one-time warm-up run per process, not included above: {base['warmup_s']:.2f} s)")
        ten_m = rows[-1]
        verdict = "meets" if ten_m["wall_s"] < 10 else "MISSES"
        print(f"  10M chips: {ten_m['wall_s']:.2f} s for a simulated day ({verdict} the < 10 s target)")


if __name__ == "__main__":
    main()
