"""``chaossim validate`` beyond the model: unknown bound metrics are errors, idle faults are warnings."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, scenario_dict
from typer.testing import CliRunner

from sim.cli import app


def validate(tmp_path: Path, *sets: str, **top):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(scenario_dict(*sets, **top)))  # JSON is YAML
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result, path


def test_unknown_hypothesis_metric_is_rejected(tmp_path):
    """A hypothesis on a metric no run reports is bad input: one line naming where, exit 2."""
    result, path = validate(tmp_path, hypotheses=[{"metric": "goodput", "min": 0.5}, {"metric": "goodptu", "min": 0.5}])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: hypotheses[1].metric (line ")
    assert "unknown metric 'goodptu', did you mean 'goodput'? (top-level metrics: " in line


def test_a_bad_metric_of_every_compared_variant_is_one_line(tmp_path):
    """A typo in a hypothesis of a compare run is wrong in every variant: one line about the file, with
    its line, not one line per variant; a metric only some variants report names those that lack it."""
    from conftest import ROOT

    text = (ROOT / "scenarios" / "quickstart.yaml").read_text()
    line_no = next(n for n, row in enumerate(text.splitlines(), 1) if "metric: goodput" in row)
    for metric, lines in (("goodptu", 1), ("mean_learners_per_merge", 2)):
        path = tmp_path / f"{metric}.yaml"
        path.write_text(text.replace("metric: goodput", f"metric: {metric}"))
        result = CliRunner().invoke(app, ["validate", str(path)])
        assert result.exit_code == 2
        errors = result.stderr.strip().splitlines()
        assert len(errors) == lines, errors
        assert all(f"hypotheses[0].metric (line {line_no}): unknown metric '{metric}'" in e for e in errors)
        if lines == 1:
            assert errors[0].startswith(f"error: {path}: hypotheses[0]")
        else:
            assert {e.split(" [")[1].split("]")[0] for e in errors} == {"sync_dp, restart", "elastic_dp, elastic"}


def test_unknown_halt_metric_is_rejected(tmp_path):
    """The same for a halt bound; a count of a fault kind that did not happen is a known metric."""
    result, path = validate(tmp_path, halt=[{"metric": "chip_time_fraction.nope", "max": 0.5}],
                            hypotheses=[{"metric": "failures.region_outage", "max": 0}])
    assert result.exit_code == 2
    assert f"{path}: halt[0].metric (line 1): unknown metric 'chip_time_fraction.nope'" in result.stderr  # (JSON: one line)
    assert "hypotheses[0]" not in result.stderr


def test_fault_past_the_end_is_a_warning(tmp_path):
    """A fault scheduled after the run ends never fires: a warning, still exit 0."""
    fault = {"name": "late", "kind": "island_outage", "target": {"islands": ["isl"]}, "at": "2d", "duration": "1h"}
    result, path = validate(tmp_path, faults=[fault])
    assert result.exit_code == 0
    assert f"warning: {path}: faults[0]" in result.stderr and "fault 'late' has no injection within the run" in result.stderr
    assert result.stderr.count("never fires") == 1  # said once, by the likely-mistake checks that run prints too
    early = dict(fault, at="2h")
    result, _ = validate(tmp_path, faults=[early])
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_syncer_outage_without_a_synchronizer_is_a_warning(tmp_path):
    """sync_dp has no synchronizer: an outage of it changes nothing, and validate says so."""
    fault = {"name": "s", "kind": "syncer_outage", "at": "2h", "duration": "1h"}
    result, _ = validate(tmp_path, faults=[fault])
    assert result.exit_code == 0 and "sync_dp has no synchronizer" in result.stderr


def test_idle_link_is_named():
    """A partition of west~south carries no Decoupled DiLoCo fragment traffic (the hub is us-central):
    validate warns; the shipped wan-brownout partitions west~central, which its fragments use."""
    path = str(ROOT / "scenarios" / "wan-brownout.yaml")
    shipped = CliRunner().invoke(app, ["validate", path])
    assert shipped.exit_code == 0 and "warning" not in shipped.stderr
    result = CliRunner().invoke(app, ["validate", path, "--set", "faults.2.target.links=[us-west~us-south]"])
    assert result.exit_code == 0
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "faults[2] (cut): link us-west~us-south carries none of decoupled_diloco's gradient or fragment traffic" in warning
