"""Sweeps (sim/sweep.py, sim/executors.py): expansion, bad factors, executors agree, kill + resume, crashes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.executors import DaskExecutor, LocalExecutor, SerialExecutor
from sim.loading import ScenarioError
from sim.scenario import Scenario
from sim.sweep import WALL_COLUMNS, load_sweep, parse_factors, parse_seeds, plan_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
CHAOSSIM = ROOT / ".venv" / "bin" / "chaossim"

# Two 1,024-chip islands under sync_dp for a day: chip failures every hour or so and one island outage
# replayed from a trace file. A replication takes a few hundredths of a second.
TINY = """\
version: 1
name: tiny-sweep
seed: 3
duration: {duration}
replications: 2
topology:
  regions:
    - name: r
      islands: [{{name: pod, chip: v5p, chips: 1024, count: 2}}]
workload: {{params: 1B, tokens_per_step: 4M, step_time: auto}}
training:
  policy: sync_dp
  checkpoint: {{interval: 1h, write_time: 60s}}
faults:
  - {{name: chips, kind: chip_failure, target: all, mtbf: 2000h, blast_radius: host}}
  - {{name: replay, kind: trace, file: trace.csv}}
sweep:
  grid: {{training.checkpoint.write_time: [10s, 60s]}}
"""


def write_scenario(folder: Path, duration: str = "1d") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trace.csv").write_text("time,target,duration,kind\n3h,pod-1,30m,island_outage\n")
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(duration=duration))
    return path


def rows(folder: Path) -> pd.DataFrame:
    """A sweep's rows without the columns that measure the machine."""
    return load_sweep(folder).drop(columns=list(WALL_COLUMNS), errors="ignore")


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    return write_scenario(tmp_path / "in")


def test_grid_zip_and_seeds_expand_in_order(scenario: Path, tmp_path: Path):
    """Grid factors multiply, zip factors move together, each point runs every seed; first factor slowest."""
    plan = plan_sweep(
        scenario,
        grid={"training.recovery.reload": ["1m", "5m", "10m"]},
        zipped={"training.recovery.detect": ["1m", "2m"], "training.recovery.reschedule": ["3m", "4m"]},
        seeds=[5, 6],
    )
    assert plan.total == 2 * 3 * 2 * 2 and len(plan.scenarios) == 12
    assert [f.keys for f in plan.factors] == [
        ("training.checkpoint.write_time",), ("training.recovery.reload",),
        ("training.recovery.detect", "training.recovery.reschedule"),
    ]
    assert plan.settings[0] == {
        "training.checkpoint.write_time": "10s", "training.recovery.reload": "1m",
        "training.recovery.detect": "1m", "training.recovery.reschedule": "3m",
    }
    assert plan.settings[1]["training.recovery.detect"] == "2m" and plan.settings[1]["training.recovery.reschedule"] == "4m"
    assert plan.settings[2]["training.recovery.reload"] == "5m"
    assert plan.settings[6]["training.checkpoint.write_time"] == "60s"
    jobs = plan.jobs(tmp_path / "out")
    assert [(j.index, j.point, j.seed) for j in jobs[:4]] == [(0, 0, 5), (1, 0, 6), (2, 1, 5), (3, 1, 6)]
    last = Scenario.model_validate(jobs[-1].scenario)
    assert (last.training.checkpoint.write_time, last.training.recovery.reload) == (60.0, 600.0)
    assert (last.training.recovery.detect, last.training.recovery.reschedule) == (120.0, 240.0)
    # factor columns hold resolved values (seconds), one type per column
    assert [c["training.recovery.reload"] for c in plan.columns[:6:2]] == [60.0, 300.0, 600.0]


def test_default_seeds_and_command_line_factors(scenario: Path):
    """Seeds default to seed + replication; a command-line factor replaces the file's, a new key extends it."""
    assert plan_sweep(scenario).seeds == (3, 4)
    plan = plan_sweep(scenario, grid=parse_factors(["training.checkpoint.write_time=30s", "training.bits=8,16"], "--grid"),
                      seeds=parse_seeds("1-3,9"))
    assert plan.seeds == (1, 2, 3, 9)
    assert [s for s in plan.settings] == [
        {"training.checkpoint.write_time": "30s", "training.bits": 8},
        {"training.checkpoint.write_time": "30s", "training.bits": 16},
    ]


def test_shipped_scenario_survives_infinity(scenario: Path, tmp_path: Path):
    """The shipped scenario is strict JSON and validates back with grace.max = inf (its default)."""
    plan = plan_sweep(scenario)
    shipped = json.loads(json.dumps(plan.jobs(tmp_path)[0].scenario, allow_nan=False))  # strict JSON
    assert Scenario.model_validate(shipped).training.grace.max == math.inf


@pytest.mark.parametrize(
    ("factor", "expected"),
    [
        ("training.quorumm=1,2", "unknown key 'quorumm'"),
        ("training.quorum=1,0", "training.quorum=0"),
        ("seed=1,2", "sweep factor seed"),
    ],
)
def test_bad_factor_is_a_one_line_error(scenario: Path, tmp_path: Path, factor: str, expected: str):
    """An unknown key or a bad value fails before anything runs: one line naming the factor, exit code 2."""
    with pytest.raises(ScenarioError) as problem:
        plan_sweep(scenario, grid=parse_factors([factor], "--grid"))
    assert expected in str(problem.value) and "\n" not in str(problem.value)
    result = CliRunner().invoke(app, ["sweep", str(scenario), "--grid", factor, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert not (tmp_path / "out").exists()


def test_rows_identical_on_every_executor(scenario: Path, tmp_path: Path):
    """Local with 1 and 2 workers and a real Dask cluster give the same rows, apart from wall time."""
    from distributed import LocalCluster

    plan = plan_sweep(scenario, grid={"training.recovery.reload": ["1m", "10m"]})
    run_sweep(plan, tmp_path / "one", LocalExecutor(1))
    run_sweep(plan, tmp_path / "two", LocalExecutor(2))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = CliRunner().invoke(app, [
            "sweep", str(scenario), "--grid", "training.recovery.reload=1m,10m", "--executor", "dask",
            "--address", cluster.scheduler_address, "-o", str(tmp_path / "dask"),
        ])
    assert result.exit_code == 0, result.output
    one = rows(tmp_path / "one")
    assert len(one) == 8 and (one["status"] == "ok").all() and list(one["index"]) == list(range(8))
    assert one["failures.chip_failure"].gt(0).all() and one["failures.island_outage"].eq(1).all()
    pd.testing.assert_frame_equal(one, rows(tmp_path / "two"))
    pd.testing.assert_frame_equal(one, rows(tmp_path / "dask"))


def test_killed_sweep_resumes_without_loss_or_repeat(tmp_path: Path):
    """SIGKILL mid-sweep keeps every finished row readable; --resume completes each replication exactly once."""
    # 60 simulated days make a replication take ~0.2-0.3 s, so the kill lands mid-sweep
    scenario = write_scenario(tmp_path / "in", duration="60d")
    folder = tmp_path / "out"
    args = [str(CHAOSSIM), "sweep", str(scenario), "--seeds", "1-8", "--workers", "2", "-q", "-o", str(folder)]
    sweep = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list((folder / "rows").glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert sweep.poll() is None, "the sweep finished before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    before = load_sweep(folder)
    assert 3 <= len(before) < 16 and (before["status"] == "ok").all()

    plan = plan_sweep(scenario, seeds=list(range(1, 9)))
    outcome = run_sweep(plan, folder, LocalExecutor(2), resume=True)
    assert (outcome.skipped, outcome.ran, outcome.errors) == (len(before), 16 - len(before), 0)
    after = load_sweep(folder)
    assert list(after["index"]) == list(range(16)) and (after["status"] == "ok").all()


def crash_on_reload(monkeypatch, reload_s: float) -> None:
    """Make every replication whose scenario has ``recovery.reload == reload_s`` raise, as a bug would."""
    import sim.runner

    real = sim.runner.run_replication

    def flaky(scenario, *args, **kwargs):
        if scenario.training.recovery.reload == reload_s:
            raise RuntimeError("simulated crash in the model")
        return real(scenario, *args, **kwargs)

    monkeypatch.setattr(sim.runner, "run_replication", flaky)


def test_crashing_replication_is_an_error_row(scenario: Path, tmp_path: Path, monkeypatch):
    """A replication that raises is a row with its error; the others complete; the sweep exits 1."""
    crash_on_reload(monkeypatch, 600.0)
    result = CliRunner().invoke(app, [
        "sweep", str(scenario), "--grid", "training.recovery.reload=5m,10m", "--seeds", "1,2", "--executor", "serial",
        "-o", str(tmp_path / "out"),
    ])
    assert result.exit_code == 1
    frame = load_sweep(tmp_path / "out")
    crashed = frame["training.recovery.reload"] == 600.0
    assert crashed.sum() == len(frame) / 2
    assert (frame.loc[crashed, "status"] == "error").all() and (frame.loc[~crashed, "status"] == "ok").all()
    assert (frame.loc[crashed, "error"] == "RuntimeError: simulated crash in the model").all()
    assert frame.loc[~crashed, "goodput"].gt(0).all() and frame.loc[crashed, "goodput"].isna().all()
    first_crash = int(frame.loc[crashed, "index"].iloc[0])
    assert (tmp_path / "out" / "runs" / str(first_crash) / "error.txt").exists()


def test_resume_runs_only_what_is_not_ok(scenario: Path, tmp_path: Path, monkeypatch):
    """--resume skips ok rows (their files untouched) and re-runs errored ones; a finished sweep runs nothing."""
    plan = plan_sweep(scenario, grid={"training.recovery.reload": ["5m", "10m"]}, seeds=[1, 2])
    folder = tmp_path / "out"
    crash_on_reload(monkeypatch, 600.0)
    first = run_sweep(plan, folder, SerialExecutor())
    total = plan.total
    assert (first.ran, first.errors) == (total, total // 2)
    ok_rows = load_sweep(folder).query("status == 'ok'")["index"]
    ok_files = {folder / "rows" / f"part-{i:06d}.parquet" for i in ok_rows}
    stamps = {p: p.stat().st_mtime_ns for p in ok_files}
    monkeypatch.undo()  # the bug is fixed
    second = run_sweep(plan, folder, SerialExecutor(), resume=True)
    assert (second.skipped, second.ran, second.errors) == (total // 2, total // 2, 0)
    assert {p: p.stat().st_mtime_ns for p in ok_files} == stamps
    assert (load_sweep(folder)["status"] == "ok").all()
    third = run_sweep(plan, folder, SerialExecutor(), resume=True)
    assert (third.skipped, third.ran) == (total, 0)


def test_a_missing_trace_file_is_rejected_before_anything_runs(scenario: Path, tmp_path: Path):
    """A point whose trace file does not exist fails validation up front: one line, exit 2, no rows."""
    result = CliRunner().invoke(app, [
        "sweep", str(scenario), "--grid", "faults.1.file=trace.csv,missing.csv", "--seeds", "1",
        "-o", str(tmp_path / "out"),
    ])
    assert result.exit_code == 2
    assert "missing.csv" in result.output and "does not exist" in result.output
    assert not (tmp_path / "out" / "rows").exists() or not any((tmp_path / "out" / "rows").iterdir())


def test_folder_of_another_sweep_is_refused(scenario: Path, tmp_path: Path):
    """Rows of two different sweeps never mix; rerunning a finished sweep without --resume is refused."""
    folder = tmp_path / "out"
    run_sweep(plan_sweep(scenario, seeds=[1]), folder, SerialExecutor())
    with pytest.raises(ScenarioError, match="different sweep"):
        run_sweep(plan_sweep(scenario, seeds=[2]), folder, SerialExecutor())
    with pytest.raises(ScenarioError, match="--resume"):
        run_sweep(plan_sweep(scenario, seeds=[1]), folder, SerialExecutor())


def test_quorum_grace_scenario_plans_30_replications():
    """scenarios/sweeps/quorum-grace.yaml: quorum x fixed grace window x 3 seeds, every point valid."""
    plan = plan_sweep(ROOT / "scenarios" / "sweeps" / "quorum-grace.yaml")
    assert plan.total == 30 and plan.seeds == (1, 2, 3)
    assert {c["training.quorum"] for c in plan.columns} == {1, 2}
    assert {c["training.grace.fixed"] for c in plan.columns} == {0.0, 2.0, 5.0, 15.0, 60.0}
    assert {Scenario.model_validate(s).training.policy.value for s in plan.scenarios} == {"decoupled_diloco"}


def test_dask_executor_starts_its_own_cluster(scenario: Path, tmp_path: Path, monkeypatch):
    """Without an address the Dask executor runs on a LocalCluster it starts and closes itself,
    and leaves nothing in the system temporary folder."""
    import tempfile

    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    outcome = run_sweep(plan_sweep(scenario, seeds=[1]), tmp_path / "out", DaskExecutor(workers=1))
    assert (outcome.ran, outcome.errors) == (2, 0)
    assert list(temp.iterdir()) == []


def test_sweep_exits_1_and_counts_failed_hypotheses(scenario: Path, tmp_path: Path):
    """A replication that fails a hypothesis gates the sweep, as it gates `chaossim run`: exit 1 and a count."""
    # goodput >= 0.99 fails at every point; goodput >= 0 holds
    for bound, code in (("0.99", 1), ("0", 0)):
        result = CliRunner().invoke(app, [
            "sweep", str(scenario), "--executor", "serial", "--seeds", "1", "-q", "-o", str(tmp_path / bound),
            "--set", f"hypotheses=[{{metric: goodput, min: {bound}}}]",
        ])
        assert result.exit_code == code, result.output
        frame = load_sweep(tmp_path / bound)
        assert frame["status"].eq("ok").all()
        if code:
            assert "2 of 2 replication(s) failed a hypothesis or halted" in result.stdout
        else:
            assert "failed a hypothesis" not in result.stdout
    plan = json.loads((tmp_path / "0" / "sweep.json").read_text())
    assert plan["provenance"]["command"].startswith("chaossim sweep ")
    assert plan["provenance"]["seeds"] == [1] and plan["provenance"]["chaossim"]


def test_batched_runs_keep_their_own_resolved_scenario(tmp_path):
    """Replications of one point run in one batch, and each run folder's scenario.yaml is that
    replication's scenario (its own seed), loading back unchanged."""
    from sim.executors import batches
    from sim.loading import load_scenario

    plan = plan_sweep(write_scenario(tmp_path / "in"), seeds=[5, 6, 7])
    assert [len(b) for b in batches(plan.jobs(tmp_path / "out"), workers=1)] == [2, 1, 1, 1, 1]  # 6 jobs
    sizes = [len(b) for b in batches(list(range(100)), workers=2)]
    # a quarter of a worker's share of what is left: 13 of 100, 11 of 87, ..., single jobs at the end
    assert sizes[:3] == [13, 11, 10] and sizes[-8:] == [1] * 8 and sum(sizes) == 100
    assert sizes == sorted(sizes, reverse=True)
    assert [x for b in batches(list(range(100)), workers=2) for x in b] == list(range(100))
    assert max(len(b) for b in batches(list(range(10_000)), workers=2)) == 32
    run_sweep(plan, tmp_path / "out", SerialExecutor())
    for job in plan.jobs(tmp_path / "out"):
        written = load_scenario(Path(job.out_dir) / "scenario.yaml", trace_dirs=[tmp_path / "in"])
        assert written == Scenario.model_validate({**job.scenario, "seed": job.seed, "replications": 1})


def test_best_table_names_metrics_in_units_and_counts_ties(scenario: Path):
    """The end-of-sweep table names each metric as the run table does (its values are in hours), and
    when several points share the best mean it says how many: the first of them is not the best alone."""
    from rich.console import Console

    from sim.sweep import best_table

    plan = plan_sweep(scenario, seeds=[1, 2])
    frame = pd.DataFrame({
        "point": [0, 0, 1, 1], "status": ["ok"] * 4,
        "goodput": [0.90, 0.92, 0.80, 0.84],  # point 0 is best alone
        "global_downtime_s": [0.0, 0.0, 0.0, 0.0],  # both points tie at zero downtime
        "final_loss": [0.5, 0.7, 0.4, 0.6],  # a third, long header
    })
    console = Console(width=80, record=True)
    console.print(best_table(frame, plan))
    text = console.export_text()
    # the header may wrap between its words in 80 columns
    assert {"global", "downtime", "(min,", "h)"} <= set(text.split()) and "global_downtime_s" not in text
    assert all(len(line) <= 80 and "…" not in line for line in text.splitlines())
    (tied,) = [line for line in text.splitlines() if "points tied" in line]
    assert tied.split()[2:] == ["1", "of", "2", "2", "of", "2", "1", "of", "2"]


def test_best_table_keeps_every_key_and_value_whole_in_80_columns():
    """The averaging sweep's keys (``topology.regions.0.islands.0.count + training.quorum``) and the
    loss column fit 80 columns with no dotted key folded mid-word and no column cut off; units are in
    the headers, so mean and spread cells stay short."""
    from rich.console import Console

    from sim.sweep import best_table

    plan = plan_sweep(ROOT / "scenarios" / "sweeps" / "quality-averaging.yaml", ["duration=30m"])
    points = len(plan.scenarios)
    frame = pd.DataFrame({
        "point": list(range(points)) * 2, "status": ["ok"] * 2 * points, "goodput": [1.0] * 2 * points,
        "global_downtime_s": [0.0] * 2 * points, "final_loss": [0.3 + 0.01 * (k % points) for k in range(2 * points)],
    })
    console = Console(width=80, record=True)
    console.print(best_table(frame, plan))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for key in ("training.averaging", "training.bits", "topology.regions.0.islands.0.count", "training.quorum"):
        assert key in text
    assert "nats" in text  # the loss's unit, once, in its header
    (mean,) = [line.split() for line in text.splitlines() if line.strip().startswith("mean")]
    assert mean[1:] == ["1.0000", "0", "0.3"]


def test_a_best_goodput_resting_on_the_run_end_convention_gets_a_note():
    """As ``run`` notes it for one run: points whose mean goodput is more than 10 % work still pending
    when the runs ended are counted and the worst named; the best goodput's point, if it is one of
    them, is named with its share. Points under the share get no note."""
    from sim.sweep import run_end_notes

    plan = plan_sweep(ROOT / "scenarios" / "four-regions-12b.yaml",
                      grid={"training.quorum": ["1", "4"]}, seeds=[1, 2])
    frame = pd.DataFrame({
        "point": [0, 0, 1, 1], "status": ["ok"] * 4,
        "goodput": [0.96, 0.97, 0.82, 0.82],
        "useful_at_end_fraction": [0.85, 0.86, 0.02, 0.02],  # point 0: 89 % of its goodput; point 1: 2 %
    })
    notes = run_end_notes(frame, plan)
    assert len(notes) == 2
    assert "at 1 of 2 points more than 10% of goodput" in notes[0] and "(most: 89% at training.quorum=1)" in notes[0]
    assert notes[1] == "note: the best goodput (0.9650, training.quorum=1) is 89% such work"
    frame["useful_at_end_fraction"] = 0.05
    assert run_end_notes(frame, plan) == []
    assert run_end_notes(frame.drop(columns="useful_at_end_fraction"), plan) == []


@pytest.mark.parametrize("text", ["5-1", "1-3,9-2"])
def test_an_empty_seed_range_says_so(text):
    """``--seeds 5-1`` holds no seed: the error names the range, not an empty list of seeds."""
    with pytest.raises(ScenarioError, match=r"the range \d-\d holds no seed \(expected low-high, like 1-5\)"):
        parse_seeds(text)
    assert parse_seeds("3-3") == [3]


def test_unreachable_scheduler_leaves_no_folder(scenario: Path, tmp_path: Path, monkeypatch):
    """A sweep refused because its Dask scheduler cannot be reached ran nothing: exit 2, one line, and
    no sweep folder (scenario.yaml, sweep.json, rows/) left behind to be mistaken for a sweep."""
    import sim.executors
    from sim.executors import ExecutorError

    class Unreachable(SerialExecutor):
        def imap_unordered(self, fn, jobs):
            raise ExecutorError("cannot reach the Dask scheduler at tcp://10.0.0.5:8786: timed out")
            yield  # a generator, as the real executors are

    monkeypatch.setattr(sim.executors, "make_executor", lambda *args: Unreachable())
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        result = CliRunner().invoke(app, ["sweep", str(scenario), "--seeds", "1", "-q", "-o", str(out)])
        assert result.exit_code == 2 and "cannot reach the Dask scheduler" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists() and empty.is_dir() and not list(empty.iterdir())
