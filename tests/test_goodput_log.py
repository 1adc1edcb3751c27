"""``chaossim export --goodput-log``: our run as ml-goodput-measurement's step log, and its goodput.

``reference_goodput`` is a test double of the library's ``GoodputCalculator.get_job_goodput`` (without
badput breakdown), written from its published algorithm: step start times keyed by integer step;
a step logged again marks a restart from it, and the segment before counts as productive only up to
that step; a segment's first step beyond its mean step time is program start-up, not productive; the
last step runs to the job's end; goodput is productive time over the time since the first job start.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import CHAOSSIM, make_scenario
from typer.testing import CliRunner

from sim.cli import app
from sim.goodput_log import GoodputLogError, entries
from sim.runner import run_replication


def reference_goodput(log: list[dict]) -> float:
    def segment_productive_s(starts: dict[int, float], upto: int) -> float:
        if upto == 0:
            return 0.0
        total_s = first_s = 0.0
        steps = 0
        lowest = min(starts)
        for step, start in starts.items():
            if step <= upto and step - 1 in starts:
                total_s += start - starts[step - 1]
                if step - 1 == lowest:
                    first_s = total_s
                steps += 1
        if steps <= 1:
            return first_s if steps == 1 else 0.0
        mean_s = (total_s - first_s) / (steps - 1)
        return total_s - max(first_s - mean_s, 0.0)

    productive_s, starts = 0.0, {}
    first_start = end = None
    for entry in log:
        if "job_start_time" in entry and first_start is None:
            first_start = entry["job_start_time"]
        if "step_start_time" in entry:
            step = int(entry["step_count"])
            if step not in starts:
                starts[step] = entry["step_start_time"]
            else:  # restarted from this step: what was logged after its first start was lost
                productive_s += segment_productive_s(starts, step)
                starts = {step: entry["step_start_time"]}
        if "job_end_time" in entry:
            end = entry["job_end_time"]
    last = max(starts)
    productive_s += segment_productive_s(starts, last) + end - starts[last]
    return productive_s / (end - first_start)


def restart_run(tmp_path, write_time: str, seed: int = 2):
    """One island, 1 s steps, checkpoints every 1,000 steps, D + R = 15 min, a failure every 2.5 h,
    30,000 steps of work."""
    scenario = make_scenario(
        f"seed={seed}", "duration=60d", "until={steps: 30000}", "training.checkpoint.interval=1000s",
        f"training.checkpoint.write_time={write_time}", "training.recovery.detect=600s",
        "training.recovery.reschedule=0s", "training.recovery.reload=300s",
        faults=[{"name": "chips", "kind": "chip_failure", "mtbf": 9000 * 1024}],
    )
    folder = tmp_path / f"rep-{write_time}"
    summary = run_replication(scenario, 0, folder).summary
    return summary, list(entries(folder))


def test_goodput_log_gives_our_goodput_through_the_librarys_algorithm(tmp_path):
    """Free checkpoints, one island: the library's goodput on our log is ours within 1e-6."""
    summary, log = restart_run(tmp_path, "0s")
    assert summary["interruptions"] >= 3
    assert reference_goodput(log) == pytest.approx(summary["goodput"], abs=1e-6)
    steps = [e["step_count"] for e in log if "step_count" in e]
    assert all(isinstance(k, int) for k in steps) and max(steps) == 29999
    starts = [e for e in log if "job_start_time" in e]
    assert len(starts) == 1 + summary["interruptions"]  # the first start and one per restart
    times = [next(v for k, v in e.items() if k.endswith("_time")) for e in log]
    assert times == sorted(times)


def test_blocking_checkpoints_are_productive_for_the_library(tmp_path):
    """With 60 s writes the library counts every completed write as step time (a write a failure cut
    short is wasted progress for it, checkpoint time for us): its goodput is ours plus the completed
    writes' share of the job (the documented mapping), within 1e-6."""
    summary, log = restart_run(tmp_path, "60s", seed=9)
    events = run_events(tmp_path / "rep-60s")
    completed_s = 60.0 * (events["kind"] == "checkpoint").sum()
    assert summary["chip_time"]["checkpoint"] > 1024 * completed_s  # some writes were cut short
    theirs = reference_goodput(log)
    assert theirs - summary["goodput"] == pytest.approx(completed_s / summary["duration_s"], abs=1e-6)


def run_events(folder):
    import pyarrow.parquet as pq

    return pq.read_table(folder / "events.parquet").to_pandas()


def test_export_command_and_bad_input(tmp_path):
    """The CLI writes RUN/rep-0/goodput-log.jsonl; a DiLoCo run or a folder that is not a run is a
    one-line error, exit code 2, and nothing is written."""
    scenario_file = tmp_path / "s.yaml"
    scenario_file.write_text(json.dumps({
        "version": 1, "name": "g", "seed": 1, "duration": "1d",
        "topology": {"regions": [{"name": "r", "islands": [{"name": "i", "chip": "v5p", "chips": 256}]}]},
        "workload": {"params": "1B", "tokens_per_step": "1M", "step_time": "1s"},
        "faults": [{"name": "c", "kind": "chip_failure", "mtbf": "2000h"}],
    }))
    run = subprocess.run([CHAOSSIM, "run", scenario_file, "-o", tmp_path / "run"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    done = subprocess.run([CHAOSSIM, "export", "--goodput-log", tmp_path / "run"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "run" / "rep-0" / "goodput-log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["job_start_time"] == 0.0 and "job_end_time" in json.loads(lines[-1])
    # one replication's folder (as a sweep's runs/I is) exports itself
    direct = CliRunner().invoke(app, ["export", "--goodput-log", str(tmp_path / "run" / "rep-0"), "-o",
                                      str(tmp_path / "direct.jsonl")])
    assert direct.exit_code == 0, direct.stderr
    assert (tmp_path / "direct.jsonl").read_text().splitlines() == lines
    (tmp_path / "direct.jsonl").unlink()
    for args, says in (([tmp_path / "nowhere"], "nowhere: no such folder"),
                       ([tmp_path / "run", "-r", "1"], "run: has no replication 1 (-r 0 to 0)"),
                       ([tmp_path], "not a replication folder"),
                       ([tmp_path / "run" / "rep-0", "-r", "1"], "rep-0: is one replication's folder")):
        bad = CliRunner().invoke(app, ["export", "--goodput-log", *map(str, args)])
        assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and says in bad.stderr, bad.stderr
    assert not (tmp_path / "nowhere").exists() and not list(tmp_path.glob("*.jsonl"))
    # -o that is a folder, or in a folder that does not exist: one line, and no partial file left anywhere
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for target, says in ((tmp_path / "run", "run: is a folder (-o takes the file to write)"),
                         (tmp_path / "nowhere" / "log.jsonl", f"log.jsonl: no such folder {tmp_path / 'nowhere'}")):
        bad = CliRunner().invoke(app, ["export", "--goodput-log", str(tmp_path / "run"), "-o", str(target)])
        assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and says in bad.stderr, bad.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_export_of_a_comparison_names_its_variant_folders(tmp_path):
    """The quickstart compares three variants: export says which folder to export instead of
    'rep-0: not a replication folder'."""
    from conftest import ROOT

    out = tmp_path / "qs"
    run = CliRunner().invoke(app, ["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--set", "duration=1h",
                                   "--no-report", "-q", "-o", str(out)])
    assert run.exit_code == 0, run.stderr
    bad = CliRunner().invoke(app, ["export", "--goodput-log", str(out)])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "holds compared variants; export one of them: " in bad.stderr
    assert f"{out / 'sync_dp-restart'}, {out / 'elastic_dp-elastic'}, {out / 'decoupled_diloco-restart'}" in bad.stderr
    assert not list(out.rglob("*.jsonl"))


def test_diloco_runs_have_no_goodput_log(tmp_path):
    """The DiLoCo family has no single job that rolls back: a clear error."""
    folder = tmp_path / "rep"
    run_replication(make_scenario("training.policy=diloco", "duration=1h"), 0, folder)
    with pytest.raises(GoodputLogError, match="needs a lockstep run"):
        entries(folder)
    assert not list(folder.glob("*.jsonl"))
