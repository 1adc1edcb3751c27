"""How well a sweep uses the cores: serial vs the local process pool vs a Dask LocalCluster.

Usage: ``python bench/bench_sweep.py [--workers N] [--days D] [--seeds S]``

The sweep is ``scenarios/quickstart.yaml`` (sync_dp on 16k v5p chips, chip failures at the Llama 3
rate) over ``training.checkpoint.write_time`` (4 values) x ``training.recovery.reload`` (2 values) x
``--seeds`` seeds (default 5): 40 replications. ``--days`` (default 150) sets each replication's
simulated span so that one takes ~0.5 s: long enough that starting the worker processes and shipping
jobs are amortised, which is the regime sweeps are for.

Three runs of the same plan, each into a fresh folder, through :func:`sim.sweep.run_sweep`, so every
figure includes writing rows and per-run results folders:

* ``serial``: :class:`~sim.executors.SerialExecutor`, every replication in this process;
* ``local``: :class:`~sim.executors.LocalExecutor` with ``--workers`` processes (pool start included);
* ``dask``: :class:`~sim.executors.DaskExecutor` starting a LocalCluster of ``--workers`` processes
  (cluster start and stop included).

Parallel efficiency = serial / (parallel x workers); the target is >= 0.85. It needs the cores to
be free: on shared cores, other load slows every replication of the parallel runs. ``workers busy``
= the replications' own wall time summed / (parallel x workers) separates the two causes: it is the
share of the run in which the workers were inside a replication, so 1 - busy is what the executor
itself costs (pool or cluster start, shipping jobs and rows, the tail when fewer jobs than workers
remain). The three runs' rows are
also compared (apart from wall-time columns): they must be identical. This is not a test: figures
depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from sim.executors import DaskExecutor, LocalExecutor, SerialExecutor
from sim.sweep import WALL_COLUMNS, load_sweep, plan_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def timed(plan, folder: Path, executor) -> float:
    start = time.perf_counter()
    outcome = run_sweep(plan, folder, executor)
    elapsed = time.perf_counter() - start
    if outcome.errors:
        raise SystemExit(f"{outcome.errors} replication(s) failed; see {folder / 'rows'}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    plan = plan_sweep(
        ROOT / "scenarios" / "quickstart.yaml",
        overrides=[f"duration={args.days}d"],
        grid={"training.checkpoint.write_time": ["30s", "60s", "120s", "300s"], "training.recovery.reload": ["1m", "5m"]},
        seeds=list(range(1, args.seeds + 1)),
    )
    print(f"{plan.total} replications of {args.days} simulated days; {args.workers} workers")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        root = Path(scratch)
        serial = timed(plan, root / "serial", SerialExecutor())
        per_run = load_sweep(root / "serial")["row_wall_s"]
        print(f"serial   {serial:7.2f} s   ({per_run.mean():.3f} s per replication, min {per_run.min():.3f}, max {per_run.max():.3f})")
        for name, executor in (("local", LocalExecutor(args.workers)), ("dask", DaskExecutor(workers=args.workers))):
            elapsed = timed(plan, root / name, executor)
            efficiency = serial / (elapsed * args.workers)
            inside = load_sweep(root / name)["row_wall_s"]
            busy = inside.sum() / (elapsed * args.workers)
            print(
                f"{name:8} {elapsed:7.2f} s   speed-up {serial / elapsed:4.2f}x   efficiency {efficiency:.2f} "
                f"(target >= 0.85)   workers busy {busy:.2f}   {inside.mean():.3f} s per replication"
            )
        # (a sweep without the surrogate has no surrogate_wall_s column)
        reference = load_sweep(root / "serial").drop(columns=list(WALL_COLUMNS), errors="ignore")
        for name in ("local", "dask"):
            pd.testing.assert_frame_equal(reference, load_sweep(root / name).drop(columns=list(WALL_COLUMNS), errors="ignore"))
        print("rows identical on serial, local and dask (apart from wall-time columns)")


if __name__ == "__main__":
    main()
