"""Gates: steady-state hypotheses decide the exit code, halt bounds stop a replication early.

The CLI is run as a user (or a CI job) runs it: a subprocess of ``chaossim run ... --json -q``,
whose exit code is the gate (0 held, 1 a hypothesis failed, 2 bad input).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CHAOSSIM, ROOT, make_scenario

from sim.loading import ScenarioError, load_scenario
from sim.runner import run_replication

QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
DAY_S = 86400.0


def chaossim(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = [str(CHAOSSIM)] if CHAOSSIM.exists() else [sys.executable, "-m", "sim.cli"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def run_json(tmp_path: Path, *sets: str) -> tuple[int, dict]:
    """``chaossim run quickstart`` for one day and one replication; (exit code, JSON summary)."""
    flags = [f for s in ("duration=1d", "replications=1", "compare={}", *sets) for f in ("--set", s)]
    done = chaossim("run", str(QUICKSTART), *flags, "-o", str(tmp_path / "out"), "--json", "-q", "--no-report")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def quickstart_day(*sets: str):
    """The quickstart scenario for one day, with ``dotted.key=value`` overrides."""
    return load_scenario(QUICKSTART, ["duration=1d", "replications=1", "compare={}", *sets])


def test_hypotheses_hold_exit_0(tmp_path):
    """The quickstart's own hypothesis (goodput >= 0.7) holds over a day: exit 0."""
    code, result = run_json(tmp_path)
    verdicts = result["runs"][0]["hypotheses"]
    assert code == 0
    assert result["hypotheses_passed"] is True
    assert verdicts == [{"metric": "goodput", "value": result["goodput"], "min": 0.7, "max": None, "passed": True}]


def test_failed_hypothesis_exits_1(tmp_path):
    """A bound the run misses fails the gate: exit 1, the verdict says which and by how much."""
    code, result = run_json(tmp_path, "hypotheses=[{metric: goodput, min: 0.99}, {metric: global_downtime_s, max: 1e9}]")
    first, second = result["runs"][0]["hypotheses"]
    assert code == 1
    assert result["hypotheses_passed"] is False
    assert first["metric"] == "goodput" and not first["passed"] and first["value"] < 0.99
    assert second["passed"]


def test_unknown_metric_fails_its_bound_with_an_error():
    """A typo in a metric name never passes silently: the bound fails with an error naming it."""
    summary = run_replication(quickstart_day("hypotheses=[{metric: goodptu, min: 0.5}]")).summary
    (verdict,) = summary["hypotheses"]
    assert summary["hypotheses_passed"] is False
    assert verdict["passed"] is False
    assert "unknown metric 'goodptu'" in verdict["error"]
    assert "goodput" in verdict["error"]  # the message lists the metrics that exist
    assert verdict["value"] is None  # JSON null, never NaN (which strict JSON parsers reject)


def test_fault_kind_that_never_happened_counts_as_zero():
    """``failures.<kind>`` of a kind with no failure is 0, so 'no region outage' can be a hypothesis."""
    summary = run_replication(quickstart_day("hypotheses=[{metric: failures.region_outage, max: 0}]")).summary
    (verdict,) = summary["hypotheses"]
    assert verdict == {"metric": "failures.region_outage", "value": 0.0, "min": None, "max": 0.0, "passed": True}


def test_halt_stops_the_replication_early(tmp_path):
    """A halt bound trips at the next 1 % check after it is crossed and ends the replication there."""
    out = tmp_path / "rep-0"
    run = run_replication(quickstart_day("halt=[{metric: failures_total, max: 2}]"), 0, out).summary
    assert run["halted"]["metric"] == "failures_total"
    assert run["halted"]["value"] == 3 and run["halted"]["passed"] is False
    assert run["duration_s"] < DAY_S
    assert run["duration_s"] / (DAY_S / 100) == round(run["duration_s"] / (DAY_S / 100))  # a 1 % step
    assert run["failures_total"] == 3
    saved = json.loads((out / "summary.json").read_text())
    assert saved["halted"] == run["halted"] and saved["duration_s"] == run["duration_s"] == run["halted"]["time_s"]
    timeline = pq.read_table(out / "timeline.parquet").to_pandas()
    assert timeline["end_s"].max() == run["duration_s"]  # nothing recorded past the halt


def test_hypothesis_on_a_halted_replication_is_not_a_pass(tmp_path):
    """A hypothesis that would hold fails on a halted replication (it never reached its horizon),
    unless the bound says ``if_halted: judge``; the report marks the replication halted, with when and why."""
    from analysis import write_report

    halt = "halt=[{metric: failures_total, max: 2}]"
    out = tmp_path / "run"
    strict = run_replication(quickstart_day(halt, "hypotheses=[{metric: goodput, min: 0}]"), 0, out / "rep-0").summary
    (verdict,) = strict["hypotheses"]
    assert verdict["value"] >= 0 and verdict["passed"] is False and verdict["halted"] is True
    assert strict["hypotheses_passed"] is False
    judged = run_replication(quickstart_day(halt, "hypotheses=[{metric: goodput, min: 0, if_halted: judge}]")).summary
    assert judged["hypotheses"][0]["passed"] is True and "halted" not in judged["hypotheses"][0]
    assert strict["halted"]["time_s"] == strict["duration_s"] < DAY_S
    page = write_report([out], tmp_path / "report").read_text()
    hours = f"{strict['duration_s'] / 3600:.4g} h"
    assert f"halted at {hours} of simulated time by the halt bound failures_total &lt;= 2: 3" in page
    assert "not judged: the replication halted early" in page and "None" not in page.split("<h2>Scenario")[0]


def test_halt_that_never_trips_lets_the_run_finish():
    """A halt bound that holds changes nothing: the run reaches its horizon with ``halted`` None."""
    plain = run_replication(quickstart_day()).summary
    watched = run_replication(quickstart_day("halt=[{metric: failures_total, max: 1000}]")).summary
    assert watched["halted"] is None
    assert watched["duration_s"] == DAY_S
    assert (watched["goodput"], watched["events"]) == (plain["goodput"], plain["events"])


def test_halt_trips_while_no_event_is_scheduled():
    """Downtime grows while a job waits for capacity with nothing scheduled; the halt still trips."""
    scenario = make_scenario(
        faults=[{"name": "gone", "kind": "island_outage", "target": {"islands": ["isl"]}, "at": "2h", "duration": "100d"}],
        halt=[{"metric": "global_downtime_s", "max": 3600}],
    )
    summary = run_replication(scenario).summary
    assert summary["halted"]["metric"] == "global_downtime_s"
    assert 3600 < summary["global_downtime_s"] <= 3600 + DAY_S / 100
    assert summary["duration_s"] < DAY_S / 4


def test_halt_on_an_unknown_metric_stops_at_the_first_check():
    """A halt bound on a metric that does not exist fails at the first check, with its error."""
    summary = run_replication(make_scenario(halt=[{"metric": "nonsense", "max": 1}])).summary
    assert summary["halted"]["passed"] is False
    assert "unknown metric 'nonsense'" in summary["halted"]["error"]
    assert summary["duration_s"] == DAY_S / 100


def test_bad_bound_is_bad_input_exit_2(tmp_path):
    """A bound without min or max is a one-line error naming the YAML path, exit 2, no traceback."""
    done = chaossim("run", str(QUICKSTART), "--set", "hypotheses=[{metric: goodput}]", "-o", str(tmp_path / "out"), "--json", "-q")
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {QUICKSTART}: hypotheses[0]")
    assert "needs 'min' or 'max'" in line
    assert done.stdout == ""


@pytest.mark.parametrize("bad", ["hypotheses={metric: goodput, min: 1}", "halt=[{min: 1}]", "hypotheses=[{metric: goodput, minimum: 1}]"])
def test_malformed_bounds_are_rejected_at_load(bad):
    """Bounds that are not a list of {metric, min|max} fail validation with a one-line message."""
    with pytest.raises(ScenarioError) as err:
        quickstart_day(bad)
    assert "\n" not in str(err.value)


def test_missing_scenario_file_exit_2(tmp_path):
    """A scenario file that does not exist: one line naming it, exit 2."""
    done = chaossim("run", str(tmp_path / "nope.yaml"), "--json", "-q")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {tmp_path / 'nope.yaml'}: no such file"


def test_cli_exits_1_when_a_replication_halts(tmp_path):
    """A halted replication failed its health check: `chaossim run` says so and exits 1."""
    proc = subprocess.run(
        [CHAOSSIM, "run", "scenarios/quickstart.yaml", "-q", "-o", str(tmp_path / "r"),
         "--set", "duration=1d", "--set", "halt=[{metric: failures_total, max: 0}]", "--set", "hypotheses=[]",
         "--set", "compare={}", "--no-report"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    # when it stopped and which bound tripped, in the metric's unit
    assert re.search(r"HALTED at [0-9.]+ h of simulated time by the halt bound failures_total <= 0: [1-9]", proc.stdout)
