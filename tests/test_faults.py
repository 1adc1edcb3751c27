"""Failure processes: Poisson and Weibull counts, blast radius, repairs, schedules, selectors, outages, traces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE, make_scenario, run

from sim.distributions import BlockSampler, Constant, Exponential, LogNormal, Weibull
from sim.faults import schedule_times, select
from sim.runner import run_replication
from sim.scenario import IslandOutage, RepairSpec, SelectMode, Target

DATA = Path(__file__).parent / "data"
DAY, HOUR = 86400.0, 3600.0
D, R = 600.0, 300.0  # detect + reschedule and reload of the base scenario


def within_poisson(k: float, mu: float, sigmas: float = 4.0) -> bool:
    return abs(k - mu) < sigmas * math.sqrt(mu)


def events_of(tables, kind: str):
    df = tables["events"].to_pandas()
    return df[df["kind"] == kind]


# ------------------------------------------------------------------------------------------ counts


def test_exponential_failure_count_is_poisson():
    """4 x 1,024 chips for 30 days at a chip MTBF giving 2,000 expected failures: count within 4 sigma."""
    chips, T, mu = 4 * 1024, 30 * DAY, 2000.0
    mtbf = chips * T / mu
    scenario = make_scenario(
        f"duration={T}", "topology.regions.0.islands.0.count=4",
        faults=[{"name": "chips", "kind": "chip_failure", "mtbf": mtbf}],
    )
    summary, tables = run(scenario)
    k = summary["failures"]["chip_failure"]
    assert within_poisson(k, mu)
    assert summary["failures_by_fault"] == {"chips": k}
    # every arrival is accounted for: it interrupted the job or was absorbed during D
    assert summary["interruptions"] + summary["absorbed"] == k
    # victims are spread evenly over the four equal islands
    hits = tables["events"].to_pandas().query("kind in ['failure', 'absorbed']")["target"].value_counts()
    assert sorted(hits.index) == ["isl-0", "isl-1", "isl-2", "isl-3"]
    assert all(within_poisson(n, mu / 4) for n in hits)


def test_chip_failures_only_on_targeted_islands():
    """A chip_failure targeting one island of four fails only there, at that island's rate."""
    T, mu = 10 * DAY, 500.0
    mtbf = 1024 * T / mu
    scenario = make_scenario(
        f"duration={T}", "topology.regions.0.islands.0.count=4",
        faults=[{"name": "one", "kind": "chip_failure", "target": {"islands": ["isl-2"]}, "mtbf": mtbf}],
    )
    summary, tables = run(scenario)
    assert within_poisson(summary["failures"]["chip_failure"], mu)
    hits = tables["events"].to_pandas().query("kind in ['failure', 'absorbed']")
    assert set(hits["target"]) == {"isl-2"}


@pytest.mark.parametrize("shape", [0.7, 1.5])
def test_weibull_failure_count(shape):
    """Weibull lifetimes, all chips new at t=0, eta >> T: count ~ N (1 - exp(-(T/eta)^k)), not N T / MTBF."""
    N, T = 100_000, DAY
    eta = T / 0.01 ** (1 / shape)  # (T/eta)^k = 0.01: about 1,000 failures, renewals negligible
    mtbf = eta * math.gamma(1 + 1 / shape)  # the scenario states the mean lifetime
    scenario = make_scenario(
        f"duration={T}", f"topology.regions.0.islands.0.chips={N}",
        faults=[{"name": "w", "kind": "chip_failure", "mtbf": mtbf, "lifetime": "weibull", "shape": shape}],
    )
    summary, _ = run(scenario)
    k = summary["failures"]["chip_failure"]
    mu = N * (1 - math.exp(-((T / eta) ** shape)))
    assert within_poisson(k, mu)
    # and far from what memoryless lifetimes with the same mean would give
    assert not within_poisson(k, N * T / mtbf, sigmas=10)


@pytest.mark.parametrize("shape", [0.7, 1.5])
def test_weibull_stationary_start_fails_at_n_over_mtbf(shape):
    """Weibull lifetimes with ages from the renewal equilibrium: the expected count over any window is
    exactly N T / MTBF (renewal theory), whatever the shape, unlike a fresh start."""
    N, T = 100_000, DAY
    mtbf = N * T / 2000.0  # 2,000 failures expected in the day
    scenario = make_scenario(
        f"duration={T}", f"topology.regions.0.islands.0.chips={N}",
        faults=[{"name": "w", "kind": "chip_failure", "mtbf": mtbf, "lifetime": "weibull", "shape": shape,
                 "start": "stationary"}],
    )
    summary, _ = run(scenario)
    assert within_poisson(summary["failures"]["chip_failure"], 2000.0)


# ------------------------------------------------------------------------------------------ blast radius


def write_trace(folder: Path, rows: list[str]) -> Path:
    """A trace CSV: header ``time,target[,duration][,kind]``; time/duration are unit strings or seconds,
    target an island name, kind chip_failure (default) or island_outage, duration defaults to 1h."""
    path = folder / "trace.csv"
    path.write_text("time,target,duration,kind\n" + "".join(row + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "radius, unit, expected_chips",
    [
        ("chip", "chip", 1),
        ("host", "chip", 4),  # v5p: 4 chips per host
        ("cube", "chip", 64),  # v5p: 4x4x4 cube
        ("island", "chip", 1024),
        ("chip", "cube", 64),  # the island cannot drop less than its elastic unit
        ("host", "cube", 64),
    ],
)
def test_blast_radius_under_elastic(tmp_path, radius, unit, expected_chips):
    """One failure with a 2 h repair takes down exactly its blast radius (or the elastic unit) for 2 h."""
    trace = write_trace(tmp_path, ["1h,isl-0,2h,chip_failure"])
    scenario = make_scenario(
        "topology.regions.0.islands.0.count=2", "training.policy=elastic_dp", "training.on_failure=elastic",
        f"training.elastic.unit={unit}",
        faults=[{"name": "t", "kind": "trace", "file": str(trace), "blast_radius": radius}],
    )
    summary, tables = run(scenario)
    assert summary["chip_time"]["down"] == pytest.approx(expected_chips * 2 * HOUR, rel=1e-12)
    timeline = tables["timeline"].to_pandas()
    assert timeline["down_chips"].max() == expected_chips
    down = timeline[timeline["down_chips"] > 0]
    assert down["start_s"].min() == pytest.approx(HOUR) and down["end_s"].max() == pytest.approx(3 * HOUR)
    assert summary["failures"] == {"chip_failure": 1}


# ------------------------------------------------------------------------------------------ repair times


@pytest.mark.parametrize(
    "spec, mean",
    [
        ({"distribution": "constant", "value": "2h"}, 7200.0),
        ({"distribution": "exponential", "mean": "2h"}, 7200.0),
        ({"distribution": "lognormal", "median": "2h", "sigma": 0.6}, 7200.0 * math.exp(0.18)),
        ({"distribution": "weibull", "mean": "2h", "shape": 0.7}, 7200.0),
        ({"distribution": "weibull", "mean": "30m", "shape": 3.0}, 1800.0),
        ("45m", 2700.0),  # shorthand: a constant
    ],
)
def test_repair_distribution_means(spec, mean):
    """Sampled means match the analytic mean (and .mean matches the hand value) within 1 %."""
    dist = RepairSpec.model_validate(spec).build()
    assert dist.mean == pytest.approx(mean, rel=1e-12)
    sampler = BlockSampler(dist, np.random.default_rng(5), 4096)
    draws = np.array([sampler.next() for _ in range(200_000)])
    assert draws.mean() == pytest.approx(dist.mean, rel=0.01)
    assert (draws >= 0).all()


def test_distribution_parameters():
    """Weibull.from_mean inverts the mean; lognormal median is e^mu."""
    w = Weibull.from_mean(100.0, 1.5)
    assert w.scale_s * math.gamma(1 + 1 / 1.5) == pytest.approx(100.0, rel=1e-12)
    draws = LogNormal(50.0, 1.0).sample(np.random.default_rng(1), 100_001)
    assert np.median(draws) == pytest.approx(50.0, rel=0.02)
    assert Constant(3.0).sample(np.random.default_rng(0), 3).tolist() == [3.0, 3.0, 3.0]
    assert Exponential(10.0).mean == 10.0


def test_simulated_repairs_set_down_time():
    """Elastic chip-unit failures with lognormal repairs: down chip-s ~ rate (T E[R] - E[R^2]/2)."""
    T, mu, median, sigma = 30 * DAY, 3000.0, 2 * HOUR, 0.6
    scenario = make_scenario(
        f"duration={T}", "training.policy=elastic_dp", "training.on_failure=elastic", "training.elastic.unit=chip",
        faults=[{"name": "c", "kind": "chip_failure", "mtbf": 1024 * T / mu,
                 "repair": {"distribution": "lognormal", "median": median, "sigma": sigma}}],
    )
    summary, _ = run(scenario)
    mean_r = median * math.exp(sigma**2 / 2)
    second = median**2 * math.exp(2 * sigma**2)
    rate = mu / T
    expected = rate * (T * mean_r - second / 2)  # repairs still running at the end are cut short
    # compound Poisson: sd = sqrt(rate T E[R^2]); allow 4 sd
    assert abs(summary["chip_time"]["down"] - expected) < 4 * math.sqrt(rate * T * second)


# ------------------------------------------------------------------------------------------ schedules


def outage(**fields) -> IslandOutage:
    return IslandOutage.model_validate({"name": "o", "kind": "island_outage", **fields})


def test_schedule_at_and_every():
    """``at`` fires at its times; ``every`` first fires one period in and stops before the horizon."""
    rng = np.random.default_rng(0)
    assert schedule_times(outage(at=["5h", "1h"]), DAY, rng) == [HOUR, 5 * HOUR]
    assert schedule_times(outage(every="6h"), DAY, rng) == [6 * HOUR, 12 * HOUR, 18 * HOUR]
    assert schedule_times(outage(schedule={"every": "6h", "start": "1h", "until": "14h"}), DAY, rng) == [
        HOUR, 7 * HOUR, 13 * HOUR
    ]
    assert schedule_times(outage(at="30h"), DAY, rng) == []  # beyond the horizon


def test_schedule_jitter():
    """Jitter delays each firing by a uniform amount in [0, jitter]; the same stream gives the same times."""
    fault = outage(every="1h", jitter="10m")
    times = schedule_times(fault, 100 * HOUR, np.random.default_rng(3))
    nominal = np.arange(1, 100) * HOUR
    delays = np.array(times) - nominal
    assert len(times) == 99 and (delays >= 0).all() and (delays <= 600).all()
    assert delays.std() > 100  # really jittered (uniform on [0, 600] has sd 173)
    assert schedule_times(fault, 100 * HOUR, np.random.default_rng(3)) == times


def test_scheduled_faults_in_a_run():
    """A scheduled island outage fires at ``at`` and every period, and each firing is counted."""
    faults = [{"name": "maint", "kind": "island_outage", "at": ["2h"], "every": "8h", "duration": "10m"}]
    summary, tables = run(make_scenario(faults=faults))
    starts = events_of(tables, "island_outage_start")["time_s"].tolist()
    ends = events_of(tables, "island_outage_end")["time_s"].tolist()
    assert starts == pytest.approx([2 * HOUR, 8 * HOUR, 16 * HOUR])
    assert ends == pytest.approx([t + 600 for t in starts])
    assert summary["failures"] == {"island_outage": 3}


# ------------------------------------------------------------------------------------------ selectors


def picked(tables) -> list[list[str]]:
    return [t.split(",") for t in events_of(tables, "island_outage_start")["target"]]


@pytest.mark.parametrize(
    "target, n_expected, allowed",
    [
        ("all", 8, None),
        ({"islands": ["isl-2", "isl-5"]}, 2, {"isl-2", "isl-5"}),
        ({"islands": ["isl"]}, 8, None),  # the base name of a counted island spec means every copy
        ({"mode": "one"}, 1, None),
        ({"mode": "fixed", "value": 3}, 3, None),
        ({"mode": "fixed-percent", "value": 50}, 4, None),
        ({"mode": "fixed-percent", "value": 30}, 2, None),  # floor(8 x 0.3)
        ({"islands": ["isl-0", "isl-1", "isl-2"], "mode": "one"}, 1, {"isl-0", "isl-1", "isl-2"}),
        ({"regions": ["r0"]}, 8, None),
    ],
)
def test_target_selectors(target, n_expected, allowed):
    """all / names / mode one, fixed, fixed-percent pick the right number of distinct islands."""
    faults = [{"name": "o", "kind": "island_outage", "target": target, "every": "6h", "duration": "1m"}]
    summary, tables = run(make_scenario("topology.regions.0.islands.0.count=8", faults=faults))
    rounds = picked(tables)
    assert len(rounds) == 3
    for names in rounds:
        assert len(names) == len(set(names)) == n_expected
        assert allowed is None or set(names) <= allowed
    assert summary["failures"]["island_outage"] == 3 * n_expected


def test_select_is_a_sample_without_replacement():
    """select() keeps pool order, never repeats, and is reproducible for a given stream."""
    pool = list(range(100))
    target = Target(mode=SelectMode.FIXED_PERCENT, value=25)
    a = select(target, pool, np.random.default_rng(9))
    assert len(a) == 25 and a == sorted(set(a))
    assert a == select(target, pool, np.random.default_rng(9))
    assert select(Target(mode=SelectMode.FIXED, value=500), pool, np.random.default_rng(0)) == pool


def test_regions_selector_across_regions():
    """A region selector picks only that region's islands."""
    regions = [
        {"name": "east", "islands": [{"name": "e", "chip": "v5p", "chips": 64, "count": 2}]},
        {"name": "west", "islands": [{"name": "w", "chip": "v5p", "chips": 64, "count": 3}]},
    ]
    faults = [{"name": "o", "kind": "island_outage", "target": {"regions": ["west"]}, "at": "1h", "duration": "1m"}]
    _, tables = run(make_scenario(topology={"regions": regions}, faults=faults))
    assert picked(tables) == [["w-0", "w-1", "w-2"]]


# ------------------------------------------------------------------------------------------ outages


def stop_scenario(faults, *sets, **top):
    """sync_dp, no checkpoint within the day (interval 1e9 s), D = 600 s, R = 300 s, free intra-region links."""
    return make_scenario(
        "training.checkpoint.interval=1e9", *sets, faults=faults,
        **{"topology": {"regions": BASE["topology"]["regions"], "intra_region": {"bandwidth": 1e18, "latency": 0}}, **top},
    )


@pytest.mark.parametrize(
    "duration_s, downtime_s",
    [
        (2 * HOUR, 2 * HOUR + R),  # longer than D: the job waits for the island, then reloads
        (300.0, D + R),  # shorter than D: rescheduling takes longer than the outage
    ],
)
def test_island_outage_stops_sync_job(duration_s, downtime_s):
    """An island outage stops the whole sync job for max(D, outage) + R and loses the work since start;
    the 6 h rolled back are downtime too (the global model did not keep them)."""
    faults = [{"name": "o", "kind": "island_outage", "target": {"islands": ["isl-1"]}, "at": "6h", "duration": duration_s}]
    summary, _ = run(stop_scenario(faults, "topology.regions.0.islands.0.count=2"))
    assert summary["global_downtime_s"] == pytest.approx(downtime_s + 6 * HOUR, rel=1e-9)
    assert summary["uptime"] == pytest.approx(1 - (downtime_s + 6 * HOUR) / DAY, rel=1e-9)
    # all 6 h of compute before the outage was never checkpointed: rolled back
    assert summary["chip_time"]["lost"] == pytest.approx(2048 * 6 * HOUR, rel=1e-6)
    assert summary["interruptions"] == 1


def test_region_outage_stops_sync_job():
    """A region outage of one of two regions stops the job for the outage plus R (and rolls back 6 h)."""
    regions = [
        {"name": "east", "islands": [{"name": "e", "chip": "v5p", "chips": 256}]},
        {"name": "west", "islands": [{"name": "w", "chip": "v5p", "chips": 256}]},
    ]
    faults = [{"name": "o", "kind": "region_outage", "target": {"regions": ["east"]}, "at": "6h", "duration": "3h"}]
    summary, tables = run(stop_scenario(faults, topology={"regions": regions}))
    assert summary["global_downtime_s"] == pytest.approx(3 * HOUR + R + 6 * HOUR, rel=1e-9)
    assert summary["failures"] == {"region_outage": 1}
    assert events_of(tables, "region_outage_start")["target"].tolist() == ["east"]


def test_overlapping_outages_extend_downtime():
    """Two overlapping island outages keep the job down until the later one ends (6 h rolled back)."""
    faults = [
        {"name": "a", "kind": "island_outage", "target": {"islands": ["isl-0"]}, "at": "6h", "duration": "2h"},
        {"name": "b", "kind": "island_outage", "target": {"islands": ["isl-1"]}, "at": "7h", "duration": "2h"},
    ]
    summary, _ = run(stop_scenario(faults, "topology.regions.0.islands.0.count=2"))
    assert summary["global_downtime_s"] == pytest.approx(3 * HOUR + R + 6 * HOUR, rel=1e-9)


# ------------------------------------------------------------------------------------------ traces


def test_trace_replay():
    """tests/data/trace.csv (time,target[,duration][,kind]) replays two chip failures and one island outage."""
    # rows: 1h isl-0 chip_failure (repair 30m); 5h isl-1 island_outage for 2h; 12h isl-0 with defaults
    # (kind chip_failure, duration 1h). Under sync_dp restart each chip failure costs D + R and the
    # outage costs its length + R. Nothing is checkpointed, so the running time before each failure is
    # rolled back and is downtime too: 1 h, then 5 h - (1 h + D + R), then 12 h - (5 h + 2 h + R).
    faults = [{"name": "replay", "kind": "trace", "file": str(DATA / "trace.csv")}]
    summary, tables = run(stop_scenario(faults, "topology.regions.0.islands.0.count=2"))
    assert summary["failures"] == {"chip_failure": 2, "island_outage": 1}
    assert summary["failures_by_fault"] == {"replay": 3}
    rolled_back = HOUR + (4 * HOUR - D - R) + (5 * HOUR - R)
    assert summary["global_downtime_s"] == pytest.approx(2 * (D + R) + 2 * HOUR + R + rolled_back, rel=1e-9)
    assert events_of(tables, "failure")["time_s"].tolist() == pytest.approx([HOUR, 5 * HOUR, 12 * HOUR])


def test_trace_beyond_horizon_is_ignored(tmp_path):
    """Trace rows at or after the horizon never fire."""
    trace = write_trace(tmp_path, ["2h,isl,10m,chip_failure", "25h,isl,10m,chip_failure"])
    summary, _ = run(stop_scenario([{"name": "t", "kind": "trace", "file": str(trace)}]))
    assert summary["failures"] == {"chip_failure": 1}


@pytest.mark.parametrize(
    "rows, message",
    [
        (["1h,nowhere,10m,chip_failure"], "column target: not an island"),
        (["soon,isl,10m,chip_failure"], "column time: expected a duration"),
        (["1h,isl,10m,meteor"], "column kind: expected chip_failure or island_outage"),
    ],
)
def test_bad_trace_rows(tmp_path, rows, message):
    """A bad trace row is a ValueError naming the file and line."""
    trace = write_trace(tmp_path, rows)
    with pytest.raises(ValueError, match=message) as info:
        run(stop_scenario([{"name": "t", "kind": "trace", "file": str(trace)}]))
    assert f"{trace}:2" in str(info.value)
    assert not any(word in str(info.value) for word in ("nowhere", "soon", "meteor"))  # content is not echoed


def test_scheduled_chip_failures_inject_at_their_times():
    """A chip_failure with `at` (and no mtbf) fails one chip at each listed time, on a targeted island."""
    scenario = make_scenario("faults=[{name: hits, kind: chip_failure, at: [1h, 5h], repair: 10m}]")
    rep = run_replication(scenario)
    events = rep.tables["events"].to_pandas()
    hits = events[events.kind.isin(["failure", "absorbed"])]
    assert list(hits.time_s) == [3600.0, 18000.0]
    assert rep.summary["failures"] == {"chip_failure": 2}


def test_trace_outages_end_and_chip_failures_hit_random_chips(tmp_path):
    """A trace island_outage logs its end; trace chip failures on one island hit different chips, so a
    second one is not absorbed as 'unit already down'."""
    path = write_trace(tmp_path, ["1h,isl,30m,island_outage", "5h,isl,10m,chip_failure", "5h,isl,10m,chip_failure"])
    scenario = make_scenario("training.policy=elastic_dp", "training.on_failure=elastic",
                             "training.elastic.unit=host", faults=[{"name": "t", "kind": "trace", "file": str(path),
                                                                   "blast_radius": "host"}])
    summary, tables = run(scenario)
    events = tables["events"].to_pandas()
    assert list(events[events.kind == "island_outage_end"].time_s) == [3600.0 + 1800.0]
    assert summary["interruptions"] == 3 and summary["absorbed"] == 0


def test_an_island_spec_name_targets_its_copies_only():
    """`islands: [isl]` targets isl-0 and isl-1 (count 2) but not an island called isl-big."""
    scenario = make_scenario(
        "topology.regions.0.islands=[{name: isl, chip: v5p, chips: 64, count: 2}, {name: isl-big, chip: v5p, chips: 64}]",
        "training.policy=elastic_dp", "training.on_failure=elastic",
        faults=[{"name": "o", "kind": "island_outage", "target": {"islands": ["isl"]}, "at": "1h", "duration": "1h"}],
    )
    _, tables = run(scenario)
    events = tables["events"].to_pandas()
    assert events[events.kind == "island_outage_start"].target.tolist() == ["isl-0,isl-1"]


def test_a_region_outage_is_one_interruption_of_a_lockstep_job():
    """A region outage taking both islands of a job interrupts it once, not once per island."""
    scenario = make_scenario(
        "topology.regions.0.islands.0.count=2",
        faults=[{"name": "ro", "kind": "region_outage", "target": {"regions": ["r0"]}, "at": "2h", "duration": "1h"}],
    )
    summary, _ = run(scenario)
    assert (summary["failures_total"], summary["interruptions"]) == (1, 1)
