"""The ``compare:`` section: variants built like ``--set``, played on the same failures, bad ones refused."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ROOT
from typer.testing import CliRunner

from sim.cli import app
from sim.compare import load_variants
from sim.loading import ScenarioError, load_scenario
from sim.runner import run_replication

QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"


def test_variants_are_the_scenario_with_each_setting():
    """Variant i is exactly the scenario with --set key=values[i] for every compared key."""
    base, variants = load_variants(QUICKSTART)
    assert [v.label for v in variants] == ["sync_dp, restart", "elastic_dp, elastic", "decoupled_diloco, restart"]
    for v in variants:
        sets = [f"{k}={value}" for k, value in v.setting.items()] + ["compare={}"]
        assert v.scenario == load_scenario(QUICKSTART, sets)
    assert base.compare and not any(v.scenario.compare for v in variants)


def test_a_set_on_a_compared_key_plays_that_setting_alone():
    """--set training.policy=... overrides the comparison: one unlabelled variant."""
    _, variants = load_variants(QUICKSTART, ["training.policy=elastic_dp", "training.on_failure=elastic"])
    assert [v.label for v in variants] == [""]
    assert variants[0].scenario.training.policy.value == "elastic_dp"


def test_variants_see_the_same_failures(tmp_path):
    """Every variant is hit by the same failures at the same times (hits or absorbed alike)."""
    _, variants = load_variants(QUICKSTART, ["duration=2d"])
    seen = []
    for k, v in enumerate(variants):
        run_replication(v.scenario, 0, tmp_path / str(k))
        events = pd.read_parquet(tmp_path / str(k) / "events.parquet")
        hits = events[events["kind"].isin(["failure", "absorbed"])]
        seen.append(sorted(zip(hits["time_s"].round(6), hits["target"], hits["fault"])))
    assert seen[0] and all(s == seen[0] for s in seen)


@pytest.mark.parametrize(("compare", "expected"), [
    # set on the command line: no line of the file holds these values, so the error says where they came from
    ("{training.policy: [sync_dp, bogus]}", "compare.training.policy[1] (from --set): Input should be"),
    ("{seed: [1, 2]}", "compare (from --set): seed cannot vary between variants"),
    ("{training.policy: [sync_dp], training.on_failure: [restart, elastic]}", "all of one length"),
])
def test_bad_compare_is_a_one_line_error_before_anything_is_written(tmp_path, compare, expected):
    """A bad variant fails at load: one line, exit 2, no results folder."""
    with pytest.raises(ScenarioError) as caught:
        load_variants(QUICKSTART, [f"compare={compare}"])
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    result = CliRunner().invoke(app, ["run", str(QUICKSTART), "--set", f"compare={compare}", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
