"""The cost estimate (sim/cost.py) against what runs actually do, and the likely-mistake warnings (sim/lint.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from typer.testing import CliRunner

from sim.cli import app
from sim.cost import EVENTS_PER_FAILURE, WORK_CEILING, estimate, surrogate_bytes, surrogate_scratch_bytes
from sim.loading import load_scenario
from sim.runner import run_replication

SCENARIOS = ROOT / "scenarios"
LOCKSTEP = ["quickstart.yaml", "million-chips-sync.yaml", "llama3-like-sync.yaml"]


def term(cost, start: str) -> float:
    return math.fsum(t.work for t in cost.terms if t.what.startswith(start) or start in t.what)


@pytest.mark.parametrize("name", LOCKSTEP)
def test_estimated_chip_failures_match_the_run(name):
    """Expected chip failures (chips x duration / mtbf) against the failures the run counted: within
    four Poisson standard deviations."""
    scenario = load_scenario(SCENARIOS / name)
    expected = term(estimate(scenario), "chip failures") / EVENTS_PER_FAILURE
    counted = run_replication(scenario, 0, scenario_dir=SCENARIOS).summary["failures"]["chip_failure"]
    assert abs(counted - expected) <= 4 * math.sqrt(expected), (counted, expected)


@pytest.mark.parametrize("name", LOCKSTEP)
def test_estimated_checkpoints_and_events_are_the_right_size(name):
    """Checkpoints: at least those written, and within a factor 2 of them when most time is useful
    (duration / interval counts every second as running); the whole estimate within a factor 3 of the
    SimPy events the run took: a guard against orders of magnitude."""
    scenario = load_scenario(SCENARIOS / name)
    cost = estimate(scenario)
    # on the event path: the estimate bounds its events (the restart loop, where it applies, takes none)
    rep = run_replication(scenario, 0, scenario_dir=SCENARIOS, restart_loop=False)
    written = int((rep.tables["events"]["kind"].to_pandas() == "checkpoint").sum())
    assert written <= term(cost, "checkpoints")
    if rep.summary["goodput"] > 0.5:
        assert term(cost, "checkpoints") <= 2 * written, (term(cost, "checkpoints"), written)
    # lockstep checkpoints in a failure-free stretch are counted without an event each (sim/stretch.py)
    done = rep.summary["events"] + written
    assert 1 / 3 <= cost.work / done <= 3, (cost.work, done)


def test_estimated_rounds_match_the_rounds_played():
    """DiLoCo family: duration / step time x fragments / inner_steps per learner, against the learners
    times the outer rounds the run merged (the region outage costs a few rounds)."""
    scenario = load_scenario(SCENARIOS / "region-outage.yaml", ["duration=12h"])
    learners = sum(i.count for r in scenario.topology.regions for i in r.islands)
    played = run_replication(scenario, 0).summary["outer_rounds"] * learners
    assert 0.8 <= term(estimate(scenario), "outer rounds") / played <= 1.25


@pytest.mark.parametrize("path", sorted(SCENARIOS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_far_below_the_ceiling(path):
    """Every shipped scenario, with its replications, costs under a tenth of the ceiling."""
    scenario = load_scenario(path, allow_large=False)
    assert estimate(scenario).work * scenario.replications < WORK_CEILING / 10


def array_bytes(obj, seen: set | None = None) -> int:
    """Bytes of every NumPy array an object holds (attributes, dataclass fields, lists), each once."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (type, np.random.Generator)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(array_bytes(x, seen) for x in obj)
    if dataclasses.is_dataclass(obj):
        return sum(array_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    return sum(array_bytes(v, seen) for v in vars(obj).values()) if hasattr(obj, "__dict__") else 0


@pytest.mark.parametrize("sizes", [["surrogate.dim=64", "surrogate.hidden=256"], ["surrogate.classes=20"],
                                   ["surrogate.model=markov", "surrogate.vocab=128"]], ids=" ".join)
def test_estimated_surrogate_memory_bounds_the_arrays_it_allocates(sizes):
    """The surrogate's memory estimate against the arrays a model of those sizes really holds (plus
    the driver's anchor and one snapshot per learner, each of the parameters' shape): above them, and
    within a factor 2.5."""
    from sim.surrogate import Surrogate

    scenario = load_scenario(SCENARIOS / "sweeps" / "quality.yaml", sizes)
    cfg, learners = scenario.surrogate, 4
    model = Surrogate(np.random.default_rng(0), learners, scenario.training.fragments, task=cfg.model, dim=cfg.dim,
                      hidden=cfg.hidden, classes=cfg.classes, vocab=cfg.vocab, components=cfg.components)
    held = array_bytes(model) + 2 * model.params.nbytes
    # (what one training call holds while it runs is estimated apart, and tested with a huge batch)
    assert held <= surrogate_bytes(scenario, learners) - surrogate_scratch_bytes(scenario, learners) <= 2.5 * held


def test_rounds_too_many_name_the_field_that_makes_them_many():
    """An auto step time shrinks with chips: 10^12 chips on one island make rounds every 89 ns, and the
    refusal names that island's chips (set from the command line), not the workload; a step time given
    in the scenario is named itself."""
    file = str(SCENARIOS / "million-chips-decoupled.yaml")
    result = CliRunner().invoke(app, ["validate", file, "--set", "topology.regions.1.islands.0.chips=1000000000000"])
    assert result.exit_code == 2
    assert "topology.regions[1].islands[0].chips (from --set): estimated work" in result.output
    assert "auto, from workload params and tokens_per_step over the 1,000,000,000,000 v5p chips of central" in result.output
    result = CliRunner().invoke(app, ["validate", file, "--set", "workload.step_time=1us"])
    assert result.exit_code == 2 and "workload.step_time (from --set): estimated work" in result.output


def test_a_surrogate_too_large_for_memory_is_refused_before_it_runs():
    """10^10 parameters per learner would die of a MemoryError mid-run: refused up front, exit 2, with
    the YAML path and the estimate; --allow-large lets the estimate through."""
    file = str(SCENARIOS / "sweeps" / "quality.yaml")
    big = ["--set", "surrogate.dim=100000", "--set", "surrogate.hidden=100000"]
    result = CliRunner().invoke(app, ["validate", file, *big])
    assert result.exit_code == 2
    assert "surrogate.model (line 56): estimated memory" in result.output and "the surrogate model" in result.output
    assert CliRunner().invoke(app, ["validate", file, *big, "--allow-large"]).exit_code == 0
    assert surrogate_bytes(load_scenario(file, ["surrogate=off"]), 4) == 0


def test_a_surrogate_batch_too_large_is_refused_before_it_runs():
    """A billion samples a step: the minibatch and the kernels' workspace (about 790 GB) and the
    steps' work are both counted, so validate refuses it with the YAML path; batch 16 passes."""
    file = str(SCENARIOS / "sweeps" / "quality.yaml")
    result = CliRunner().invoke(app, ["validate", file, "--set", "surrogate.batch=1000000000", "--allow-large"])
    assert result.exit_code == 0  # the ceilings are the only thing refusing it
    scenario = load_scenario(file, ["surrogate.batch=1000000000"])
    assert surrogate_bytes(scenario, 4) > 7e11
    assert estimate(scenario).memory_loc == ("surrogate", "batch")
    result = CliRunner().invoke(app, ["validate", file, "--set", "surrogate.batch=1000000000"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "surrogate.batch (from --set): estimated memory 792 GB for the surrogate's minibatches" in text
    work = estimate(load_scenario(file, ["surrogate.batch=100000"])).largest()  # fits in memory, not in time
    assert work.loc == ("surrogate", "batch") and "100,000 samples x 808 parameters" in work.what
    assert CliRunner().invoke(app, ["validate", file, "--set", "surrogate.batch=16"]).exit_code == 0


MISTAKES = """\
version: 1
name: lint
seed: 1
duration: 1d
topology:
  regions:
    - name: a
      islands: [{name: isl, chip: v5p, chips: 1024, count: 2, spares: 2}]
    - name: b
      islands: [{name: j, chip: v5p, chips: 1024}]
  links:
    - {between: [a, a], bandwidth: 1Gbps}
    - {between: [a, b], bandwidth: 1Gbps}
    - {between: [b, a], bandwidth: 2Gbps}
workload: {params: 1B, tokens_per_step: 1M, step_time: 1s}
training:
  policy: sync_dp
  quorum: 2
  checkpoint: {interval: 1h, write_time: 2d}
  recovery: {reload: 3d}
  grace: {fixed: 1m, max: 10s}
faults:
  - {name: late, kind: island_outage, at: 2d}
  - {name: backwards, kind: island_outage, schedule: {every: 1h, start: 5h, until: 2h}}
  - {name: many, kind: island_outage, at: 1h, target: {mode: fixed, value: 7}}
  - {name: half, kind: island_outage, at: 1h, target: {mode: fixed, value: 1.5}}
  - {name: tr, kind: trace, file: lint.csv}
hypotheses: [{metric: goodput, min: 0.9, max: 0.5}]
"""
EXPECTED = [
    ("topology.links[0].between (line 12)", "itself"),
    ("topology.links[2] (line 14)", "given twice"),
    ("training.checkpoint.write_time (line 19)", "longer than the whole run"),
    ("training.recovery.reload (line 20)", "longer than the whole run"),
    ("topology.regions[0].islands[0].spares (line 8)", "spares are ignored"),
    ("training.quorum (line 18)", "has none"),
    ("training.grace.fixed (line 21)", "above grace.max"),
    ("faults[0] (line 23)", "never fires"),
    ("faults[1].schedule (line 24)", "ends (until) before it starts"),
    ("faults[2].target.value (line 25)", "more targets than the 3"),
    ("faults[3].target.value (line 26)", "whole targets"),
    ("faults[4].file (line 27)", "1 trace row(s) at or after the end"),
    ("hypotheses[0] (line 28)", "can never pass"),
]


def test_likely_mistakes_are_warned_by_validate_and_run(tmp_path: Path):
    """Each likely mistake is one ``warning:`` line naming the file and YAML path; exit code 0."""
    (tmp_path / "lint.csv").write_text("time,target\n1h,isl-0\n2d,isl-1\n")
    path = tmp_path / "lint.yaml"
    path.write_text(MISTAKES)
    for command in (["validate", str(path)], ["run", str(path), "-q", "-o", str(tmp_path / "out"), "--json"]):
        result = CliRunner().invoke(app, command)
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert result.exit_code in (0, 1), result.output  # 1: the bound that can never pass fails, as warned
        for where, phrase in EXPECTED:
            assert any(f"{path}: {where}" in w and phrase in w for w in warnings), (where, warnings)
        assert len(warnings) >= len(EXPECTED)


def test_numbers_written_without_their_unit_are_warned():
    """A bare number is the base unit: ``duration: 6`` is six seconds, ``bandwidth: 5`` five bits per
    second. Both run, but a run under a minute and a link under 1 Mbit/s are warned as the likely
    slip they are; a minute and 1 Mbit/s are not."""
    file = str(SCENARIOS / "four-regions-12b.yaml")
    bare = ["--set", "duration=6", "--set", "topology.default_link.bandwidth=5", "--set",
            "topology.links.0.bandwidth=900000"]
    result = CliRunner().invoke(app, ["validate", file, *bare])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(f"warning: {file}: duration (from --set): the run lasts 6 s: a bare number is seconds" in w for w in warnings)
    assert any("topology.default_link.bandwidth (from --set): a link of 5 bit/s" in w for w in warnings)
    assert any("topology.links[0].bandwidth (from --set): a link of 900000 bit/s" in w for w in warnings)
    result = CliRunner().invoke(app, ["validate", file, "--set", "duration=1m", "--set", "topology.default_link.bandwidth=1Mbps"])
    assert "a bare number" not in result.stderr


@pytest.mark.parametrize("path", sorted(SCENARIOS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_have_no_warnings(path):
    """The shipped scenarios are the examples users copy: none of them holds a likely mistake."""
    warnings: list[str] = []
    load_scenario(path, warnings=warnings)
    assert warnings == []
