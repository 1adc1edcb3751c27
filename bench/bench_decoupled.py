"""Benchmark: one simulated day of ``million-chips-decoupled.yaml`` (1.2M chips, 8 learners, a chip
failure every ~26 s) against SimPy's raw event ceiling on this machine.

Prints simulated seconds per wall second, events per second next to a bare SimPy loop of timeouts,
and the surrogate's share of wall time (the same run with ``surrogate.model=off``).
Targets: a simulated day in under 10 s; the surrogate under half of the wall time.

    .venv/bin/python bench/bench_decoupled.py
"""

from __future__ import annotations

import time

import simpy

from sim.loading import load_scenario
from sim.runner import run_replication

SCENARIO = "scenarios/million-chips-decoupled.yaml"


def simpy_ceiling(n: int = 1_000_000) -> float:
    """Events per second of one process yielding ``n`` timeouts: the engine's raw speed here."""
    env = simpy.Environment()

    def ticker():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(ticker())
    start = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - start)


def best_of(overrides: list[str], repeat: int = 3) -> dict:
    runs = [run_replication(load_scenario(SCENARIO, overrides)).summary for _ in range(repeat)]
    return min(runs, key=lambda s: s["wall_time_s"])


def main() -> None:
    run_replication(load_scenario(SCENARIO, ["duration=1h"]))  # warm the Numba cache and imports
    ceiling = simpy_ceiling()
    on = best_of([])
    off = best_of(["surrogate.model=off"])
    day = 86400.0
    print(f"scenario: {SCENARIO} ({on['chips']:,.0f} chips, {on['islands']} learners, 1 simulated day)")
    print(f"failures: {on['failures_total']}  (one every {day / on['failures_total']:.1f} s)")
    print(f"wall time, surrogate on : {on['wall_time_s']:.2f} s   target < 10 s   ratio {on['wall_time_s'] / 10:.2f}")
    print(f"wall time, surrogate off: {off['wall_time_s']:.2f} s")
    share = on["surrogate_wall_s"] / on["wall_time_s"]
    print(f"surrogate share of wall time: {share:.1%} ({on['surrogate_wall_s']:.2f} s in its numerics)   target < 50%")
    print(f"simulated / wall: {on['sim_speedup']:,.0f}x")
    print(f"events: {on['events']:,}   events/s: {on['events_per_s']:,.0f}")
    print(f"SimPy raw ceiling (1 process, 1M timeouts): {ceiling:,.0f} events/s;"
          f" this run uses {on['events_per_s'] / ceiling:.1%} of it (the rest is model work per event)")
    print(f"goodput {on['goodput']:.4f}, global downtime {on['global_downtime_s']:.1f} s, final loss {on.get('final_loss', float('nan')):.4f}")


if __name__ == "__main__":
    main()
