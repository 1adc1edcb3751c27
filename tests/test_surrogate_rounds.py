"""The surrogate sees exactly the rounds the synchronizer plays (DESIGN.md, "Surrogate training").

* the merge log (``surrogate.log_rounds``) equals the round log: same rounds, fragments, members and
  weights, with rounds the resolution skips marked, never merged with other members;
* a merge is the outer step of the published algorithm on the members' snapshots (closed form with
  outer lr 1, momentum 0, plain mean: Theta_p becomes the weighted mean of the snapshots);
* results are applied when the member applies them: ``keep_local`` keeps the steps since the report,
  ``overwrite`` discards them; a lost result leaves only the progress since the snapshot to send.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import simpy
import yaml

from sim.context import LinkState, RunContext
from sim.executors import DaskExecutor, LocalExecutor, SerialExecutor
from sim.loading import validate
from sim.policies.outer import SurrogateDriver
from sim.recorder import Recorder
from sim.rng import Streams
from sim.runner import run_replication
from sim.sweep import plan_sweep, run_sweep
from sim.topology import build_topology


def island(name, chip="v5p", chips=1000):
    return {"name": name, "chip": chip, "chips": chips, "count": 1}


def scenario(training=None, faults=(), surrogate=None, duration="2h", seed=3):
    """Four learners on mixed chips in two regions, a straggler and restarting chip failures."""
    data = {
        "version": 1, "name": "surrogate-rounds", "seed": seed, "duration": duration,
        "topology": {
            "regions": [{"name": "a", "islands": [island("a0"), island("a1", "v6e")]},
                        {"name": "b", "islands": [island("b0"), island("b1", "v6e")]}],
            "default_link": {"bandwidth": "100Gbps", "latency": "20ms"},
            "intra_region": {"bandwidth": "1000Tbps", "latency": "0s"},
            "syncer": {"region": "a"},
        },
        "workload": {"params": "1B", "tokens_per_step": "1M", "step_time": "1s"},
        "training": {"policy": "decoupled_diloco", "on_failure": "restart", "inner_steps": 24, "fragments": 4,
                     "overlap": 2, "quorum": 2, "grace": {"mode": "adaptive", "max": "5s"}, **(training or {})},
        "faults": list(faults) or [
            {"name": "chips", "kind": "chip_failure", "mtbf": "20d", "blast_radius": "host"},
            {"name": "slow", "kind": "slowdown", "target": {"islands": ["b0"]}, "at": "10m", "duration": "1h",
             "factor": 1.5},
        ],
        "surrogate": {"model": "mlp", "resolution": 0.5, "log_rounds": True, **(surrogate or {})},
    }
    return validate(data, "<test>")


@pytest.mark.parametrize("schedule", ["synchronizer", "learner"])
def test_merge_log_equals_the_rounds_played(schedule):
    """With failures, a straggler and K = 2: every played round is in the merge log with its own
    fragment, members and weights; merged and skipped rounds add up to the rounds played."""
    rep = run_replication(scenario({"schedule": schedule}))
    s = rep.summary
    rounds = rep.tables["rounds"].to_pandas()
    log = rep.tables["surrogate_merges"].to_pandas()
    assert s["failures"]["chip_failure"] > 0 and len(rounds) == s["outer_rounds"] > 200
    assert list(log["round"]) == list(rounds["round"]) == list(range(len(rounds)))
    for column in ("fragment", "members", "weights"):
        assert list(log[column]) == list(rounds[column])
    assert log["merged"].sum() == s["surrogate_merges"] > 0
    assert (~log["merged"]).sum() == s["surrogate_rounds_skipped"] > 0
    # the rounds are not all alike: the surrogate saw solo rounds and rounds of several members
    sizes = log["members"].str.count(",") + 1
    assert sizes.min() < sizes.max()


def test_without_the_option_no_merge_log_is_written(tmp_path):
    rep = run_replication(scenario(surrogate={"log_rounds": False}), out_dir=tmp_path)
    assert "surrogate_merges" not in rep.tables and not (tmp_path / "surrogate_merges.parquet").exists()
    assert (tmp_path / "rounds.parquet").exists()


def driver(anchor="received"):
    """A surrogate driver on its own, halfway through a run (its step budget grows with time)."""
    sc = scenario({"averaging": "mean", "outer": {"lr": 1.0, "momentum": 0.0, "anchor": anchor}},
                  surrogate={"resolution": 1.0})
    topology = build_topology(sc)
    env = simpy.Environment()
    ctx = RunContext(env, sc, topology, Streams(7), Recorder(merge_log=True), LinkState(topology), None)
    env.run(until=sc.duration / 2)
    return SurrogateDriver(ctx, 4, 4, tokens_fn=lambda: 0.0)


def test_a_merge_is_the_outer_step_on_the_snapshots():
    """Outer lr 1, momentum 0, plain mean: Theta_p becomes the weighted mean of the members' snapshots
    (each anchored at the Theta_p it received), whatever they trained after reporting."""
    d = driver()
    model, sl, H = d.model, d.model.fragment_slices[1], d.inner_per_merge
    for m in (0, 2):
        d.train_owed(m, H)
    snaps = [d.report(0, 1), d.report(2, 1)]
    d.train_owed(0, 5)  # after the report: not part of this round
    expected = 0.25 * snaps[0].values + 0.75 * snaps[1].values
    d.merge(0, 1, (0, 2), (0.25, 0.75), snaps)
    np.testing.assert_allclose(model.theta[sl], expected, rtol=0, atol=1e-12)
    assert snaps[0].result is snaps[1].result and d.merges == 1


def test_keep_local_keeps_the_steps_since_the_report_and_overwrite_discards_them():
    for overwrite in (False, True):
        d = driver()
        model, sl, H = d.model, d.model.fragment_slices[0], d.inner_per_merge
        d.train_owed(1, H)
        snap = d.report(1, 0)
        d.merge(0, 0, (1,), (1.0,), [snap])
        d.train_owed(1, 7)  # steps between the report and the apply
        before = model.params[1, sl].copy()
        d.apply(1, 0, snap, overwrite)
        expected = snap.result if overwrite else snap.result + (before - snap.values)
        np.testing.assert_allclose(model.params[1, sl], expected, rtol=0, atol=1e-12)
        # what it sends next is its progress since the apply (keep_local: the 7 steps are still to merge)
        assert d.fresh[1, 0] == (0 if overwrite else 7)
        np.testing.assert_array_equal(d.anchor[1, sl], snap.result)


def test_a_lost_result_does_not_send_the_merged_progress_twice():
    """A member whose result never arrives keeps its parameters; its next outer gradient is only what
    it trained since the snapshot (the rest is in Theta_p already)."""
    d = driver()
    model, sl, H = d.model, d.model.fragment_slices[2], d.inner_per_merge
    d.train_owed(3, H)
    snap = d.report(3, 2)
    d.merge(0, 2, (3,), (1.0,), [snap])
    d.result_lost(3, 2, snap)
    d.train_owed(3, H)
    again = d.report(3, 2)
    theta_before = model.theta[sl].copy()
    d.merge(1, 2, (3,), (1.0,), [again])
    # lr 1, mean of one: Theta_p moves by exactly (again - snapshot), the progress not yet merged
    np.testing.assert_allclose(model.theta[sl] - theta_before, again.values - snap.values, rtol=0, atol=1e-12)


def test_the_published_anchor_is_the_synchronizers_theta_and_received_is_the_members_own():
    """Learner 0 is merged (Theta_p moves), then learner 1, who never received that result, is merged
    alone. Anchored at the synchronizer (as published) its outer gradient Theta_p - theta_1 includes
    the lag: lr 1 sets Theta_p to its snapshot. Anchored at what it received, Theta_p moves by its own
    progress only."""
    for anchor in ("synchronizer", "received"):
        d = driver(anchor)
        model, sl, H = d.model, d.model.fragment_slices[0], d.inner_per_merge
        start = model.theta[sl].copy()
        d.train_owed(0, H)
        d.train_owed(1, H)
        d.merge(0, 0, (0,), (1.0,), [d.report(0, 0)])
        moved = model.theta[sl].copy()
        snap = d.report(1, 0)
        d.merge(1, 0, (1,), (1.0,), [snap])
        expected = snap.values if anchor == "synchronizer" else moved + (snap.values - start)
        np.testing.assert_allclose(model.theta[sl], expected, rtol=0, atol=1e-12)


def test_a_round_the_resolution_skips_is_skipped_whole():
    """A member that has not trained H surrogate steps since it last received p: nobody is merged."""
    d = driver()
    d.train_owed(0, d.inner_per_merge)
    d.train_owed(1, d.inner_per_merge - 1)
    theta = d.model.theta.copy()
    snaps = [d.report(0, 3), d.report(1, 3)]
    d.merge(0, 3, (0, 1), (0.5, 0.5), snaps)
    np.testing.assert_array_equal(d.model.theta, theta)
    assert d.skipped == 1 and d.merges == 0 and all(s.result is None for s in snaps)


def test_loss_curves_and_merge_logs_are_identical_on_every_executor(tmp_path):
    """Same scenario and seed: serial, a local pool of two and a real Dask cluster give the same loss
    curve and the same merge log, bit for bit."""
    from distributed import LocalCluster

    sc = scenario(duration="20m")
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump({**sc.model_dump(mode="json"), "sweep": {"grid": {"training.quorum": [1, 2]}}}))
    plan = plan_sweep(path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        executors = {"serial": SerialExecutor(), "local": LocalExecutor(2), "dask": DaskExecutor(cluster.scheduler_address)}
        folders = {name: run_sweep(plan, tmp_path / name, ex).folder for name, ex in executors.items()}

    def tables(folder):
        out = {}
        for rep in sorted(folder.glob("runs/*")):
            series = pq.read_table(rep / "series.parquet").to_pandas()
            out[rep.name] = (series[series.series == "loss"].reset_index(drop=True),
                                    pq.read_table(rep / "surrogate_merges.parquet").to_pandas())
        return out

    reference = tables(folders["serial"])
    assert len(reference) == 2 and all(len(loss) > 10 and len(log) > 20 for loss, log in reference.values())
    for name in ("local", "dask"):
        other = tables(folders[name])
        assert other.keys() == reference.keys(), name
        for point, (loss, log) in reference.items():
            pd.testing.assert_frame_equal(loss, other[point][0])
            pd.testing.assert_frame_equal(log, other[point][1])
