"""The lockstep baseline against its peers' speed: replications per second of two reference cases.

Usage: ``python bench/bench_lockstep.py [--replications N] [--workers W]``

* **app_model case** (Sandia's checkpoint/restart simulator): 16,384 nodes, 50,000 h MTBF per node
  (a job MTBF of 3.05 h), C = 1 min, R = 15 min (failures can strike during the restart), the Daly
  interval, 720 h of work (``until: {steps: 2592000}`` at 1 s per step). Measured in one process
  (``run_replication`` in a loop, after one warm-up replication whose extra cost, the one-time
  loading of lazy imports and compiled code, is printed apart; the job is played by the compiled
  restart loop, ``sim/restart_loop.py``, and a fifth as many replications on the event path, every
  failure a SimPy event, give the ratio between the two in the same run) and through ``sweep`` on ``--workers``
  processes against the serial executor (every figure includes the sweep's rows and per-replication
  results folders), with each run's CPU seconds and cores busy: a speed-up can be no larger than the
  ratio of cores the two runs got. Targets: >= 150 replications/s in one process, parallel speed-up >= 1.7.
* **AIReSim-sized case**: 4,096 servers for 256 days, 50,000 h per server, free checkpoints (the
  no-lost-work regime) and a 20 min restart: wall time per replication, target <= 0.1 s.

Each case also prints its mean goodput and, for the work-defined one, the mean time-to-train next
to the exact expected-period form's ``(work / W) E[T(W)]``, so a faster run that computes something
else would show. Figures depend on the machine and on what else runs on it; this is not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from sim.checkpointing import daly_interval_s, expected_period_s
from sim.executors import LocalExecutor, SerialExecutor
from sim.loading import validate
from sim.runner import run_replication
from sim.sweep import load_sweep, plan_sweep, run_sweep

HOUR = 3600.0
WORK_S = 720 * HOUR


def app_model() -> dict:
    return {
        "version": 1, "name": "app-model-case", "seed": 1, "duration": "5000h", "until": {"steps": WORK_S},
        "topology": {"regions": [{"name": "site", "islands": [{"name": "nodes", "chip": "v5p", "chips": 16384}]}]},
        "workload": {"params": "1B", "tokens_per_step": "1M", "step_time": "1s"},
        "training": {"policy": "sync_dp", "on_failure": "restart", "checkpoint": {"interval": "daly", "write_time": "1m"},
                     "recovery": {"detect": "0s", "reschedule": "0s", "reload": "15m"}},
        "faults": [{"name": "nodes", "kind": "chip_failure", "mtbf": "50000h", "repair": "1h"}],
    }


def airesim() -> dict:
    return {
        "version": 1, "name": "airesim-case", "seed": 1, "duration": "256d",
        "topology": {"regions": [{"name": "site", "islands": [{"name": "servers", "chip": "v5p", "chips": 4096}]}]},
        "workload": {"params": "1B", "tokens_per_step": "1M", "step_time": "1s"},
        "training": {"policy": "sync_dp", "on_failure": "restart", "checkpoint": {"interval": "daly", "write_time": "0s"},
                     "recovery": {"detect": "0s", "reschedule": "0s", "reload": "20m"}},
        "faults": [{"name": "servers", "kind": "chip_failure", "mtbf": "50000h", "repair": "1h"}],
    }


def in_process(data: dict, replications: int, restart_loop: bool = True) -> tuple[float, float, list[dict]]:
    """(first replication's wall s, mean wall s of the next ``replications``, their summaries);
    without ``restart_loop`` every failure is a SimPy event (the reference the loop is held equal to)."""
    scenario = validate(data, "<bench>")
    start = time.perf_counter()
    run_replication(scenario, 0, restart_loop=restart_loop)
    first = time.perf_counter() - start
    start = time.perf_counter()
    summaries = [run_replication(scenario, r + 1, restart_loop=restart_loop).summary for r in range(replications)]
    return first, (time.perf_counter() - start) / replications, summaries


def through_sweep(data: dict, replications: int, workers: int) -> list[tuple[float, float]]:
    """(wall s, CPU s of this process and its workers) of the same replications through ``sweep``:
    serial, then on ``workers`` processes."""
    with tempfile.TemporaryDirectory(prefix="bench-lockstep-") as scratch:
        root = Path(scratch)
        file = root / "case.yaml"
        file.write_text(yaml.safe_dump(data))
        plan = plan_sweep(file, seeds=list(range(1, replications + 1)))
        runs = []
        for name, executor in (("serial", SerialExecutor()), ("local", LocalExecutor(workers))):
            start, cpu = time.perf_counter(), _cpu_s()
            outcome = run_sweep(plan, root / name, executor)
            runs.append((time.perf_counter() - start, _cpu_s() - cpu))
            if outcome.errors:
                raise SystemExit(f"{outcome.errors} replication(s) failed: {load_sweep(root / name)['error'].dropna().iloc[0]}")
        return runs


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished child processes (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    data = app_model()
    first, per_rep, summaries = in_process(data, args.replications)
    mtbf_s = 50000 * HOUR / 16384
    work_per_period = daly_interval_s(60.0, mtbf_s)
    expected = WORK_S / work_per_period * expected_period_s(work_per_period, 60.0, 0.0, 900.0, mtbf_s)
    ttt = np.array([s["time_to_train_s"] for s in summaries])
    print(f"app_model case: 16,384 nodes, 50,000 h, C = 1 min, R = 15 min, Daly, 720 h of work ({args.replications} replications)")
    print(f"  one process     {1 / per_rep:8.1f} replications/s ({per_rep * 1e3:.1f} ms each; target >= 150/s)"
          f"   first replication {first:.2f} s")
    _, event_rep, event_summaries = in_process(data, max(5, args.replications // 5), restart_loop=False)
    same = all(a["goodput"] == b["goodput"] for a, b in zip(summaries, event_summaries))
    print(f"  event path      {1 / event_rep:8.1f} replications/s ({event_rep * 1e3:.1f} ms each, every failure a "
          f"SimPy event): the restart loop is {event_rep / per_rep:.1f}x faster; same goodputs: {same}")
    print(f"  goodput {np.mean([s['goodput'] for s in summaries]):.4f}; time-to-train {ttt.mean() / HOUR:.1f} h "
          f"+- {ttt.std() / math.sqrt(len(ttt)) / HOUR:.1f} (exact expected-period form: {expected / HOUR:.1f} h); "
          f"{np.mean([s['failures_total'] for s in summaries]):.0f} failures, {np.mean([s['events'] for s in summaries]):.0f} events")
    (serial, serial_cpu), (parallel, parallel_cpu) = through_sweep(data, args.replications, args.workers)
    print(f"  sweep, serial   {args.replications / serial:8.1f} replications/s ({serial:.2f} s; "
          f"{serial_cpu:.2f} CPU s, {serial_cpu / serial:.2f} cores busy)")
    print(f"  sweep, {args.workers} workers{args.replications / parallel:8.1f} replications/s ({parallel:.2f} s; "
          f"{parallel_cpu:.2f} CPU s, {parallel_cpu / parallel:.2f} cores busy): speed-up {serial / parallel:.2f} (target >= 1.7)")
    # the speed-up is at most the ratio of cores busy: when other work shares the cores (a load average
    # above the core count) the workers get a fraction of them, and the CPU seconds show the work was not larger
    print(f"  load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    first, per_rep, summaries = in_process(airesim(), max(5, args.replications // 10))
    print("AIReSim-sized case: 4,096 servers, 256 days, 50,000 h per server, no lost work, R = 20 min")
    print(f"  {per_rep:.3f} s per replication (target <= 0.1 s); goodput "
          f"{np.mean([s['goodput'] for s in summaries]):.4f}, {np.mean([s['failures_total'] for s in summaries]):.0f} failures")


if __name__ == "__main__":
    main()
