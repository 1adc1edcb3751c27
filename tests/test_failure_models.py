"""Failure models reliability engineers use: lemon hosts, repair pipelines, systematic vs random,
lognormal lifetimes, spare pools that run dry.

Expected values are closed forms of the model (Poisson superposition, the renewal theorem, the
binomial escalation share), checked within four standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_scenario, run

from sim.distributions import Constant, Exponential, Pipeline
from sim.loading import ScenarioError

HOUR = 3600.0
CHIPS, PER_HOST = 1024, 4  # v5p: 4 chips per host, so 256 hosts


def failures_scenario(fault: dict, duration: str = "200d", *sets: str):
    """Failures only matter here: an island that never stops for them (elastic, tiny pauses)."""
    return make_scenario(f"duration={duration}", "training.checkpoint.interval=1d", *sets,
                         faults=[{"name": "chips", "kind": "chip_failure", "blast_radius": "chip", **fault}])


def within(count: float, mean: float, sigmas: float = 4.0) -> bool:
    return abs(count - mean) < sigmas * math.sqrt(mean)


def test_lemon_hosts_raise_failures_by_the_expected_factor():
    """10 % of the hosts failing 8x as often: failures x (1 + 0.1 * 7) = 1.7, the excess counted systematic."""
    mtbf = 20000 * HOUR
    fault = {"mtbf": mtbf, "lemons": {"fraction": 0.1, "factor": 8}}
    summary, _ = run(failures_scenario(fault))
    horizon = 200 * 86400
    lemon_chips = round(0.1 * CHIPS / PER_HOST) * PER_HOST
    random_mean = CHIPS * horizon / mtbf
    systematic_mean = lemon_chips * 7 * horizon / mtbf
    assert within(summary["failures"]["chip_failure"], random_mean + systematic_mean)
    assert summary["failures"]["chip_failure"] / random_mean == pytest.approx(1.7, rel=0.12)
    assert within(summary["failures_by_cause"]["random"], random_mean)
    assert within(summary["failures_by_cause"]["systematic"], systematic_mean)
    # without lemons: only the random stream
    plain, _ = run(failures_scenario({"mtbf": mtbf}))
    assert within(plain["failures"]["chip_failure"], random_mean) and "systematic" not in plain["failures_by_cause"]


def test_lemons_cleared_by_repair_stop_failing_often():
    """With cleared_by_repair, a lemon stops being one at its first repair: at most one systematic
    failure per lemon host (26 of them), however high the factor."""
    fault = {"mtbf": 20000 * HOUR, "lemons": {"fraction": 0.1, "factor": 50, "cleared_by_repair": True}}
    summary, _ = run(failures_scenario(fault))
    assert 0 < summary["failures_by_cause"]["systematic"] <= round(0.1 * CHIPS / PER_HOST)
    kept, _ = run(failures_scenario({**fault, "lemons": {"fraction": 0.1, "factor": 50}}))
    assert kept["failures_by_cause"]["systematic"] > 10 * round(0.1 * CHIPS / PER_HOST)


def test_repair_pipeline_escalates_the_failed_share():
    """Automatic repair succeeding with p = 0.7: 30 % of repairs escalate; mean repair auto + 0.3 manual."""
    pipeline = Pipeline(Constant(600.0), 0.7, Exponential(2 * 86400.0))
    assert pipeline.mean == pytest.approx(600 + 0.3 * 2 * 86400)
    times, escalated = pipeline.sample_stages(np.random.default_rng(1), 200_000)
    assert times.mean() == pytest.approx(pipeline.mean, rel=0.02)
    assert (times[~escalated] == 600.0).all() and (times[escalated] > 600.0).all()
    fault = {"mtbf": 5000 * HOUR, "repair": {"auto": "10m", "success": 0.7, "manual": {"distribution": "exponential", "mean": "2d"}}}
    summary, _ = run(failures_scenario(fault, "100d"))
    n = summary["failures"]["chip_failure"]
    escalated_runs = summary["repairs_escalated"]["chips"]
    assert abs(escalated_runs - 0.3 * n) < 4 * math.sqrt(n * 0.3 * 0.7)


def test_systematic_faults_are_counted_apart():
    """A fault marked cause: systematic is counted under failures_by_cause.systematic."""
    scenario = make_scenario("duration=10d", faults=[
        {"name": "bugs", "kind": "chip_failure", "every": "1d", "cause": "systematic"},
        {"name": "chips", "kind": "chip_failure", "mtbf": "20000h"},
    ])
    summary, _ = run(scenario)
    assert summary["failures_by_cause"]["systematic"] == 9  # every day from day 1, before the 10 d horizon
    assert summary["failures_by_cause"]["random"] == summary["failures_by_fault"]["chips"]


@pytest.mark.parametrize("sigma", [0.5, 1.5])
def test_lognormal_lifetimes_fail_at_the_renewal_rate(sigma):
    """Lognormal chip lifetimes with mean mtbf: over 60 mean lifetimes each of 1,024 chips fails
    t / mtbf + (CV^2 - 1) / 2 times on average (renewal theorem, CV^2 = e^{sigma^2} - 1)."""
    mtbf = 24 * HOUR
    summary, _ = run(failures_scenario({"mtbf": mtbf, "lifetime": "lognormal", "sigma": sigma}, "60d"))
    cv2 = math.exp(sigma**2) - 1
    mean = CHIPS * (60 + (cv2 - 1) / 2)
    # a renewal count's variance is about t cv^2 / mtbf per chip
    assert abs(summary["failures"]["chip_failure"] - mean) < 4 * math.sqrt(CHIPS * 60 * cv2)


@pytest.mark.parametrize("fault, message", [
    ({"mtbf": "1000h", "lifetime": "lognormal", "start": "stationary"}, "needs weibull lifetimes"),
    ({"mtbf": "1000h", "lifetime": "weibull", "shape": 0.7, "lemons": {"fraction": 0.1, "factor": 3}}, "lemons need"),
    ({"mtbf": "1000h", "lemons": {"fraction": 0.1, "factor": 3, "unit": "island"}}, "host or cube"),
    ({"mtbf": "1000h", "repair": {"auto": "10m", "success": 1.5, "manual": "1d"}}, "success"),
])
def test_bad_failure_models(fault, message):
    """Impossible combinations are one-line errors naming the fault."""
    with pytest.raises(ScenarioError, match=message):
        failures_scenario(fault)


def spare_scenario(repair: str, when_empty: str = "wait"):
    """One 1,024-chip island with 1 warm standby host and a pool of 1 host; a host fails every ~4 h."""
    return make_scenario(
        "duration=20d", "training.on_failure=spares", "training.elastic.unit=host",
        "topology.regions.0.islands.0.spares=1", "training.spares.pool=1", "training.spares.swap=1m",
        "training.spares.selection=7m", f"training.spares.when_empty={when_empty}",
        faults=[{"name": "hosts", "kind": "chip_failure", "mtbf": 4 * HOUR * CHIPS, "blast_radius": "host",
                 "repair": repair}],
    )


def test_spare_pool_waits_when_repairs_are_slower_than_failures():
    """Repairs of 2 d against a failure every 4 h: the standby and the pool run dry, and the job waits
    for repairs (waiting chip-time, down chips); 10 min repairs never leave it waiting."""
    slow, slow_tables = run(spare_scenario("2d"))
    assert slow["spare_waits"] > 0 and slow["spare_wait_s"] > 2 * 86400
    timeline = slow_tables["timeline"].to_pandas()
    blocked = timeline[timeline["phase"] == "blocked"]
    assert math.fsum(blocked["end_s"] - blocked["start_s"]) == pytest.approx(slow["spare_wait_s"], rel=1e-9)
    assert (blocked["down_chips"] >= PER_HOST).all()  # the failed host waits outside the job
    fast, fast_tables = run(spare_scenario("10m"))
    assert fast["spare_waits"] == 0 and fast["spare_wait_s"] == 0
    # standbys swap in after 1 min, pool hosts after the 7 min host selection
    swaps = fast_tables["timeline"].to_pandas().query("phase == 'swap'")
    details = fast_tables["events"].to_pandas().query("kind == 'failure'")["detail"]
    warm, pool = details.str.contains("warm spare").sum(), details.str.contains("pool spare").sum()
    assert warm > 0 and pool > 0 and warm + pool == fast["interruptions"]
    assert math.fsum(swaps["end_s"] - swaps["start_s"]) == pytest.approx(60 * warm + 420 * pool, rel=1e-9)
    assert sum(fast["chip_time"].values()) == pytest.approx((CHIPS + 2 * PER_HOST) * 20 * 86400, rel=1e-12)


def test_empty_spare_pool_reschedules_by_default():
    """when_empty: reschedule (the default) never waits: it pays detect + reschedule instead."""
    summary, tables = run(spare_scenario("2d", "reschedule"))
    assert summary["spare_waits"] == 0
    assert (tables["timeline"].to_pandas()["phase"] == "detect").any()
