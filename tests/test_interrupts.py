"""Interrupted runs, killed sweeps, concurrent writers and output folders.

Every test here runs the installed ``chaossim`` executable as a real process and signals it the way
an operator or a scheduler would: SIGKILL (nothing can be cleaned up), SIGTERM (a scheduler's stop,
handled like Ctrl-C). What must hold: every file left is readable or clearly marked incomplete,
``--resume`` completes every replication exactly once, no process of a sweep outlives its parent by
more than 2 s, and two writers on one folder never mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import CHAOSSIM
from test_sweep import write_scenario

from sim.outputs import LOCK_NAME
from sim.sweep import load_sweep

SMALL = Path(__file__).parent / "data" / "small.yaml"
ORPHAN_GRACE_S = 2.0
# long enough that a signalled sweep is still running: its 16 replications take about 0.35 s each, so
# some 3 s pass between the first rows and the last (at 60 days all 16 were written within 0.45 s, and
# a busy machine could let the sweep finish before the test's signal arrived)
SIGNALLED_SWEEP_DURATION = "400d"


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(CHAOSSIM), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(condition, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"finished before the signal: {process.stderr.read()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited: it only waits to be reaped)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def parquet_files_readable_or_marked(folder: Path) -> None:
    """Every ``*.parquet`` under ``folder`` reads; an unfinished table is only ever ``*.partial``."""
    for path in folder.rglob("*.parquet"):
        pq.read_table(path)
    for path in folder.rglob("*.partial"):
        assert not (path.parent / "summary.json").exists(), f"{path}: a finished replication left a partial table"


def long_run_scenario(tmp_path: Path) -> Path:
    """The small scenario for 400 days, 30 replications: each replication takes a fraction of a second."""
    path = tmp_path / "long.yaml"
    path.write_text(SMALL.read_text().replace("duration: 1d", "duration: 400d").replace("seed: 1", "seed: 1\nreplications: 30"))
    return path


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_readable_or_marked_files(tmp_path, signum):
    """A run killed mid-replication: finished replications are whole, the one in flight is marked
    (no summary.json, tables only as *.partial), and the report reader skips it."""
    from analysis.load import load_results

    out = tmp_path / "out"
    run = start("run", str(long_run_scenario(tmp_path)), "-q", "-o", str(out))
    wait_for(lambda: (out / "rep-2" / "summary.json").exists(), run)
    os.kill(run.pid, signum)
    _, stderr = run.communicate(timeout=30)
    parquet_files_readable_or_marked(out)
    finished = sorted(p.parent.name for p in out.glob("rep-*/summary.json"))
    assert len(finished) >= 3
    assert (out / LOCK_NAME).exists() == (signum == signal.SIGKILL)  # SIGTERM releases the lock; a kill leaves it stale
    results = load_results(out)
    assert len(results.summaries) == len(finished)
    assert len(results.timeline) > 0
    if signum == signal.SIGTERM:
        assert run.returncode == 130 and "Traceback" not in stderr
        assert f"interrupted: {len(finished)} of 30 replication(s) kept" in stderr and "incomplete" in stderr


def in_session(sid: int) -> list[psutil.Process]:
    """Every process of a session (the sweep was started as a session leader)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(process.pid) == sid:
                found.append(process)
    return found


def sweep_processes(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize(
    "signum, executor", [(signal.SIGKILL, "local"), (signal.SIGTERM, "local"), (signal.SIGKILL, "dask")],
    ids=["SIGKILL-local", "SIGTERM-local", "SIGKILL-dask"],
)
def test_killed_sweep_leaves_no_process_and_resumes_exactly_once(tmp_path, signum, executor):
    """Signal the sweep's main process only: its workers (and forkserver and resource tracker, or Dask
    nannies) are gone within 2 s; every row left reads; --resume runs exactly the missing replications."""
    scenario = write_scenario(tmp_path / "in", duration=SIGNALLED_SWEEP_DURATION)
    folder = tmp_path / "out"
    args = ["sweep", str(scenario), "--seeds", "1-8", "--workers", "2", "-q", "-o", str(folder)]
    sweep = start(*args, "--executor", executor)
    try:
        wait_for(lambda: len(list((folder / "rows").glob("part-*.parquet"))) >= 2, sweep, timeout_s=120)
        helpers = sweep_processes(sweep.pid)
        assert len(helpers) >= 2  # the two workers, at least
        signalled = time.monotonic()
        os.kill(sweep.pid, signum)
        _, stderr = sweep.communicate(timeout=30)
        stopped_s = time.monotonic() - signalled
        gone_by = time.monotonic() + ORPHAN_GRACE_S
        while alive(helpers) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not alive(helpers), [p.cmdline()[:3] for p in alive(helpers)]
        assert not alive(in_session(sweep.pid))  # nor any process started later in the sweep's session
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    if signum == signal.SIGTERM:
        assert sweep.returncode == 130 and "Traceback" not in stderr and "add --resume" in stderr
        assert stopped_s < ORPHAN_GRACE_S, stopped_s  # a stop request ends a local sweep within 2 s
    before = load_sweep(folder)
    assert len(before) < 16 and (before["status"] == "ok").all()
    parquet_files_readable_or_marked(folder)
    resumed = subprocess.run([str(CHAOSSIM), *args, "--resume"], check=False, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{16 - len(before)} run, {len(before)} already done, 0 failed of 16" in resumed.stdout
    after = load_sweep(folder)
    assert list(after["index"]) == list(range(16)) and (after["status"] == "ok").all()


def test_a_dask_sweep_stops_without_tracebacks(tmp_path):
    """SIGTERM to a sweep on its own local Dask cluster: exit 130, and stderr is the one line saying what was kept."""
    scenario = write_scenario(tmp_path / "in", duration=SIGNALLED_SWEEP_DURATION)
    folder = tmp_path / "out"
    sweep = start("sweep", str(scenario), "--seeds", "1-8", "--workers", "2", "--executor", "dask", "-q", "-o", str(folder))
    try:
        wait_for(lambda: len(list((folder / "rows").glob("part-*.parquet"))) >= 1, sweep, timeout_s=120)
        os.kill(sweep.pid, signal.SIGTERM)
        _, stderr = sweep.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 130
    assert stderr.strip().splitlines() == [next(line for line in stderr.splitlines() if line.startswith("interrupted: "))]


def test_two_sweeps_on_one_folder_exactly_one_runs(tmp_path):
    """Two sweeps started together on one folder: one runs all 16 replications, the other is refused
    with one line naming the first one's pid; the rows are exactly the 16, once each."""
    scenario = write_scenario(tmp_path / "in", duration="20d")
    folder = tmp_path / "out"
    args = ["sweep", str(scenario), "--seeds", "1-8", "--workers", "1", "-q", "-o", str(folder)]
    first, second = start(*args), start(*args)
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted((first.returncode, second.returncode))
    assert codes == [0, 2], (codes, results)
    loser = results[[first.returncode, second.returncode].index(2)][1]
    assert len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
    assert "in use by another chaossim process" in loser or "already holds" in loser, loser
    frame = load_sweep(folder)
    assert list(frame["index"]) == list(range(16)) and (frame["status"] == "ok").all()


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    """While a sweep holds its folder, a run or a sweep -o that folder is refused, naming the owner's pid."""
    scenario = write_scenario(tmp_path / "in", duration=SIGNALLED_SWEEP_DURATION)
    folder = tmp_path / "out"
    # enough seeds that the sweep still holds the folder when the second writer comes (a 60-day
    # replication of this scenario takes well under a second)
    sweep = start("sweep", str(scenario), "--seeds", "1-400", "--workers", "1", "-q", "-o", str(folder))
    try:
        wait_for(lambda: (folder / LOCK_NAME).exists() and (folder / "sweep.json").exists(), sweep)
        for command in (["sweep", str(scenario), "--seeds", "1-400", "--resume"], ["run", str(SMALL)]):
            refused = subprocess.run([str(CHAOSSIM), *command, "-q", "-o", str(folder)], check=False, capture_output=True, text=True, timeout=60)
            assert refused.returncode == 2 and f"pid {sweep.pid}" in refused.stderr, refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()


def test_a_stale_lock_is_taken_over(tmp_path):
    """A lock file left by a process that died (its pid written, no lock held) does not block a new run."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text("999999\n")
    from typer.testing import CliRunner

    from sim.cli import app

    result = CliRunner().invoke(app, ["run", str(SMALL), "-q", "-o", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replications"] == 1 and not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("kind", ["file", "under a file", "unwritable"])
def test_unusable_output_is_refused_before_anything_runs(tmp_path, kind):
    """``-o`` that is a file, lies under a file or cannot be created: one line, exit 2, nothing written."""
    from test_bad_input import assert_one_line_error, chaossim

    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    target = {"file": blocker, "under a file": blocker / "out", "unwritable": Path("/proc/chaossim-out")}[kind]
    for command in ("run", "sweep"):
        assert_one_line_error(chaossim(command, str(SMALL), "-q", "-o", str(target)), str(target))
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_run_over_another_run_or_sweep_is_refused(tmp_path):
    """``run -o`` on a folder holding a run (or a sweep) is refused: no stale replication is averaged in."""
    from test_bad_input import assert_one_line_error, chaossim, snapshot

    out = tmp_path / "out"
    assert chaossim("run", str(SMALL), "-q", "-o", str(out), "--replications", "2").returncode == 0
    before = snapshot(out)
    assert_one_line_error(chaossim("run", str(SMALL), "-q", "-o", str(out)), "already holds a run", "choose another -o")
    assert snapshot(out) == before
    line = assert_one_line_error(chaossim("sweep", str(SMALL), "--seeds", "1", "-q", "-o", str(out)), "already holds a run")
    assert "no sweep.json" in line and snapshot(out) == before


def test_resume_on_a_corrupt_row_or_manifest_says_what_to_do(tmp_path):
    """A row file or manifest that does not parse: one line naming the file and what to do, exit 2."""
    from test_bad_input import assert_one_line_error, chaossim

    scenario = write_scenario(tmp_path / "in")
    folder = tmp_path / "out"
    args = ["sweep", str(scenario), "--seeds", "1,2", "--executor", "serial", "-q", "-o", str(folder)]
    assert chaossim(*args).returncode == 0
    row = folder / "rows" / "part-000001.parquet"
    row.write_bytes(row.read_bytes()[:40])
    assert_one_line_error(chaossim(*args, "--resume"), str(row), "delete it and run --resume again")
    row.unlink()
    (folder / "sweep.json").write_text("{not json")
    assert_one_line_error(chaossim(*args, "--resume"), "sweep.json", "unreadable sweep manifest")
