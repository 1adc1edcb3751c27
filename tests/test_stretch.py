"""Failure-free stretches settled in closed form give exactly the event-per-checkpoint results.

The reference is the same simulator with ``event_per_checkpoint=True``: every run and every
checkpoint write a SimPy timeout, as before stretches existed. Ledger, summary, timeline and event
rows must be identical (not close: equal), on every lockstep mode and on what can happen inside a
stretch: failures, slowdown and repair wakes, spares returning to their pool, outages, halt checks
(which book the ledger mid-stretch) and work-defined jobs.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, make_scenario

from sim import stretch
from sim.runner import run_replication
from sim.sweep import WALL_COLUMNS

MACHINE = set(WALL_COLUMNS) | {"events"}  # what measures the machine (and the event count, by design)

CHIPS = {"name": "chips", "kind": "chip_failure", "mtbf": "2000h", "blast_radius": "host", "repair": "3h"}
CASES = {
    "restart": ([], [CHIPS]),
    "restart-daly": (["training.checkpoint.interval=daly", "duration=5d"], [CHIPS]),
    "spares-with-repairs": (
        ["training.on_failure=spares", "topology.regions.0.islands.0.spares=2", "duration=3d"],
        [{**CHIPS, "mtbf": "1000h", "repair": {"distribution": "exponential", "mean": "5h"}}],
    ),
    "spare-pool-waits": (
        ["training.on_failure=spares", "training.elastic.unit=host", "topology.regions.0.islands.0.spares=1",
         "training.spares.pool=1", "training.spares.when_empty=wait", "duration=4d"],
        [{**CHIPS, "mtbf": "4000h", "repair": {"auto": "1h", "success": 0.5, "manual": "1d"}}],
    ),
    "elastic": (["training.policy=elastic_dp", "duration=3d"], [{**CHIPS, "mtbf": "3000h"}]),
    "wakes-and-outages": (
        ["topology.regions.0.islands.0.count=3", "duration=4d"],
        [
            {**CHIPS, "mtbf": "20000h"},
            {"name": "slow", "kind": "slowdown", "mtbf": "1d", "duration": "2h", "factor": 1.5},
            {"name": "out", "kind": "island_outage", "mtbf": "5d", "duration": "3h"},
        ],
    ),
    "halt-checks": (["duration=2d", "halt=[{metric: goodput, min: 0.01}]"], [CHIPS]),
    "work-defined": (["until={steps: 150000}", "duration=30d"], [CHIPS]),
    "no-failures": (["duration=3d"], []),
    "work-defined-elastic": (["training.policy=elastic_dp", "until={steps: 100000}", "duration=30d"],
                             [{**CHIPS, "mtbf": "3000h"}]),
    # a write longer than two periods: a work-defined job's wait for its end must not come back at once
    "work-defined-long-writes": (["until={steps: 20000}", "duration=2d", "training.checkpoint.interval=30s",
                                  "training.checkpoint.write_time=120s"], []),
    "work-defined-long-reloads": (["until={steps: 60000}", "duration=5d", "training.checkpoint.interval=daly",
                                   "training.checkpoint.write_time=1s", "training.recovery.reload=400s"],
                                  [{**CHIPS, "mtbf": "500h"}]),
    "work-defined-free-checkpoints": (["training.checkpoint.interval=daly", "training.checkpoint.write_time=0s",
                                       "until={tokens: 80G}", "duration=30d"], [CHIPS]),
}


def strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in MACHINE}


def both(sets, faults, seed):
    scenario = make_scenario(*sets, f"seed={seed}", faults=faults)
    # (without the restart loop, which would play the eligible cases: tests/test_restart_loop.py)
    fast = run_replication(scenario, 0, restart_loop=False)
    slow = run_replication(scenario, 0, event_per_checkpoint=True)
    return fast, slow


@pytest.mark.parametrize("compiled_from", [0, stretch.COMPILED_FROM], ids=["compiled", "plain"])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stretches_equal_event_per_checkpoint(case, seed, compiled_from, monkeypatch):
    """Summary, timeline and events are identical with and without closed-form stretches (settled by
    the compiled kernel, or by the same function as plain Python)."""
    monkeypatch.setattr(stretch, "COMPILED_FROM", compiled_from)
    sets, faults = CASES[case]
    fast, slow = both(sets, faults, seed)
    assert strip(fast.summary) == strip(slow.summary)
    for table in ("timeline", "events"):
        assert fast.tables[table].to_pylist() == slow.tables[table].to_pylist(), table
    assert slow.summary["events"] > 0


def test_stretches_save_events():
    """A failure-free stretch costs no SimPy event per checkpoint."""
    fast, slow = both(["duration=10d"], [], 1)
    checkpoints = fast.tables["events"].to_pandas()["kind"].eq("checkpoint").sum()
    assert checkpoints > 800
    assert slow.summary["events"] >= 2 * checkpoints
    assert fast.summary["events"] < checkpoints / 8  # what is left: the run's own 1 % progress checks


def test_restarts_in_a_stretch_are_handled_without_an_interrupt(monkeypatch):
    """A restart that strikes a failure-free stretch is handled at once: no failure interrupts the
    job's process (the event path interrupts it once per restart), with results held equal above."""
    import simpy

    from sim.learner import Failure

    interrupts = []
    interrupt = simpy.events.Process.interrupt
    monkeypatch.setattr(simpy.events.Process, "interrupt",
                        lambda process, cause=None: (interrupts.append(cause), interrupt(process, cause))[1])
    sets, faults = CASES["restart-daly"]
    fast = run_replication(make_scenario(*sets, "seed=1", faults=faults), 0)
    assert fast.summary["interruptions"] > 20
    assert not any(isinstance(cause, Failure) for cause in interrupts)
    slow = run_replication(make_scenario(*sets, "seed=1", faults=faults), 0, event_per_checkpoint=True)
    assert sum(isinstance(cause, Failure) for cause in interrupts) == slow.summary["interruptions"]


SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_as_lockstep_jobs_equal_event_per_checkpoint(path):
    """Every shipped scenario, played by sync_dp (restart) for up to two days without the surrogate
    (which watches every commit, so it never takes the closed form): identical either way."""
    from sim.loading import load_scenario

    scenario = load_scenario(path, ["training.policy=sync_dp", "training.on_failure=restart", "surrogate=off",
                                    "replications=1", "hypotheses=[]", "halt=[]"])
    scenario = scenario.model_copy(update={"duration": min(scenario.duration, 2 * 86400.0)})
    fast = run_replication(scenario, 0, scenario_dir=path.parent)
    slow = run_replication(scenario, 0, scenario_dir=path.parent, event_per_checkpoint=True)
    assert strip(fast.summary) == strip(slow.summary)
    for table in ("timeline", "events"):
        assert fast.tables[table].to_pylist() == slow.tables[table].to_pylist(), table
