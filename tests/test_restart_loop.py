"""The compiled restart loop gives exactly the event path's results.

The references are the same simulator without the loop (every failure a SimPy event, failure-free
stretches settled in closed form) and, for a few of them, with one SimPy event per phase end as well.
Summary, timeline and events must be identical (equal, not close) on random restarting lockstep jobs:
several chip faults, blast radii, lemons, repair pipelines, target subsets, detect + reschedule of 0
or not, checkpoint intervals fixed or Daly, work-defined jobs, halt bounds that trip and that do not,
multi-island jobs; and the loop must actually have played each of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_scenario
from test_stretch import strip

from sim import restart_loop
from sim.runner import run_replication


def random_case(seed: int) -> tuple[list[str], list[dict]]:
    """Overrides and faults of one random eligible scenario."""
    rng = np.random.default_rng(seed)
    days = float(rng.choice([1, 3, 10]))
    sets = [
        f"duration={days}d", f"seed={seed}",
        f"topology.regions.0.islands.0.count={int(rng.integers(1, 4))}",
        f"training.checkpoint.write_time={float(rng.choice([1, 30, 120])):g}s",
        f"training.recovery.detect={float(rng.choice([0, 60])):g}s",
        f"training.recovery.reschedule={float(rng.choice([0, 300])):g}s",
        f"training.recovery.reload={float(rng.uniform(10, 900)):.3f}s",
    ]
    sets.append("training.checkpoint.interval=daly" if rng.random() < 0.4
                else f"training.checkpoint.interval={float(rng.uniform(300, 5000)):.2f}s")
    if rng.random() < 0.4:  # a work-defined job (often done before the horizon)
        sets.append(f"until={{steps: {int(rng.uniform(0.2, 0.7) * days * 86400)}}}")
    if rng.random() < 0.3:  # a halt bound that may trip at a check
        sets.append(f"halt=[{{metric: goodput, min: {rng.uniform(0.5, 0.9):.3f}}}]")
    faults = []
    for k in range(int(rng.integers(1, 4))):
        fault = {"name": f"chips{k}", "kind": "chip_failure", "mtbf": f"{float(10 ** rng.uniform(2.5, 4.7)):.1f}h",
                 "blast_radius": str(rng.choice(["chip", "host", "cube"])), "repair": "2h"}
        if rng.random() < 0.3:
            fault["lemons"] = {"unit": "host", "fraction": 0.05, "factor": 8.0}
        if rng.random() < 0.3:
            fault["repair"] = {"auto": "1h", "success": 0.6, "manual": "1d"}
        if rng.random() < 0.3:
            fault["target"] = {"mode": "one"}
        if rng.random() < 0.2:
            fault["cause"] = "systematic"
        faults.append(fault)
    return sets, faults


def played_by_loop(monkeypatch) -> list[int]:
    """Count the slices the restart loop plays (so a test knows the loop ran)."""
    calls = [0]
    advance = restart_loop.RestartLoop.advance

    def counted(self, limit_s):
        calls[0] += 1
        return advance(self, limit_s)

    monkeypatch.setattr(restart_loop.RestartLoop, "advance", counted)
    return calls


def assert_same(fast, slow) -> None:
    assert strip(fast.summary) == strip(slow.summary)
    for table in ("timeline", "events"):
        assert fast.tables[table].to_pylist() == slow.tables[table].to_pylist(), table


@pytest.mark.parametrize("compiled_from", [0, math.inf], ids=["compiled", "plain"])
@pytest.mark.parametrize("seed", range(24))
def test_loop_equals_event_path_on_random_jobs(seed, compiled_from, monkeypatch):
    """Compiled, or the same loop as plain Python (what small runs use)."""
    monkeypatch.setattr(restart_loop, "COMPILED_FROM_WORK", compiled_from)
    sets, faults = random_case(seed)
    scenario = make_scenario(*sets, faults=faults)
    calls = played_by_loop(monkeypatch)
    fast = run_replication(scenario, 0)
    assert calls[0] > 0, "the scenario should have been played by the restart loop"
    slow = run_replication(scenario, 0, restart_loop=False)
    assert slow.summary["interruptions"] > 0
    assert_same(fast, slow)


@pytest.mark.parametrize("seed", [3, 7])
def test_loop_equals_event_per_checkpoint(seed):
    sets, faults = random_case(seed)
    scenario = make_scenario(*sets, faults=faults)
    assert_same(run_replication(scenario, 0), run_replication(scenario, 0, event_per_checkpoint=True))


def test_loop_resumes_exactly_across_calls(monkeypatch):
    """Slices whose rows overflow the loop's arrays, or whose arrivals are drawn a few at a time, are
    played in several calls, with the same result."""
    monkeypatch.setattr(restart_loop, "SCRATCH", 8)
    monkeypatch.setattr(restart_loop, "ROOM", 24)
    monkeypatch.setattr(restart_loop, "DRAWN", 3)
    sets, faults = random_case(5)
    scenario = make_scenario(*sets, "training.checkpoint.interval=200s", faults=faults)
    calls = played_by_loop(monkeypatch)
    fast = run_replication(scenario, 0)
    assert calls[0] > 0
    assert len(fast.tables["timeline"]) > 200
    assert_same(fast, run_replication(scenario, 0, restart_loop=False))


def test_work_defined_and_halted_runs_end_where_the_event_path_ends():
    """Time-to-train and a tripped halt bound: the same end time, the same partial books."""
    chips = [{"name": "chips", "kind": "chip_failure", "mtbf": "300h", "repair": "1h"}]
    done = make_scenario("until={steps: 200000}", "duration=30d", faults=chips)
    halted = make_scenario("halt=[{metric: goodput, min: 0.9}]", "duration=10d", faults=chips)
    for scenario in (done, halted):
        fast, slow = run_replication(scenario, 0), run_replication(scenario, 0, restart_loop=False)
        assert_same(fast, slow)
    assert run_replication(done, 0).summary["time_to_train_s"] is not None
    assert run_replication(halted, 0).summary["halted"] is not None


@pytest.mark.parametrize("extra", [
    {"name": "slow", "kind": "slowdown", "mtbf": "1d", "duration": "2h", "factor": 1.5},
    {"name": "out", "kind": "island_outage", "mtbf": "5d", "duration": "3h"},
    {"name": "aged", "kind": "chip_failure", "mtbf": "500h", "lifetime": "weibull", "shape": 0.7},
])
def test_anything_else_plays_on_the_event_path(extra, monkeypatch):
    """Other fault kinds and non-exponential lifetimes are not the loop's to play."""
    chips = {"name": "chips", "kind": "chip_failure", "mtbf": "1000h"}
    calls = played_by_loop(monkeypatch)
    run_replication(make_scenario("duration=2d", faults=[chips, extra]), 0)
    assert calls[0] == 0


@pytest.mark.parametrize("sets", [["training.on_failure=spares"], ["training.policy=elastic_dp"],
                                  ["training.policy=decoupled_diloco"]])
def test_other_strategies_play_on_the_event_path(sets, monkeypatch):
    calls = played_by_loop(monkeypatch)
    run_replication(make_scenario("duration=6h", *sets, faults=[{"name": "c", "kind": "chip_failure", "mtbf": "500h"}]), 0)
    assert calls[0] == 0
