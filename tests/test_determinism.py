"""Same scenario and seed: identical results; another seed: different ones; streams independent of order."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, make_scenario, run

from sim.loading import load_scenario
from sim.rng import Streams

WALL_FIELDS = {"wall_time_s", "events_per_s", "sim_speedup"}


def scrub(summary: dict) -> dict:
    """The summary without the fields that measure the host (wall time and rates derived from it)."""
    return {k: v for k, v in summary.items() if k not in WALL_FIELDS}


def busy_scenario(seed: int = 3):
    """Chip failures (lognormal repairs), a jittered outage, a stochastic slowdown: many random draws."""
    return make_scenario(
        f"seed={seed}", "duration=3d", "topology.regions.0.islands.0.count=3", "training.policy=elastic_dp",
        "training.on_failure=elastic",
        faults=[
            {"name": "chips", "kind": "chip_failure", "mtbf": "1y", "blast_radius": "host",
             "repair": {"distribution": "lognormal", "median": "2h", "sigma": 0.8}},
            {"name": "maint", "kind": "island_outage", "target": {"mode": "one"}, "every": "10h", "jitter": "2h",
             "duration": {"distribution": "exponential", "mean": "30m"}},
            {"name": "slow", "kind": "slowdown", "mtbf": "1d", "duration": "1h", "factor": 1.5},
        ],
    )


def test_same_seed_same_results():
    """Two runs of one scenario and seed give identical summaries, timelines and event logs."""
    a_summary, a_tables = run(busy_scenario())
    b_summary, b_tables = run(busy_scenario())
    assert scrub(a_summary) == scrub(b_summary)
    for name in ("timeline", "events", "series"):
        assert a_tables[name].equals(b_tables[name]), name
    assert a_tables["events"].num_rows > 50


def test_different_seeds_differ():
    """Another seed gives other failure times and another summary."""
    a_summary, a_tables = run(busy_scenario(3))
    b_summary, b_tables = run(busy_scenario(4))
    assert scrub(a_summary) != scrub(b_summary)
    assert not a_tables["events"].equals(b_tables["events"])


def test_replications_use_consecutive_seeds():
    """Replication r of a scenario with seed s is the run of seed s + r."""
    rep1, _ = run(busy_scenario(3), replication=1)
    seed4, _ = run(busy_scenario(4), replication=0)
    assert rep1["seed"] == seed4["seed"] == 4
    assert {k: v for k, v in scrub(rep1).items() if k != "replication"} == {
        k: v for k, v in scrub(seed4).items() if k != "replication"
    }


def test_adding_an_unrelated_fault_keeps_chip_failures():
    """A new fault has its own stream: the chip-failure count and times do not shift."""
    base = busy_scenario()
    extra = base.model_copy(
        update={"faults": [*base.faults, make_scenario(faults=[{"name": "z", "kind": "syncer_outage", "mtbf": "2h"}]).faults[0]]}
    )
    a, a_tables = run(base)
    b, b_tables = run(extra)
    assert a["failures"]["chip_failure"] == b["failures"]["chip_failure"]
    fail_times = lambda t: t["events"].to_pandas().query("kind in ['failure', 'absorbed'] and fault == 'chips'")["time_s"].tolist()
    assert fail_times(a_tables) == fail_times(b_tables)


def test_quickstart_is_deterministic():
    """The shipped quickstart scenario gives the same summary twice."""
    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml", ["duration=2d", "replications=1"])
    assert scrub(run(scenario)[0]) == scrub(run(scenario)[0])


def test_streams_independent_of_creation_order():
    """A named stream's draws depend on the seed and the name only, not on which streams came first."""
    first = Streams(11)
    a1, b1 = first.get("fault/a").random(5), first.get("fault/b").random(5)
    second = Streams(11)
    b2 = second.get("fault/b").random(5)
    second.get("something/else").random(100)
    a2 = second.get("fault/a").random(5)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(a1, b1)
    assert not np.array_equal(Streams(12).get("fault/a").random(5), a1)


def test_streams_same_object_per_name():
    """Asking twice for a name returns the same generator (a process owns its stream)."""
    streams = Streams(0)
    assert streams.get("x") is streams.get("x")
    with pytest.raises(ValueError):
        Streams(-1)


def test_stream_values_are_pinned():
    """The first draws of a named stream are pinned (SeedSequence over seed + SHA-256 of the name)."""
    import hashlib

    digest = hashlib.sha256(b"fault/chips").digest()
    key = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([7, *key]))).random(3)
    assert np.array_equal(Streams(7).get("fault/chips").random(3), expected)
