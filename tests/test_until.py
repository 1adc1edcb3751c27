"""Work-defined jobs (``until``): a replication ends when its work is committed; time-to-train.

On one island under ``sync_dp`` restart (the exact model of the expected-period form, see
test_sync_baseline), W of useful work per period costs E[T] = e^{R/M} (M + D) (e^{(W+C)/M} - 1) in
expectation, each period independently (failures are memoryless). A job of n periods of W and one
of w < W therefore takes n E[T(W)] + E[T(w)] on average: its final, shorter period is written as
soon as the work is done.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_scenario, run

from sim.loading import ScenarioError

W, C, D, R, M = 1000.0, 60.0, 600.0, 300.0, 9000.0
CHIPS = 1024


def expected_period_s(work_s: float) -> float:
    """The exact expected-period form, written out independently of sim.checkpointing."""
    return math.exp(R / M) * (M + D) * (math.exp((work_s + C) / M) - 1.0)


def work_scenario(until: str, seed: int = 1, *sets: str):
    return make_scenario(
        f"seed={seed}", "duration=100d", f"until={until}", f"training.checkpoint.interval={W}",
        f"training.checkpoint.write_time={C}", f"training.recovery.detect={D}", "training.recovery.reschedule=0",
        f"training.recovery.reload={R}", *sets,
        faults=[{"name": "chips", "kind": "chip_failure", "mtbf": M * CHIPS}],
    )


def test_time_to_train_matches_the_expected_period_form():
    """Mean time-to-train of 40.5 periods of work over 300 seeds is 40 E[T(W)] + E[T(W/2)] within 1.5 %
    (about four standard errors)."""
    periods = 40.5
    times = [run(work_scenario(f"{{steps: {periods * W}}}", seed))[0]["time_to_train_s"] for seed in range(300)]
    expected = 40 * expected_period_s(W) + expected_period_s(W / 2)
    assert np.mean(times) == pytest.approx(expected, rel=0.015)
    assert np.std(times) / math.sqrt(len(times)) < 0.004 * expected  # the tolerance is ~4 standard errors


def test_work_defined_run_ends_with_the_work_committed():
    """The run stops at the commit of the last step: duration is the time-to-train, steps the target."""
    summary, tables = run(work_scenario("{tokens: 20.5G}"))  # 1M tokens per step: 20,500 steps
    assert summary["steps"] == pytest.approx(20500, rel=1e-12)
    assert summary["duration_s"] == summary["time_to_train_s"]
    events = tables["events"].to_pandas()
    assert events["kind"].iloc[-1] == "work_done" and events["time_s"].iloc[-1] == summary["time_to_train_s"]
    last_checkpoint = events[events["kind"] == "checkpoint"]["time_s"].iloc[-1]
    assert last_checkpoint == summary["time_to_train_s"]
    # without failures: 20 periods of W + C and one of W/2 + C
    clean, _ = run(work_scenario("{steps: 20500}", 1, "faults=[]"))
    assert clean["time_to_train_s"] == pytest.approx(20 * (W + C) + W / 2 + C, rel=1e-12)
    assert clean["goodput"] == pytest.approx(20500 / (20 * (W + C) + W / 2 + C), rel=1e-12)


def test_horizon_before_the_work_is_done():
    """A job the horizon cuts short has no time-to-train."""
    summary, _ = run(work_scenario("{steps: 1e9}", 1, "duration=2d"))
    assert summary["time_to_train_s"] is None and summary["duration_s"] == 2 * 86400


@pytest.mark.parametrize("until, message", [
    ("{}", "exactly one of 'tokens' or 'steps'"),
    ("{steps: 10, tokens: 1T}", "exactly one of 'tokens' or 'steps'"),
    ("{steps: -5}", "until.steps"),
])
def test_bad_until(until, message):
    """until needs exactly one positive measure of work."""
    with pytest.raises(ScenarioError, match=message):
        work_scenario(until)


def test_until_needs_a_lockstep_policy():
    """The DiLoCo family has no single job whose work could be counted: a clear error."""
    with pytest.raises(ScenarioError, match="until .* needs policy sync_dp or elastic_dp"):
        work_scenario("{steps: 100}", 1, "training.policy=diloco")


def test_run_prints_time_to_train(tmp_path):
    """chaossim run shows the mean time-to-train, or that the duration was not enough for some run."""
    import subprocess

    from conftest import CHAOSSIM, scenario_dict

    from sim.cli import aggregate

    data = scenario_dict("until={steps: 20000}", "duration=10d", "replications=2",
                         faults=[{"name": "chips", "kind": "chip_failure", "mtbf": M * CHIPS}])
    file = tmp_path / "work.yaml"
    file.write_text(json.dumps(data))
    done = subprocess.run([CHAOSSIM, "run", file, "-o", tmp_path / "out"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "time to train" in done.stdout
    short = subprocess.run([CHAOSSIM, "run", file, "--set", "duration=6h", "-o", tmp_path / "short"],
                           capture_output=True, text=True, check=False)
    assert "not within the duration" in short.stdout
    runs = [{"scenario": "s", "policy": "sync_dp", "hypotheses_passed": True, "halted": None, "time_to_train_s": t}
            for t in (100.0, None)]
    assert aggregate(runs)["time_to_train_s"] is None
