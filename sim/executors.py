"""Where and how sweep replications run: the job, the worker function, and the executors.

A **job** (:class:`Job`) is everything one replication needs, as plain data: its index, the resolved
scenario as a JSON dict, the seed and the output folder. :func:`run_job` is the worker side: it
re-validates the scenario (once per point in a worker process), runs it with that seed (as
replication 0) into the folder, and returns one flat row of status and metrics. It catches the
simulation's exceptions and returns them as an ``error`` row, so one crashing replication never
stops a sweep. Because a job carries all its inputs, the same job gives the same row on whatever
worker runs it.

An **executor** takes a picklable function and a list of jobs, calls the function on every job
somewhere, and yields ``(job, outcome)`` pairs in the order they *finish*, so the caller can store
each result the moment it exists. ``outcome`` is the function's return value, or the exception the
*infrastructure* raised (a worker process that died, a cluster that went away): that means "we do not
know what happened to this job", never "the replication crashed".

* :class:`LocalExecutor` - a ``concurrent.futures.ProcessPoolExecutor`` over every core. Its
  multiprocessing context is created and passed explicitly, and the global start method is never
  touched. When the pool starts in a process that runs no other thread, workers are forked (they
  start in milliseconds, with the simulator already imported, and there is no thread whose locks a
  fork could copy half-held); otherwise ``forkserver`` (a server that imports the simulator once and
  forks each worker from it) where the platform has it, else ``spawn``. Jobs carry all their inputs
  and the simulator keeps no global state, so the start method never changes a row. Workers ignore
  Ctrl-C (the parent decides: on an interrupt it terminates them and drops the queued jobs), and each
  watches the parent's pid: when the parent is gone (killed, even with SIGKILL) a worker exits within
  :data:`PARENT_POLL_S`, so no worker outlives its sweep or writes after it.
* :class:`DaskExecutor` - a ``distributed.Client`` on an existing cluster (``address``), or on a
  ``LocalCluster`` of single-threaded worker processes that it starts and stops itself.
* :class:`SerialExecutor` - a plain loop in this process: for debugging (breakpoints work), profiling,
  and as the baseline of ``bench/bench_sweep.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .loading import scenario_yaml
from .scenario import Scenario

# --------------------------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class Job:
    """One replication of a sweep, as plain picklable data."""

    index: int
    point: int
    seed: int
    scenario: dict  # resolved and JSON-safe: Scenario.model_validate(scenario) gives the point back
    out_dir: str
    scenario_dir: str | None  # where relative paths in the scenario (trace files) start


def summary_row(summary: dict) -> dict:
    """Every scalar of a run summary, nested dicts flattened with dotted names; lists left out."""
    row: dict[str, Any] = {}

    def walk(prefix: str, node: dict) -> None:
        for key, value in node.items():
            if prefix == "" and key in ("seed", "replication", "halted"):
                continue  # the seed is a row key already; replication is always 0 in a sweep
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif isinstance(value, (bool, int, float, str)):
                row[f"{prefix}{key}"] = value

    walk("", summary)
    halted = summary.get("halted")
    row["halted"] = halted.get("metric") if isinstance(halted, dict) else None
    return row


class _Points:
    """Each point's scenario, validated once, and its ``scenario.yaml``, rendered once per folder of run
    folders: a worker keeps the last few points it ran, so a point's next batch costs no validation
    and no YAML rendering either (a rendering costs tens of ms, as much as a small replication)."""

    KEPT = 8  # points kept; a sweep sends consecutive replications of one point to a worker in turn

    def __init__(self) -> None:
        self._cache: dict[tuple[str, Path], tuple[Scenario, str]] = {}

    def get(self, job: Job) -> tuple[Scenario, str]:
        """(the point with the job's seed, the text of its run folder's ``scenario.yaml``)."""
        out = Path(job.out_dir)
        # keyed on the point's content (a worker may serve several sweeps) and on the parent of the run
        # folder: trace paths in the YAML are relative to the run folder, the same from every sibling
        key = (json.dumps(job.scenario, sort_keys=True), out.parent)
        if key not in self._cache:
            point = Scenario.model_validate({**job.scenario, "seed": job.seed, "replications": 1})
            if len(self._cache) >= self.KEPT:
                del self._cache[next(iter(self._cache))]  # the oldest
            self._cache[key] = (point, scenario_yaml(point, out))
        point, text = self._cache[key]
        # points differ from their replications only in the seed: one top-level line of the YAML
        text, found = _SEED_LINE.subn(f"seed: {job.seed}", text)
        if found != 1:
            raise RuntimeError("the resolved scenario YAML must have exactly one top-level seed line")
        return point.model_copy(update={"seed": job.seed}), text


_POINTS = _Points()  # this process's points (a cache of pure results: no row depends on what it holds)
_SEED_LINE = re.compile(r"^seed: .*$", re.MULTILINE)


def run_job(job: Job) -> dict:
    """Run one replication (in a worker); return its status and metrics. Never raises for a bad run."""
    from .runner import run_replication

    start = time.perf_counter()
    out = Path(job.out_dir)
    try:
        scenario, text = _POINTS.get(job)
        if out.exists():  # a re-run (resume) starts from an empty folder, not on top of a partial one
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "scenario.yaml").write_text(text)  # trace paths relative to it
        rep = run_replication(scenario, 0, out, Path(job.scenario_dir) if job.scenario_dir else None)
        result = {"status": "ok", "error": None, **summary_row(rep.summary)}
    except Exception as problem:  # noqa: BLE001 - any crash of a replication is a result, not a stop
        result = {"status": "error", "error": f"{type(problem).__name__}: {problem}"}
        with contextlib.suppress(OSError):  # the row carries the error even if the folder is unwritable
            out.mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(traceback.format_exc())
    result["row_wall_s"] = time.perf_counter() - start
    return result


def run_batch(jobs: Sequence[Job]) -> list[dict]:
    """Run several replications as one task: a task's own cost (shipping it, starting it, returning
    its result) is paid once per batch, so sweeps of small replications still gain from workers."""
    return [run_job(job) for job in jobs]


def batches(jobs: Sequence[Any], workers: int, most: int = 32) -> list[list[Any]]:
    """Jobs cut into consecutive batches that shrink as the jobs run out (guided scheduling): each
    takes a quarter of a worker's share of the jobs left, at most ``most``. Early batches are big (a
    task's own cost is paid rarely), the last ones single jobs (no worker idles long behind another's
    last batch)."""
    out: list[list[Any]] = []
    k = 0
    while k < len(jobs):
        size = max(1, min(most, math.ceil((len(jobs) - k) / (4 * max(workers, 1)))))
        out.append(list(jobs[k : k + size]))
        k += size
    return out


# --------------------------------------------------------------------------------------------- executors


class ExecutorKind(str, Enum):
    LOCAL = "local"
    DASK = "dask"
    SERIAL = "serial"


class ExecutorError(Exception):
    """The executor could not start (e.g. no Dask scheduler at the address); ``str()`` is one line."""


def default_workers() -> int:
    return os.cpu_count() or 1


class SerialExecutor:
    """Run every job in this process, one after another."""

    name = "serial"

    def imap_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        for job in jobs:
            yield job, fn(job)


PARENT_POLL_S = 0.2
"""How often a local worker checks that the process that started the sweep is still there."""


def _parent_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # a parent that was killed but not yet reaped is a zombie: gone all the same
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


def _watch_parent(pid: int) -> None:
    while not _parent_gone(pid):
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # at once: no cleanup that could write into the sweep folder


def _init_worker(parent_pid: int) -> None:
    """Runs first in every local worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the parent's SIGTERM handler (which turns it into an interrupt): put
    # back the default, so that terminating a worker ends it at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()


class LocalExecutor:
    """A pool of ``workers`` processes on this machine (default: one per core)."""

    name = "local"

    def __init__(self, workers: int | None = None, start_method: str | None = None):
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {self.workers}")
        self.start_method = start_method

    def _context(self):
        """The start method for a pool starting now (see the module docstring)."""
        methods = multiprocessing.get_all_start_methods()
        if self.start_method is not None:
            method = self.start_method
        elif "fork" in methods and threading.active_count() == 1:
            method = "fork"
        else:
            method = "forkserver" if "forkserver" in methods else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # the fork server imports the simulator once and forks every worker from it, so a worker
            # does not import numpy, scipy, pyarrow and pydantic again
            context.set_forkserver_preload(["__main__", "sim.runner"])
        return context

    def imap_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        if not jobs:
            return
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(jobs)), mp_context=self._context(),
            initializer=_init_worker, initargs=(os.getpid(),),
        )
        finished = False
        try:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as problem:  # noqa: BLE001 - BrokenProcessPool: a worker died (killed, out of memory)
                    outcome = problem
                yield futures[future], outcome
            finished = True
        finally:
            if not finished:
                # Ctrl-C, SIGTERM or a caller that stopped early: end the jobs in flight now (their
                # rows are not written, so --resume runs them again) and drop the queued ones
                _terminate_workers(pool)
            pool.shutdown(wait=finished, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((pool._processes or {}).values())  # the pool's own worker processes
    for process in processes:
        with contextlib.suppress(OSError, AttributeError):
            process.terminate()
    for process in processes:
        with contextlib.suppress(OSError, AttributeError, AssertionError):
            process.join(timeout=2.0)


class DaskExecutor:
    """Jobs as Dask tasks: on the cluster at ``address``, or on a LocalCluster of ``workers`` processes."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {self.workers}")

    def imap_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        if not jobs:
            return
        import dask
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed

        cluster = None
        # the local cluster's scratch space (locks, spilled data) lives and dies with the sweep: nothing
        # is left in the system temporary folder
        scratch = tempfile.TemporaryDirectory(prefix="chaossim-dask-")
        settings = dask.config.set({"temporary-directory": scratch.name})
        try:
            if self.address is None:
                # one thread per worker process: a replication is single-threaded Python, so more
                # threads would only contend for the GIL
                # silence_logs=CRITICAL: a stopped sweep forgets its pending tasks, which the scheduler
                # and workers would log as warnings and errors ("Couldn't gather keys"); a replication
                # that really fails is recorded in its row with its error
                with warnings.catch_warnings():
                    # the scheduler's HTTP endpoint moves to a free port when another cluster holds 8787
                    # (two sweeps at once): nothing for the user to act on
                    warnings.filterwarnings("ignore", message="Port .* is already in use")
                    cluster = LocalCluster(
                        n_workers=min(self.workers, len(jobs)), threads_per_worker=1, processes=True,
                        dashboard_address=None, local_directory=scratch.name, silence_logs=logging.CRITICAL,
                    )
                client = Client(cluster)
            else:
                client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError) as problem:
            if cluster is not None:
                cluster.close()
            settings.__exit__(None, None, None)
            scratch.cleanup()
            raise ExecutorError(f"cannot reach the Dask scheduler at {self.address}: {problem}") from None
        try:
            # pure=False: every job is its own task even if two jobs were equal, and a cluster shared by
            # several sweeps never hands one sweep's cached result to another
            futures = client.map(fn, list(jobs), pure=False)
            job_of = {future.key: job for future, job in zip(futures, jobs)}
            for future in dask_completed(futures):
                try:
                    outcome = future.result()
                except Exception as problem:  # noqa: BLE001 - KilledWorker, lost connection
                    outcome = problem
                future.release()
                yield job_of[future.key], outcome
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
            settings.__exit__(None, None, None)
            scratch.cleanup()


def make_executor(kind: ExecutorKind | str, workers: int | None = None, address: str | None = None):
    """The executor for the CLI's ``--executor``, ``--workers`` and ``--address``."""
    try:
        kind = ExecutorKind(kind)
    except ValueError:
        raise ExecutorError(f"--executor {kind!r}: expected one of {', '.join(k.value for k in ExecutorKind)}") from None
    if address is not None and kind is not ExecutorKind.DASK:
        raise ExecutorError("--address is the Dask scheduler's address: use it with --executor dask")
    if kind is ExecutorKind.DASK:
        return DaskExecutor(address, workers)
    if kind is ExecutorKind.SERIAL:
        return SerialExecutor()
    return LocalExecutor(workers)
