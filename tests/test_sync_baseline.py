"""The synchronous baseline against the checkpoint/restart closed forms (failure-data.md §2.6-2.7).

sync_dp with ``on_failure: restart`` on one island (no all-reduce traffic) is exactly the model of
the exact expected-period formula: failures form a Poisson stream of rate chips / mtbf; a failure while
running, checkpointing or reloading loses the work since the last checkpoint, then D = detect +
reschedule (no failures) and R = reload (failures can strike). So

    goodput = W / E[T],   E[T] = e^{R/M} (M + D) (e^{(W+C)/M} - 1),   M = mtbf_chip / chips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_scenario, run

from sim.checkpointing import (
    daly_interval_s,
    exact_optimal_interval_s,
    expected_goodput,
    expected_period_s,
    first_order_waste,
    young_interval_s,
)
from sim.policies.lockstep import checkpoint_interval_s, job_mtbf_s
from sim.topology import build_topology

CHIPS = 1024
MIN, HOUR = 60.0, 3600.0


def exact_goodput(W: float, C: float, D: float, R: float, M: float) -> float:
    """The exact formula written out again here, independently of sim.checkpointing."""
    return W / (math.exp(R / M) * (M + D) * (math.exp((W + C) / M) - 1.0))


def sync_scenario(W, C, D, R, M, horizon_s, seed=1, **top):
    """One 1,024-chip island, sync_dp restart, chip failures with job MTBF M (D is all 'detect')."""
    return make_scenario(
        f"seed={seed}",
        f"duration={horizon_s}",
        f"training.checkpoint.interval={W}",
        f"training.checkpoint.write_time={C}",
        f"training.recovery.detect={D}",
        "training.recovery.reschedule=0",
        f"training.recovery.reload={R}",
        faults=[{"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": M * CHIPS, "blast_radius": "host"}],
        **top,
    )


# (W, C, D, R, M, horizon): horizons hold ~7,000-11,000 failures, so one run's goodput has a
# relative standard deviation of about 0.2 % (measured over seeds): 1 % is about five sigma.
CONFIGS = [
    pytest.param(1000, 60, 600, 300, 9000, 8e7, id="M=2.5h,W=1000s,D+R=15m"),
    pytest.param(600, 30, 240, 120, 3600, 4e7, id="M=1h,W=10m,D+R=6m"),
    pytest.param(3600, 120, 1800, 900, 36000, 2.4e8, id="M=10h,W=1h,D+R=45m"),
]


@pytest.mark.parametrize("W, C, D, R, M, horizon", CONFIGS)
def test_goodput_matches_exact_period_formula(W, C, D, R, M, horizon):
    """Simulated sync_dp goodput equals W / E[T_period] within 1 %."""
    summary, _ = run(sync_scenario(W, C, D, R, M, horizon))
    expected = exact_goodput(W, C, D, R, M)
    assert summary["goodput"] == pytest.approx(expected, rel=0.01)
    # and the number of failures is the Poisson mean within four sigma
    mu = horizon / M
    assert abs(summary["failures"]["chip_failure"] - mu) < 4 * math.sqrt(mu)


def test_module_formula_is_the_published_one():
    """sim.checkpointing.expected_goodput is the formula of failure-data.md §2.6 item 3."""
    for W, C, D, R, M in [(1000, 60, 600, 300, 9000), (600, 30, 240, 120, 3600), (50, 5, 1, 1, 100)]:
        assert expected_goodput(W, C, D, R, M) == pytest.approx(exact_goodput(W, C, D, R, M), rel=1e-12)
        assert expected_period_s(W, C, D, R, M) == pytest.approx(W / exact_goodput(W, C, D, R, M), rel=1e-12)


@pytest.mark.parametrize("mtbf_h, published_min, decimals", [(24, 117, 0), (6, 57, 0), (0.25, 9.1, 1)])
def test_daly_published_cases(mtbf_h, published_min, decimals):
    """Daly (2006): R = 10 min, C = 5 min and M = 24 h / 6 h / 15 min give 117 / 57 / 9.1 min."""
    tau_min = daly_interval_s(5 * MIN, mtbf_h * HOUR) / MIN
    assert round(tau_min, decimals) == published_min
    # Young's first-order interval is longer than Daly's by about C (Daly subtracts the write time)
    assert young_interval_s(5 * MIN, mtbf_h * HOUR) / MIN == pytest.approx(math.sqrt(2 * 5 * mtbf_h * 60), rel=1e-12)


def test_daly_beyond_its_range_is_the_mtbf():
    """For C >= 2M Daly's rule is tau = M."""
    assert daly_interval_s(3 * HOUR, 1 * HOUR) == HOUR


def test_exact_optimum_lambert_w():
    """The exact optimum for M = 9000 s, C = 60 s is 999.62 s (= Daly); Young gives 1039.23 s."""
    assert exact_optimal_interval_s(60, 9000) == pytest.approx(999.62, abs=0.01)
    assert daly_interval_s(60, 9000) == pytest.approx(999.62, abs=0.01)
    assert young_interval_s(60, 9000) == pytest.approx(1039.23, abs=0.01)


@pytest.mark.parametrize("W, goodput", [(600, 0.79448), (999.62, 0.80605), (3600, 0.72281)])
def test_published_goodputs(W, goodput):
    """At R = 300 s, D = 600 s, M = 9000 s, C = 60 s: goodput 0.79448 / 0.80605 / 0.72281."""
    assert expected_goodput(W, 60, 600, 300, 9000) == pytest.approx(goodput, abs=5e-6)


def test_first_order_waste_overestimates():
    """The first-order waste (0.216 at M = 2.5 h, W = 1000 s) overestimates the exact 0.194."""
    assert first_order_waste(1000, 60, 600, 300, 9000) == pytest.approx(0.216, abs=1e-3)
    assert 1 - expected_goodput(1000, 60, 600, 300, 9000) == pytest.approx(0.194, abs=5e-4)


def test_simulated_optimum_is_daly():
    """Sweeping W on a log grid, the peak of a parabola through simulated goodputs is Daly's interval within 5 %."""
    grid = [500, 700, 1000, 1400, 2000]
    # the same seed for every W: common random numbers (the failure stream does not depend on W)
    goodputs = [run(sync_scenario(W, 60, 600, 300, 9000, 3e7))[0]["goodput"] for W in grid]
    a, b, _ = np.polyfit(np.log(grid), goodputs, 2)
    assert a < 0
    w_peak = math.exp(-b / (2 * a))
    assert w_peak == pytest.approx(daly_interval_s(60, 9000), rel=0.05)
    assert max(goodputs) == goodputs[2]  # the grid point next to Daly's 999.6 s is the best one


@pytest.mark.parametrize("rule", ["young", "daly"])
def test_interval_rule_uses_job_mtbf(rule):
    """'young' / 'daly' resolve with the job MTBF: chips / chip MTBF plus stochastic island outages."""
    scenario = make_scenario(
        f"training.checkpoint.interval={rule}",
        "training.checkpoint.write_time=60",
        "topology.regions.0.islands.0.count=4",
        faults=[
            {"name": "chips", "kind": "chip_failure", "mtbf": "50000h"},
            {"name": "outages", "kind": "island_outage", "mtbf": "100d", "duration": "1h"},
            # slowdowns and link faults stop nothing: they must not shorten the interval
            {"name": "slow", "kind": "slowdown", "mtbf": "1d", "duration": "1h"},
        ],
    )
    topology = build_topology(scenario)
    # 4 x 1024 chips at 50,000 h each, plus 4 islands each losing power every 100 days
    rate = 4 * 1024 / (50000 * HOUR) + 4 / (100 * 86400)
    M = 1 / rate
    assert job_mtbf_s(scenario, topology) == pytest.approx(M, rel=1e-12)
    x = 60 / (2 * M)
    by_hand = math.sqrt(2 * 60 * M) if rule == "young" else math.sqrt(2 * 60 * M) * (1 + math.sqrt(x) / 3 + x / 9) - 60
    assert checkpoint_interval_s(scenario, topology) == pytest.approx(by_hand, rel=1e-12)


def test_simulated_checkpoints_are_daly_apart():
    """In a run, two checkpoints with no failure between them are W_daly + C apart."""
    M = 9000.0
    scenario = sync_scenario("daly", 60, 600, 300, M, 2 * 86400)
    summary, tables = run(scenario)
    events = tables["events"].to_pandas()
    W = daly_interval_s(60, M)
    assert summary["checkpoint_interval_s"] == pytest.approx(W, rel=1e-12)
    kinds, times = events["kind"].tolist(), events["time_s"].tolist()
    gaps = [t2 - t1 for (k1, t1), (k2, t2) in zip(zip(kinds, times), zip(kinds[1:], times[1:]))
            if k1 == "checkpoint" and k2 == "checkpoint"]
    assert len(gaps) > 20
    assert gaps == pytest.approx([W + 60] * len(gaps), rel=1e-9)


def test_no_failures_goodput_is_checkpoint_overhead():
    """Without failures, goodput is W / (W + C) over whole periods."""
    summary, _ = run(make_scenario("duration=106000", "training.checkpoint.interval=1000", "training.checkpoint.write_time=60"))
    assert summary["goodput"] == pytest.approx(1000 / 1060, rel=1e-12)
    assert summary["interruptions"] == 0 and summary["chip_time"]["lost"] == 0


def test_free_checkpoints_lose_nothing_and_scheduled_failures_set_the_interval():
    """write_time 0 with daly: checkpoints are continuous, so a restart loses no work; a job whose only
    failures are scheduled every 2 h gets the Daly interval of a 2 h MTBF."""
    from sim.checkpointing import daly_interval_s

    fails = [{"name": "c", "kind": "chip_failure", "every": "2h", "repair": "10m"}]
    free, _ = run(make_scenario("training.checkpoint.interval=daly", "training.checkpoint.write_time=0s", faults=fails))
    assert free["chip_time"]["lost"] == 0.0 and free["checkpoint_interval_s"] is None
    paid, _ = run(make_scenario("training.checkpoint.interval=daly", "training.checkpoint.write_time=60s", faults=fails))
    assert paid["checkpoint_interval_s"] == pytest.approx(daly_interval_s(60.0, 86400 / 11))  # 11 injections in 1 d
    assert paid["chip_time"]["lost"] > 0
