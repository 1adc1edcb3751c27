"""Where sweep replications run: a process pool on this machine, a Dask cluster, or this process.

An executor has one job: given a picklable function and a list of jobs, call the function on every job
somewhere and yield ``(job, outcome)`` pairs in the order they *finish*, so the caller can store each
result the moment it exists. ``outcome`` is the function's return value, or the exception the
*infrastructure* raised (a worker process that died, a cluster that went away). The sweep's worker
function catches the simulation's own exceptions itself and returns them as rows, so an exception
here means "we do not know what happened to this job", never "the replication crashed".

* :class:`LocalExecutor` - a ``concurrent.futures.ProcessPoolExecutor`` over every core. Its
  multiprocessing context is created and passed explicitly (``forkserver`` where the platform has it,
  else ``spawn``): workers start clean, import the installed package and share no state with the
  parent, and the global start method is never touched.
* :class:`DaskExecutor` - a ``distributed.Client`` on an existing cluster (``address``), or on a
  ``LocalCluster`` of single-threaded worker processes that it starts and stops itself.
* :class:`SerialExecutor` - a plain loop in this process: for debugging (breakpoints work), profiling,
  and as the baseline of ``bench/bench_sweep.py``.

Results never depend on the executor: a job carries everything its run needs (the resolved scenario
and the seed), so the same job gives the same row wherever it runs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from enum import Enum
from typing import Any


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


class LocalExecutor:
    """A pool of ``workers`` processes on this machine (default: one per core)."""

    name = "local"

    def __init__(self, workers: int | None = None, start_method: str | None = None):
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ExecutorError(f"--workers must be >= 1, got {self.workers}")
        methods = multiprocessing.get_all_start_methods()
        # forkserver starts workers faster than spawn and, unlike fork, never copies the parent's
        # threads or locks; either way the context is local to this pool.
        self.context = multiprocessing.get_context(start_method or ("forkserver" if "forkserver" in methods else "spawn"))

    def imap_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        if not jobs:
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=self.context)
        finished = False
        try:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as problem:  # BrokenProcessPool: a worker died (killed, out of memory)
                    outcome = problem
                yield futures[future], outcome
            finished = True
        finally:
            # On Ctrl-C (or when the caller stops early) drop the queued jobs instead of running them;
            # the jobs in flight end with their workers, which received the same SIGINT.
            pool.shutdown(wait=finished, cancel_futures=True)


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
        from distributed import Client, LocalCluster, as_completed as dask_completed

        cluster = None
        try:
            if self.address is None:
                # one thread per worker process: a replication is single-threaded Python, so more
                # threads would only contend for the GIL
                cluster = LocalCluster(
                    n_workers=min(self.workers, len(jobs)), threads_per_worker=1, processes=True, dashboard_address=None
                )
                client = Client(cluster)
            else:
                client = Client(self.address, timeout="10s")
        except (OSError, TimeoutError) as problem:
            if cluster is not None:
                cluster.close()
            raise ExecutorError(f"cannot reach the Dask scheduler at {self.address}: {problem}") from None
        try:
            # pure=False: every job is its own task even if two jobs were equal, and a cluster shared by
            # several sweeps never hands one sweep's cached result to another
            futures = client.map(fn, list(jobs), pure=False)
            job_of = {future.key: job for future, job in zip(futures, jobs)}
            for future in dask_completed(futures):
                try:
                    outcome = future.result()
                except Exception as problem:  # KilledWorker, lost connection
                    outcome = problem
                future.release()
                yield job_of[future.key], outcome
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def make_executor(kind: ExecutorKind | str, workers: int | None = None, address: str | None = None):
    """The executor for the CLI's ``--executor``, ``--workers`` and ``--address``."""
    kind = ExecutorKind(kind)
    if address is not None and kind is not ExecutorKind.DASK:
        raise ExecutorError("--address is the Dask scheduler's address: use it with --executor dask")
    if kind is ExecutorKind.DASK:
        return DaskExecutor(address, workers)
    if kind is ExecutorKind.SERIAL:
        return SerialExecutor()
    return LocalExecutor(workers)
