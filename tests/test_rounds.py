"""The round engine against closed forms: every number here comes from a formula, not from a run.

Scenarios are small (one or two regions, a few learners, fixed step times) so that each test isolates
one mechanism: the overlap bound under the two schedules, a shared bottleneck link, elastic pauses,
restarts, the bucketed-overlap model, deadlocks and their timeout, and the invariants (the ledger adds
up, no channel carries more than its capacity, no round has fewer members than the quorum unless it
timed out).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.bandwidth import compute_utilisation
from sim.checkpointing import expected_goodput
from sim.loading import validate
from sim.runner import run_replication


def scenario(regions, *, syncer, duration="2h", training=None, faults=(), links=(), default_bw="1000Gbps",
             latency="0s", params="1B", step="1s", seed=1):
    data = {
        "version": 1, "name": "rounds", "seed": seed, "duration": duration,
        "topology": {
            "regions": [{"name": name, "islands": islands} for name, islands in regions],
            "default_link": {"bandwidth": default_bw, "latency": latency},
            "links": list(links),
            "intra_region": {"bandwidth": "1000Tbps", "latency": "0s"},
            "syncer": {"region": syncer},
        },
        "workload": {"params": params, "tokens_per_step": "1M", "step_time": step},
        "training": {"policy": "decoupled_diloco", "on_failure": "elastic", "inner_steps": 24, "fragments": 24,
                     "overlap": 2, "quorum": 1, "grace": {"mode": "none"}, "bits": 16, **(training or {})},
        "faults": list(faults),
    }
    return validate(data, "<test>")


def run(sc):
    rep = run_replication(sc)
    return rep.summary, rep.tables


def island(name, chips=1000, count=1):
    return {"name": name, "chip": "v5p", "chips": chips, "count": count}


SLOW = {"name": "slow", "kind": "slowdown", "target": {"islands": ["slow"]}, "at": "0s", "duration": "10d",
        "factor": 1.18}


def test_learner_schedule_throttles_the_fast_learner_to_the_slow_one():
    """K = M = 2 with steps s and 1.18 s: under the learner schedule the fast learner blocks at every
    round until the slow one reports, so goodput is (1 + 1/r) / 2 (equal chips)."""
    s, _ = run(scenario([("a", [island("fast"), island("slow")])], syncer="a",
                        training={"quorum": 2, "schedule": "learner"}, faults=[SLOW]))
    assert s["goodput"] == pytest.approx((1 + 1 / 1.18) / 2, rel=2e-3)
    assert s["mean_learners_per_merge"] == pytest.approx(2.0)


def test_synchronizer_schedule_has_both_learners_in_every_round_and_never_waits():
    """The same pair under the synchronizer schedule: rounds open at the slow learner's slots, the fast
    one reports at its next step and gets the result within tau steps: goodput 1, two per merge."""
    s, tables = run(scenario([("a", [island("fast"), island("slow")])], syncer="a", training={"quorum": 2},
                             faults=[SLOW]))
    assert s["goodput"] == pytest.approx(1.0, abs=1e-9)
    assert s["mean_learners_per_merge"] == pytest.approx(2.0)
    rounds = tables["rounds"].to_pandas()
    assert len(rounds) == s["outer_rounds"] and (rounds.members == "0,1").all()


def test_learners_sharing_a_bottleneck_link_reach_its_capacity_and_never_exceed_it():
    """Two learners behind one 0.4 Gbit/s link, K = 2, a 1B model at 16 bits in 24 fragments (0.667 Gbit
    each way per learner and step): a round moves 2 x 0.667 Gbit per direction, so each learner
    computes capacity x step / (2 x fragment bits) = 0.3 of the time once the overlap window is long
    enough to keep the link busy (tau = 12), and the link runs full: utilisation towards 1, never above.
    (With tau = 2 the pull-then-result dependency leaves each direction idle about half the time.)"""
    sc = scenario([("a", [island("spare", chips=1)]), ("b", [island("b", count=2)])], syncer="a",
                  training={"quorum": 2, "overlap": 12}, default_bw="0.4Gbps", duration="1h",
                  faults=[{"name": "off", "kind": "island_outage", "target": {"islands": ["spare"]},
                           "at": "0s", "duration": "10d"}])
    s, _ = run(sc)
    expected = 0.4e9 * 1.0 / (2 * 1e9 * 16 / 24)
    b = [entry for entry in s["learners"] if entry["name"].startswith("b")]
    assert sum(entry["steps"] for entry in b) / (2 * 3600) == pytest.approx(expected, rel=0.05)
    util = s["link_utilisation"]
    assert 0.9 < util["a~b>a"] <= 1.0 + 1e-9 and 0.9 < util["a~b>b"] <= 1.0 + 1e-9
    assert s["peak_link_utilisation"] <= 1.0 + 1e-9


@pytest.mark.parametrize("bandwidth_bps", [100e9, 1e9, 0.5e9, 0.2e9, 0.1e9])
def test_streaming_diloco_matches_the_bucketed_overlap_model(bandwidth_bps):
    """No failures, two learners in two regions: where the WAN hides the fragment all-reduces and
    where it is the bottleneck, goodput is compute / (compute + exposed communication) of the
    bucketed-overlap model (reference/diloco.md §3.3, :mod:`sim.bandwidth`, an independent O(1) form)."""
    sc = scenario([("a", [island("x")]), ("b", [island("y")])], syncer="a", default_bw=f"{bandwidth_bps}bps",
                  duration="1h", training={"policy": "streaming_diloco"})
    s, _ = run(sc)
    cu = compute_utilisation("streaming_diloco", params=1e9, step_time_s=1.0, bandwidth_bps=bandwidth_bps,
                             sites=2, inner_steps=24, fragments=24, overlap=2, bits=16)
    assert s["goodput"] == pytest.approx(cu, rel=0.02)


@pytest.mark.parametrize(("bandwidth_bps", "overlap"), [(1e9, 2), (0.5e9, 12)])
def test_decoupled_learner_matches_the_bucketed_model_when_the_window_covers_the_round_trip(bandwidth_bps, overlap):
    """One learner and the synchronizer in two regions. A synchronizer round pulls the fragment, then
    sends the result: two transfers in sequence, where an all-reduce overlaps both directions. Where
    the link hides them (1 Gbit/s) and where it is the bottleneck with a window long enough for the
    round trip (tau = 12 at 0.5 Gbit/s), the bucketed model holds; with tau = 2 on a saturated link the
    round trip, not the bandwidth, limits it (measured: 0.95 of the model at 0.5 Gbit/s, 0.72 at 0.1)."""
    sc = scenario([("a", [island("spare", chips=1)]), ("b", [island("b")])], syncer="a",
                  default_bw=f"{bandwidth_bps}bps", duration="1h", training={"overlap": overlap},
                  faults=[{"name": "off", "kind": "island_outage", "target": {"islands": ["spare"]},
                           "at": "0s", "duration": "10d"}])
    s, _ = run(sc)
    b = next(entry for entry in s["learners"] if entry["name"] == "b")
    cu = compute_utilisation("streaming_diloco", params=1e9, step_time_s=1.0, bandwidth_bps=bandwidth_bps,
                             sites=2, inner_steps=24, fragments=24, overlap=overlap, bits=16)
    assert b["steps"] / 3600 == pytest.approx(cu, rel=0.02)


def test_one_elastic_learner_under_poisson_failures_runs_one_over_one_plus_x():
    """Each failure costs a downscale pause d (failures during it join it) and repairs never return
    the chip within the run: the learner runs 1 / (1 + x) of the time, x = rate x d."""
    rate, pause = 1 / 600.0, 60.0
    chips = 1_000_000
    sc = scenario([("a", [island("solo", chips=chips)])], syncer="a", duration="3d",
                  training={"fragments": 1, "elastic": {"unit": "chip", "downscale": f"{pause}s", "upscale": "0s"}},
                  faults=[{"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": f"{chips / rate}s",
                           "blast_radius": "chip", "repair": {"distribution": "constant", "value": "1000d"}}])
    s, _ = run(sc)
    x = rate * pause
    assert s["failures_total"] > 350
    assert s["uptime"] == pytest.approx(1 - x / (1 + x), rel=0.01)
    assert s["goodput"] == pytest.approx(1 - x / (1 + x), rel=0.015)


def test_one_restarting_learner_matches_the_exact_expected_period_form():
    """Under restart a learner merged after every step loses the unmerged step per failure: its goodput
    is the exact expected-period form with W = one step, C = 0, D = detect + reschedule, R = reload."""
    mtbf, d, r, step = 3600.0, 120.0, 60.0, 10.0
    chips = 1000
    sc = scenario([("a", [island("solo", chips=chips)])], syncer="a", duration="5d", step=f"{step}s",
                  training={"on_failure": "restart", "inner_steps": 1, "fragments": 1, "overlap": 0,
                            "recovery": {"detect": f"{d}s", "reschedule": "0s", "reload": f"{r}s"}},
                  faults=[{"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": f"{chips * mtbf}s",
                           "blast_radius": "chip"}])
    s, _ = run(sc)
    assert s["failures_total"] > 100
    assert s["goodput"] == pytest.approx(expected_goodput(step, 0.0, d, r, mtbf), rel=0.01)


def deadlock_scenario(schedule, timeout=None):
    training = {"quorum": 2, "schedule": schedule, "elastic": {"unit": "island", "downscale": "30s",
                                                               "upscale": "0s"}}
    if timeout:
        training["round_timeout"] = timeout
    # three learners, K = 2: pauses knock their step counters out of phase
    return scenario([("a", [island("l", count=3)])], syncer="a", duration="6h", training=training,
                    faults=[{"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": "3000h",
                             "blast_radius": "island", "repair": {"distribution": "constant", "value": "37s"}}])


def test_learner_schedule_deadlocks_with_one_lt_k_lt_m_and_the_timeout_ends_it():
    stuck, tables = run(deadlock_scenario("learner"))
    assert stuck["deadlock_s"] > 600 and stuck["deadlocks"] >= 1
    events = tables["events"].to_pandas()
    assert (events.kind == "deadlock").sum() == stuck["deadlocks"]
    freed, _ = run(deadlock_scenario("learner", timeout="20s"))
    assert freed["deadlock_s"] < 0.1 * stuck["deadlock_s"] and freed["rounds_timed_out"] > 0
    assert freed["goodput"] > stuck["goodput"]
    synced, _ = run(deadlock_scenario("synchronizer"))
    assert synced["deadlock_s"] == 0.0 and synced["deadlocks"] == 0


ISLANDS = ["e0", "e1", "w0", "w1"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=st.sampled_from(["synchronizer", "learner"]),
    quorum=st.integers(1, 4),
    grace=st.sampled_from([{"mode": "none"}, {"mode": "adaptive", "max": "5s"}, {"mode": "fixed", "fixed": "2s"}]),
    on_failure=st.sampled_from(["elastic", "restart"]),
    apply=st.sampled_from(["keep_local", "overwrite"]),
    bandwidth=st.sampled_from(["0.3Gbps", "2Gbps", "50Gbps"]),
    mtbf_h=st.floats(200, 20000),
    partition_at=st.floats(0, 3000),
    slow=st.floats(1.0, 3.0),
    timeout=st.sampled_from([None, "30s"]),
)
def test_invariants_hold_on_random_scenarios(schedule, quorum, grace, on_failure, apply, bandwidth, mtbf_h,
                                            partition_at, slow, timeout):
    """The ledger adds up, no channel ever carries more than its capacity, and every merged round has at
    least K members unless it timed out."""
    training = {"quorum": quorum, "schedule": schedule, "grace": grace, "on_failure": on_failure,
                "apply": apply, "recovery": {"detect": "30s", "reschedule": "0s", "reload": "20s"},
                "elastic": {"unit": "cube", "downscale": "10s", "upscale": "10s"}}
    if timeout:
        training["round_timeout"] = timeout
    faults = [
        {"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": f"{mtbf_h}h", "blast_radius": "host",
         "repair": {"distribution": "exponential", "mean": "5m"}},
        {"name": "cut", "kind": "link_partition", "target": {"links": ["east~west"]}, "at": f"{partition_at}s",
         "duration": "5m"},
        {"name": "slow", "kind": "slowdown", "target": {"islands": ["w1"]}, "at": "0s", "duration": "1d",
         "factor": slow},
    ]
    sc = scenario([("east", [island("e0", 256), island("e1", 256)]), ("west", [island("w0", 256), island("w1", 256)])],
                  syncer="east", duration="1h", training=training, faults=faults, default_bw=bandwidth,
                  latency="20ms", params="200M")
    s, tables = run(sc)
    assert math.isclose(sum(s["chip_time"].values()), s["chips"] * 3600, rel_tol=1e-12)
    assert s["peak_link_utilisation"] <= 1.0 + 1e-9
    assert all(u <= 1.0 + 1e-9 for u in s["link_utilisation"].values())
    rounds = tables["rounds"].to_pandas()
    short = rounds[rounds.members.str.count(",") + 1 < quorum]
    assert short.reason.str.contains("round timeout").all()
    assert len(rounds) == s["outer_rounds"]


def test_a_cut_link_samples_zero_utilisation_while_it_is_cut():
    """The link_utilisation series of a partitioned channel reads 0 for every window inside the cut
    (it offers no capacity and carries nothing), not the last busy value held across it."""
    cut = {"name": "cut", "kind": "link_partition", "target": {"links": ["east~west"]}, "at": "20m", "duration": "20m"}
    sc = scenario([("east", [island("e0", 256)]), ("west", [island("w0", 256)])], syncer="east", duration="1h",
                  training={"quorum": 2}, faults=[cut], default_bw="2Gbps", latency="20ms", params="200M", step="3s")
    _, tables = run(sc)
    series = tables["series"].to_pandas()
    util = series[(series.series == "link_utilisation") & (series.key == "east~west>east")]
    window_s = 3600 / 200
    inside = util[(util.time_s >= 1200 + window_s) & (util.time_s <= 2400)]
    before = util[util.time_s < 1200]
    after = util[util.time_s > 2400 + 60]
    assert len(inside) >= 60 and (inside.value == 0).all()
    assert (before.value > 0).mean() > 0.9 and (after.value > 0).mean() > 0.9
    assert len(util) == 200  # one sample per window from its first carried byte (at the first report)


def test_same_seed_same_rounds():
    """Failures, a straggler, K = 2, both schedules: the same scenario and seed play the same rounds."""
    for schedule in ("synchronizer", "learner"):
        sc = deadlock_scenario(schedule, timeout="20s").model_copy(update={"duration": 3600.0})
        (a, ta), (b, tb) = run(sc), run(sc)
        assert ta["rounds"].equals(tb["rounds"]) and len(ta["rounds"]) > 100
        strip = ("wall_time_s", "events_per_s", "sim_speedup")
        assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


def chaos_scenario(schedule, timeout=None):
    """Four learners in two regions, K = 2, adaptive grace; chip failures, a partition of the link to
    the synchronizer and a synchronizer outage: every input of a learner's reporting flag changes."""
    faults = [
        {"name": "chips", "kind": "chip_failure", "target": "all", "mtbf": "50h", "blast_radius": "host",
         "repair": {"distribution": "exponential", "mean": "2m"}},
        {"name": "cut", "kind": "link_partition", "target": {"links": ["east~west"]}, "at": "4m", "duration": "3m"},
        {"name": "down", "kind": "syncer_outage", "at": "10m", "duration": "3m"},
    ]
    training = {"quorum": 2, "schedule": schedule, "grace": {"mode": "adaptive", "max": "5s"},
                "elastic": {"unit": "cube", "downscale": "10s", "upscale": "10s"}}
    if timeout is not None:
        training["round_timeout"] = timeout
    return scenario([("east", [island("e0", 256), island("e1", 256)]), ("west", [island("w0", 256), island("w1", 256)])],
                    syncer="east", duration="20m", training=training, faults=faults, default_bw="2Gbps",
                    latency="20ms", params="200M", step="3s")


@pytest.mark.parametrize("schedule", ["synchronizer", "learner"])
def test_the_synchronizers_caches_equal_what_they_cache(schedule, monkeypatch):
    """The synchronizer keeps each learner's can_report as flags updated on the events that change it
    (and a count of blocked learners, the fragments with an open round, each group's chips down), and builds its views from cached entries without re-validating them: at every decision the flags
    equal can_report, the view passes SyncView's checks and decide gives the same answer on it; the rule
    it takes from counts alone (every evaluation) is decide's answer on the full view; the run with
    checked views is bit-identical to the one without."""
    from sim import syncer
    from sim.rounds import synchronizer

    checked = []
    view, evaluate = synchronizer.SynchronizerRounds.view, synchronizer.SynchronizerRounds.evaluate

    ruled = []

    def checked_evaluate_state(self, rnd):
        assert self.reporting == [self.can_report(ls) for ls in self.learners]
        assert self.reporting_ids == tuple(ls.index for ls in self.learners if self.can_report(ls))
        assert self.blocked_count == sum(ls.blocked for ls in self.learners)
        assert self.open_fragments == [p for p, rnd in enumerate(self.open) if rnd is not None]
        for group in (ls.group for ls in self.learners):
            for i in group.islands:
                size = i.unit_chips(group.elastic_unit)
                assert group.down_chips[i.index] == sum(min(size, i.chips - u * size) for u in group.down_units[i.index])
        evaluate(self, rnd)

    def slow_view(self, rnd, now):
        return syncer.SyncView(now, rnd.fragment, rnd.opened_s, rnd.quorum_met_s, tuple(
            syncer.LearnerReport(ls.index, self.can_report(ls), ls.index in rnd.reports,
                                 rnd.reports[ls.index].c_steps if ls.index in rnd.reports else 0,
                                 (rnd.reports[ls.index].c_steps if ls.index in rnd.reports else 0) * self.tokens_per_step)
            for ls in self.learners), self.ema_step.value_or(0.0), self.ema_quorum.value_or(0.0),
            self.ema_sync.value_or(0.0))

    def checked_view(self, rnd, now):
        fast = view(self, rnd, now)
        slow = slow_view(self, rnd, now)
        assert fast.learners == slow.learners
        assert syncer.decide(now, fast, self.config) == syncer.decide(now, slow, self.config)
        checked.append(rnd)
        return slow

    evaluating = []
    rule = synchronizer.rule

    def checked_rule(now, *args):
        which, wait_until_s = rule(now, *args)
        engine, rnd = evaluating[-1]
        decision = syncer.decide(now, slow_view(engine, rnd, now), engine.config)
        assert (decision.action is syncer.Action.MERGE) == which.merges
        assert decision.wait_until_s == wait_until_s
        ruled.append(which)
        return which, wait_until_s

    def checked_evaluate(self, rnd):
        evaluating.append((self, rnd))
        checked_evaluate_state(self, rnd)
        evaluating.pop()

    fast_summary, fast_tables = run(chaos_scenario(schedule, timeout="20s"))
    monkeypatch.setattr(synchronizer.SynchronizerRounds, "view", checked_view)
    monkeypatch.setattr(synchronizer.SynchronizerRounds, "evaluate", checked_evaluate)
    monkeypatch.setattr(synchronizer, "rule", checked_rule)
    slow_summary, slow_tables = run(chaos_scenario(schedule, timeout="20s"))
    assert len(checked) > 100 and fast_summary["outer_rounds"] > 100
    # (the synchronizer schedule re-aligns the learners at every round: none times out in this scenario)
    expected = set(syncer.Rule) - ({syncer.Rule.ROUND_TIMEOUT} if schedule == "synchronizer" else set())
    assert {r.value for r in ruled} == {r.value for r in expected}, "every rule taken at least once"
    assert fast_summary["failures"]["syncer_outage"] == 1 and fast_summary["failures"]["link_partition"] == 1
    assert fast_summary["failures"]["chip_failure"] > 2
    strip = ("wall_time_s", "events_per_s", "sim_speedup")
    assert {k: v for k, v in fast_summary.items() if k not in strip} == \
        {k: v for k, v in slow_summary.items() if k not in strip}
    assert fast_tables["rounds"].equals(slow_tables["rounds"])
