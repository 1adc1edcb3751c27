"""The chip-time ledger: buckets add up to chips x duration for every policy, recovery mode and fault kind."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
from conftest import make_scenario, run

from sim.metrics import Bucket, Ledger, Phase
from sim.policies import POLICIES

DAY = 86400.0

# Two regions with two 256-chip islands each, so WAN links, region outages and the syncer all exist.
REGIONS = [
    {"name": "east", "islands": [{"name": "e", "chip": "v5p", "chips": 256, "count": 2, "spares": 2}]},
    {"name": "west", "islands": [{"name": "w", "chip": "v5p", "chips": 256, "count": 2, "spares": 2}]},
]
CHIP_BACKGROUND = {"name": "chips", "kind": "chip_failure", "mtbf": "2y", "blast_radius": "host",
                   "repair": {"distribution": "lognormal", "median": "2h", "sigma": 0.6}}
KIND_FAULTS = {
    "chip_failure": [{"name": "cubes", "kind": "chip_failure", "mtbf": "5y", "blast_radius": "cube",
                      "repair": {"distribution": "exponential", "mean": "3h"}}],
    "island_outage": [{"name": "io", "kind": "island_outage", "target": {"mode": "one"}, "every": "7h", "jitter": "1h",
                       "duration": {"distribution": "exponential", "mean": "40m"}},
                      {"name": "io2", "kind": "island_outage", "mtbf": "1d", "duration": "20m"}],
    "region_outage": [{"name": "ro", "kind": "region_outage", "target": {"regions": ["west"]}, "at": ["5h", "30h"],
                       "duration": "3h"}],
    "slowdown": [{"name": "sl", "kind": "slowdown", "target": {"islands": ["e-1"]}, "every": "5h", "duration": "1h",
                  "factor": 3}],
    "link_degradation": [{"name": "ld", "kind": "link_degradation", "every": "6h", "duration": "2h",
                          "bandwidth": "200Mbps", "latency": "100ms"}],
    "link_partition": [{"name": "lp", "kind": "link_partition", "at": ["3h", "20h"], "duration": "45m"}],
    "syncer_outage": [{"name": "so", "kind": "syncer_outage", "every": "9h", "duration": "30m"}],
    "trace": "trace",  # filled in per test (needs a file)
}
LOCKSTEP = {
    "sync_dp-restart": ["training.policy=sync_dp", "training.on_failure=restart"],
    "sync_dp-spares": ["training.policy=sync_dp", "training.on_failure=spares"],
    "elastic_dp-join": ["training.policy=elastic_dp", "training.on_failure=elastic", "training.elastic.during_pause=join"],
    "elastic_dp-restart": ["training.policy=elastic_dp", "training.on_failure=elastic",
                           "training.elastic.during_pause=restart"],
}


def faults_for(kind: str, tmp_path) -> list:
    if kind != "trace":
        return [CHIP_BACKGROUND, *KIND_FAULTS[kind]]
    trace = tmp_path / "trace.csv"
    trace.write_text("time,target,duration,kind\n2h,e-0,1h,chip_failure\n9h,w-1,2h,island_outage\n"
                     "9h30m,w-1,10m,chip_failure\n30h,e-1,,\n")
    return [CHIP_BACKGROUND, {"name": "tr", "kind": "trace", "file": str(trace), "blast_radius": "cube"}]


def scenario_for(sets: list[str], faults: list, duration="2d"):
    return make_scenario(
        *sets, f"duration={duration}", "training.checkpoint.interval=daly", "workload.step_time=2s",
        topology={"regions": REGIONS}, faults=faults,
    )


def assert_balanced(summary: dict, chips: int, duration_s: float) -> None:
    buckets = summary["chip_time"]
    assert set(buckets) == {b.value for b in Bucket}
    assert all(v >= 0 for v in buckets.values()), buckets
    total = math.fsum(buckets.values())
    assert total == pytest.approx(chips * duration_s, rel=1e-12)
    assert math.fsum(summary["chip_time_fraction"].values()) == pytest.approx(1.0, rel=1e-12)
    assert summary["goodput"] == pytest.approx(buckets["useful"] / total, rel=1e-12)


@pytest.mark.parametrize("kind", list(KIND_FAULTS))
@pytest.mark.parametrize("mode", list(LOCKSTEP))
def test_buckets_add_up_lockstep(mode, kind, tmp_path):
    """Every provisioned chip-second is in exactly one bucket (relative 1e-12)."""
    summary, _ = run(scenario_for(LOCKSTEP[mode], faults_for(kind, tmp_path)))
    # provisioned chips: 4 x 256, plus 2 spare cubes (64 chips) per island when running on spares
    chips = 1024 + (4 * 2 * 64 if mode == "sync_dp-spares" else 0)
    assert_balanced(summary, chips, 2 * DAY)
    assert summary["failures"].get(kind if kind != "trace" else "chip_failure", 0) > 0


@pytest.mark.parametrize("policy", [p.value for p in POLICIES])
def test_buckets_add_up_every_policy(policy, tmp_path):
    """Every registered policy keeps a balanced ledger under all fault kinds at once."""
    faults = [CHIP_BACKGROUND] + [f for kind, fs in KIND_FAULTS.items() if kind not in ("chip_failure", "trace")
                                  for f in fs]
    on_failure = "elastic" if policy == "elastic_dp" else "restart"
    summary, _ = run(scenario_for([f"training.policy={policy}", f"training.on_failure={on_failure}"], faults))
    assert_balanced(summary, 1024, 2 * DAY)


def test_idle_spares_fill_the_spare_bucket():
    """Without failures, hot spares sit idle: spare chip-s = spare chips x duration."""
    summary, _ = run(scenario_for(LOCKSTEP["sync_dp-spares"], []))
    assert summary["chip_time"]["spare"] == pytest.approx(4 * 2 * 64 * 2 * DAY, rel=1e-12)
    assert summary["chip_time"]["down"] == 0


def test_spares_swap_in_place_of_rescheduling(tmp_path):
    """With spares a failure costs the swap (60 s) + reload instead of detect + reschedule, while spares last."""
    path = tmp_path / "t.csv"
    path.write_text("time,target,duration,kind\n5h,e-0,4h,chip_failure\n")
    faults = [{"name": "t", "kind": "trace", "file": str(path), "blast_radius": "cube"}]
    spare, _ = run(scenario_for(LOCKSTEP["sync_dp-spares"], faults))
    restart, _ = run(scenario_for(LOCKSTEP["sync_dp-restart"], faults))
    # one failure: restart pays D + R = 600 + 300 s, spares pay swap + R = 60 + 300 s; both also checkpoint
    assert restart["global_downtime_s"] - spare["global_downtime_s"] == pytest.approx(540, abs=1e-6)
    # the spare cube in use is not idle for the 4 h repair; the failed cube is down meanwhile
    assert spare["chip_time"]["down"] == pytest.approx(64 * 4 * 3600, rel=1e-9)


def test_elastic_loses_less_than_restart():
    """Same failures: elastic loses only the steps in flight, restart loses the work since the last checkpoint."""
    faults = [{"name": "chips", "kind": "chip_failure", "mtbf": "90d", "blast_radius": "host"}]
    elastic, _ = run(scenario_for(LOCKSTEP["elastic_dp-join"], faults, duration="4d"))
    restart, _ = run(scenario_for(LOCKSTEP["sync_dp-restart"], faults, duration="4d"))
    assert elastic["failures"] == restart["failures"]  # the same failure stream (named random streams)
    n = elastic["failures"]["chip_failure"]
    assert n > 20
    # elastic: at most one 2 s step per failure (+ comm) of 1,024 chips is lost, far below 1 %
    assert elastic["chip_time"]["lost"] <= n * 1024 * 60
    assert elastic["chip_time_fraction"]["lost"] < 0.001
    assert restart["chip_time_fraction"]["lost"] > 10 * elastic["chip_time_fraction"]["lost"]
    assert elastic["goodput"] > restart["goodput"]


def test_ledger_unit_bookkeeping():
    """Ledger: running books pending compute and exposed comm; commit -> useful, rollback -> lost."""
    ledger = Ledger(provisioned_chips=10)
    ledger.set_state(0.0, Phase.RUNNING, active=8, down=2, spare=0, compute_fraction=0.75, steps_per_s=0.5)
    ledger.commit(100.0)  # 8 chips x 100 s: 600 compute, 200 waiting; 50 steps
    ledger.set_state(100.0, Phase.RUNNING)
    ledger.rollback(140.0, fraction=0.5)  # 8 x 40 x 0.75 = 240 pending, half lost
    ledger.set_state(140.0, Phase.DETECT, active=10, down=0)
    ledger.finish(200.0)
    b = {k.value: v for k, v in ledger.buckets.items()}
    assert b["useful"] == pytest.approx(600 + 120)
    assert b["lost"] == pytest.approx(120)
    assert b["waiting"] == pytest.approx(200 + 80)
    assert b["down"] == pytest.approx(2 * 140)
    assert b["recovery"] == pytest.approx(10 * 60)
    assert ledger.total_chip_s == pytest.approx(10 * 200)
    assert ledger.committed_steps == pytest.approx(50 + 10)  # 20 pending steps, half rolled back


@pytest.mark.parametrize("policy", [p.value for p in POLICIES])
def test_timeline_matches_ledger(policy):
    """Timeline rows tile [0, T] per group and carry the chip counts that held during them."""
    faults = [CHIP_BACKGROUND, *KIND_FAULTS["island_outage"], *KIND_FAULTS["region_outage"]]
    on_failure = "elastic" if policy == "elastic_dp" else "restart"
    summary, tables = run(scenario_for([f"training.policy={policy}", f"training.on_failure={on_failure}",
                                        "training.elastic.unit=host"], faults))
    timeline = tables["timeline"].to_pandas()
    for _, rows in timeline.groupby("group"):
        rows = rows.sort_values("start_s")
        assert rows["start_s"].iloc[0] == 0.0 and rows["end_s"].iloc[-1] == pytest.approx(2 * DAY)
        assert (rows["start_s"].to_numpy()[1:] == rows["end_s"].to_numpy()[:-1]).all()
    dt = timeline["end_s"] - timeline["start_s"]
    assert math.fsum(timeline["down_chips"] * dt) == pytest.approx(summary["chip_time"]["down"], rel=1e-9, abs=1e-6)
    busy = math.fsum(timeline["active_chips"] * dt)
    # in detect + reschedule a group holds no chips (active 0): its chips not down are booked recovery
    chips = {learner["name"]: learner["chips"] for learner in summary["learners"]}
    detect = timeline[timeline["phase"] == "detect"]
    assert (detect["active_chips"] == 0).all()
    released = math.fsum((chips[row.group] - row.down_chips) * (row.end_s - row.start_s) for row in detect.itertuples())
    total = 1024 * 2 * DAY
    assert busy + released == pytest.approx(total - summary["chip_time"]["down"] - summary["chip_time"]["spare"], rel=1e-9)


def test_per_island_downtime_counts_an_island_sitting_out_an_elastic_job():
    """elastic_dp, one 2 h outage of pod-0 and nothing else: the job pauses 60 s to drop it and 60 s to
    re-add it (120 s of downtime for every island, plus the part of the step in flight that the drop
    discarded: its running time was not kept); pod-0 also sits out 7,200 - 60 s while the job runs."""
    from sim.loading import load_scenario
    from sim.runner import run_replication

    s = run_replication(load_scenario("scenarios/quickstart.yaml", [
        "training.policy=elastic_dp", "training.on_failure=elastic", "training.checkpoint.interval=30d",
        "faults=[{name: m, kind: island_outage, target: {islands: [pod-0]}, at: 1d, duration: 2h}]",
        "replications=1"])).summary
    downtime = {d["name"]: d["downtime_s"] for d in s["islands_detail"]}
    discarded = s["global_downtime_s"] - 120.0
    assert 0 < discarded < s["step_compute_s"] + s["step_comm_s"]  # a part of one step
    assert downtime == {"pod-0": pytest.approx(7260.0 + discarded), "pod-1": pytest.approx(120.0 + discarded),
                        "pod-2": pytest.approx(120.0 + discarded), "pod-3": pytest.approx(120.0 + discarded)}


def test_an_outage_under_restart_books_the_island_down_and_the_rest_waiting():
    """sync_dp, island a-0 of two out for 2 h: its chips are `down` the whole 7,200 s; the job pays D
    (600 s, recovery) then waits for the capacity (6,600 s, waiting) then reloads (300 s)."""
    scenario = make_scenario(
        "topology.regions.0.islands.0.count=2", "training.checkpoint.interval=1d", "duration=1d",
        "topology.intra_region.latency=0", "topology.intra_region.bandwidth=1e30",  # no all-reduce time
        faults=[{"name": "o", "kind": "island_outage", "target": {"islands": ["isl-0"]}, "at": "10h", "duration": "2h"}],
    )
    summary, _ = run(scenario)
    assert summary["chip_time"]["down"] == pytest.approx(1024 * 7200)
    assert summary["chip_time"]["waiting"] == pytest.approx(1024 * 6600)
    assert summary["chip_time"]["recovery"] == pytest.approx(1024 * 600 + 2048 * 300)


def test_a_straggler_makes_its_lockstep_partners_wait_at_the_barrier():
    """sync_dp, island isl-0 of two runs 3x slower for 2 h: the other island idles 2/3 of each step."""
    common = ["topology.regions.0.islands.0.count=2", "training.checkpoint.interval=1d", "duration=1d",
              "topology.intra_region.latency=0", "topology.intra_region.bandwidth=1e30"]
    slow = [{"name": "s", "kind": "slowdown", "target": {"islands": ["isl-0"]}, "at": "10h", "duration": "2h", "factor": 3}]
    summary, _ = run(make_scenario(*common, faults=slow))
    baseline, _ = run(make_scenario(*common))
    extra_waiting = summary["chip_time"]["waiting"] - baseline["chip_time"]["waiting"]
    assert extra_waiting == pytest.approx(1024 * 7200 * 2 / 3, rel=1e-9)
    assert summary["goodput"] == pytest.approx(baseline["goodput"] - 1024 * 7200 * 2 / 3 / (2048 * 86400))


def test_elastic_loses_exactly_the_step_in_flight():
    """elastic_dp on one island with a 1 s step, the island lost at t = 500.5 s: half a step of every
    chip (512 chip-seconds) is lost, nothing more."""
    scenario = make_scenario(
        "training.policy=elastic_dp", "training.on_failure=elastic", "training.checkpoint.interval=1d",
        "duration=1h", faults=[{"name": "o", "kind": "island_outage", "at": "500.5s", "duration": "10m"}],
    )
    summary, _ = run(scenario)
    assert summary["chip_time"]["lost"] == pytest.approx(512.0)


def test_useful_at_end_is_what_the_run_end_found_pending():
    """The run-end convention counts pending compute as useful; the ledger keeps how much that was."""
    ledger = Ledger(100)
    ledger.set_state(0.0, Phase.RUNNING, active=100, compute_fraction=0.75, steps_per_s=1.0)
    ledger.commit(40.0)  # 100 chips x 40 s x 0.75 kept by a checkpoint or a merge
    ledger.finish(100.0)  # the next 60 s of compute are still pending at the end
    assert ledger.useful_at_end_chip_s == pytest.approx(100 * 60 * 0.75)
    assert ledger.buckets[Bucket.USEFUL] == pytest.approx(100 * 100 * 0.75)


def test_useful_at_end_shows_learners_no_round_merged(tmp_path):
    """Quorum 1 without grace on mixed learners: rounds close at the fastest reporter, so in two hours
    three of the four learners are never merged, and what they computed is useful only by the
    run-end convention; `run` says so below the table."""
    from conftest import ROOT
    from typer.testing import CliRunner

    from sim.cli import app

    result = CliRunner().invoke(app, [
        "run", str(ROOT / "scenarios" / "sweeps" / "quality.yaml"), "--no-report", "-o", str(tmp_path / "r"),
        "--set", "duration=2h", "--set", "replications=1", "--set", "surrogate=off",
        "--set", "training.quorum=1", "--set", "training.grace.mode=none",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    rounds = pq.read_table(tmp_path / "r" / "rep-0" / "rounds.parquet").to_pylist()
    merged = {int(m) for r in rounds for m in str(r["members"]).split(",")}
    never = [learner for i, learner in enumerate(summary["runs"][0]["learners"]) if i not in merged]
    assert len(never) == 3
    # at least the never-merged learners' whole compute (each of the four holds a quarter of the chips)
    assert summary["useful_at_end_fraction"] >= 0.7 * summary["goodput"]
    assert "of goodput 1.0000 is work still unmerged or uncheckpointed when the run ended" in " ".join(result.output.split())


def test_a_learner_the_grace_window_keeps_missing_is_named(tmp_path):
    """Quorum 1 with a fixed 5 s window on mixed learners: the v5p learner in the synchronizer's region
    (steps exactly twice the v6e ones) reports just before each round opens and next just after the
    window ends, so it is never merged (README, "When a learner is never merged"). The per-learner
    counts agree with the rounds log, and `run` names that learner and no v6e one."""
    from collections import Counter

    from conftest import ROOT
    from typer.testing import CliRunner

    from sim.cli import app

    result = CliRunner().invoke(app, [
        "run", str(ROOT / "scenarios" / "sweeps" / "quality.yaml"), "--no-report", "-o", str(tmp_path / "r"),
        "--set", "duration=2h", "--set", "replications=1", "--set", "surrogate=off",
        "--set", "training.quorum=1", "--set", "training.grace.mode=fixed",
    ])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "r" / "summary.json").read_text())["runs"][0]
    rounds = pq.read_table(tmp_path / "r" / "rep-0" / "rounds.parquet").to_pylist()
    names = [learner["name"] for learner in run["learners"]]
    logged = Counter(names[int(m)] for r in rounds for m in str(r["members"]).split(","))
    assert run["merges_by_learner"] == {name: logged.get(name, 0) for name in names}
    assert run["merges_by_learner"]["central"] == 0
    assert min(run["merges_by_learner"][n] for n in ("west", "asia")) >= 0.99 * run["outer_rounds"]
    text = " ".join(result.output.split())
    assert f"note: central was merged in 0 of {run['outer_rounds']:,} rounds" in text
    assert "west" not in text.split("note: central")[1].split("(README")[0]
