"""Build the model from a scenario, run replications, write results.

This is the only module that knows every part: it builds the topology, the named random streams,
the policy's learner groups, the fault processes and the link state; wires the faults' effects to the
groups; runs the SimPy clock to the scenario's horizon, counting events; and turns the ledgers into a
summary. Each replication ``r`` of a scenario with seed ``s`` runs with seed ``s + r``, so a
replication can be re-run alone, on any machine, with the same result.

A results folder holds ``scenario.yaml`` (the resolved scenario, every default filled in), and per
replication ``rep-<r>/``: ``summary.json``, ``timeline.parquet``, ``events.parquet`` and
``series.parquet`` (written as the run goes), ``learners.parquet`` (one row per learner group), plus
``summary.json`` at the top with every replication.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import simpy

from .context import LinkState, RunContext
from .faults import FaultProcesses
from .learner import Group
from .metrics import Phase
from .outputs import write_text_atomic
from .policies import POLICIES
from .recorder import Recorder
from .restart_loop import RestartLoop
from .restart_loop import eligible as restart_loop_eligible
from .rng import Streams
from .scenario import BlastRadius, Scenario
from .summary import check_bounds, summarize
from .topology import Island, build_topology


class GroupEffects:
    """Delivers fault effects to the groups (and, through hooks, to network and synchronizer)."""

    def __init__(self, ctx: RunContext, groups: list[Group]):
        self.ctx = ctx
        self.owner: dict[int, Group] = {i.index: g for g in groups for i in g.islands}
        self.syncer_hooks: list[Callable[[bool, str], None]] = []

    def chip_failure(self, island: Island, chip: int, radius: BlastRadius, repair_s: float, fault: str) -> None:
        self.owner[island.index].fail_chip(island, chip, radius, repair_s, "chip_failure", fault)

    def outage(self, islands: list[Island], started: bool, kind: str, fault: str) -> None:
        for island in islands:
            island.outages += 1 if started else -1
        # one outage is one interruption per group, however many of its islands it takes
        by_group: dict[Group, list[Island]] = {}
        for island in islands:
            by_group.setdefault(self.owner[island.index], []).append(island)
        for group, hit in by_group.items():
            group.outage_changed(hit, started, kind, fault)

    def slowdown(self, islands: list[Island], factor: float, started: bool, fault: str) -> None:
        for island in islands:
            island.slowdown = island.slowdown * factor if started else island.slowdown / factor
            self.owner[island.index].wake(f"slowdown on {island.name}")

    def link(self, links: list[str], bandwidth_bps: float | None, latency_s: float | None, started: bool, fault: str) -> None:
        for link in links:
            self.ctx.links.apply(link, fault, bandwidth_bps, latency_s, started)

    def syncer(self, started: bool, fault: str) -> None:
        self.ctx.recorder.event(self.ctx.env.now, "syncer_outage_start" if started else "syncer_outage_end", fault)
        for hook in self.syncer_hooks:
            hook(started, fault)


class UptimeClock:
    """Wall time in which at least one group is running (the global model advances)."""

    def __init__(self, env: simpy.Environment, groups: list[Group]):
        self.env, self.running, self.up_s, self._since = env, 0, 0.0, env.now
        for group in groups:
            group.listeners.append(self._changed)
            self.running += group.phase is Phase.RUNNING

    def _changed(self, _group: Group, old: Phase, new: Phase) -> None:
        before = self.running
        self.running += (new is Phase.RUNNING) - (old is Phase.RUNNING)
        if before == 0 and self.running > 0:
            self._since = self.env.now
        elif before > 0 and self.running == 0:
            self.up_s += self.env.now - self._since

    def total_s(self) -> float:
        return self.up_s + (self.env.now - self._since if self.running > 0 else 0.0)


def write_learners(summary: dict, path: Path) -> None:
    """Per-learner statistics as a tidy table: one row per learner group, one column per scalar
    (``name, islands, chips, downtime_s, steps, tokens, interruptions, absorbed`` and any a policy adds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: (", ".join(v) if isinstance(v, list) else v) for k, v in learner.items()
             if isinstance(v, (str, int, float, list)) and not isinstance(v, bool)}
            for learner in summary["learners"]]
    pq.write_table(pa.Table.from_pylist(rows), path)


class KeptUptime:
    """A lockstep job's uptime: running time whose work was kept (committed or still pending)."""

    def __init__(self, job: Group):
        self.job = job

    def total_s(self) -> float:
        return self.job.up_s()


def _play_restart_loop(loop: RestartLoop, env: simpy.Environment, horizon: float, next_check: float,
                       check_every: float, halt_check: Callable[[], dict | None], checked: bool) -> dict | None:
    """Run the restart loop to the horizon, the work's end or a tripped halt bound (returned), stopping
    at the event path's checks when anything checks the run; the clock follows."""
    while True:
        limit = min(next_check, horizon) if checked else horizon
        if loop.advance(limit):
            if loop.done_s > env.now:
                env.run(until=loop.done_s)
            return None
        if limit >= horizon:
            return None
        env.run(until=limit)
        next_check += check_every
        halted = halt_check()
        if halted is not None:
            return halted


@dataclass
class Replication:
    summary: dict
    tables: dict


def run_replication(
    scenario: Scenario,
    replication: int = 0,
    out_dir: Path | None = None,
    scenario_dir: Path | None = None,
    progress: Callable[[float], None] | None = None,
    *,
    event_per_checkpoint: bool = False,
    restart_loop: bool = True,
) -> Replication:
    """Run one replication to the horizon (or until a halt bound trips, or a work-defined job's work
    is done) and summarise it. ``event_per_checkpoint`` plays failure-free stretches of lockstep
    training one SimPy event per phase end (the reference the closed-form stretches are tested against);
    without ``restart_loop`` a restarting job's failures are SimPy events even where the compiled loop
    of :mod:`sim.restart_loop` could play them (the reference that loop is tested against)."""
    wall_start = time.perf_counter()
    seed = scenario.seed + replication
    env = simpy.Environment()
    topology = build_topology(scenario)
    recorder = Recorder(out_dir, merge_log=scenario.surrogate.model != "off" and scenario.surrogate.log_rounds)
    ctx = RunContext(env, scenario, topology, Streams(seed), recorder, LinkState(topology), scenario_dir)
    ctx.extras["event_per_checkpoint"] = event_per_checkpoint
    policy = POLICIES[scenario.training.policy](ctx)
    groups = policy.build()
    effects = GroupEffects(ctx, groups)
    if hasattr(policy, "attach"):
        policy.attach(effects)
    faults = FaultProcesses(env, topology, effects, ctx.streams, recorder, scenario.duration, scenario_dir)
    loop = None
    if restart_loop and restart_loop_eligible(scenario, groups):
        loop = RestartLoop(groups[0], faults, scenario.faults)
        loop.start()
    else:
        faults.start(scenario.faults)
    kept = len(groups) == 1 and groups[0].uptime_counts_kept
    uptime = KeptUptime(groups[0]) if kept else UptimeClock(env, groups)
    work_defined = [g for g in groups if g.target_steps < math.inf]

    horizon = scenario.duration
    halted = None
    events = 0
    check_every = horizon / 100.0
    next_check = check_every

    def halt_check() -> dict | None:
        """The first halt bound the run so far trips (checked at 1 % steps of simulated time)."""
        if progress:
            progress(env.now / horizon)
        if not scenario.halt:
            return None
        partial = summarize(ctx, policy, groups, faults, uptime, events, time.perf_counter() - wall_start, final=False)
        return next((v for v in check_bounds(partial, scenario.halt) if not v["passed"]), None)

    if loop is not None:
        halted = _play_restart_loop(loop, env, horizon, next_check, check_every, halt_check,
                                    checked=bool(scenario.halt) or progress is not None)
    else:
        while True:
            when = env.peek()
            # checks come before the horizon test: with nothing scheduled before the horizon (a group
            # blocked for good) downtime still grows, and a halt bound on it must still trip
            if when >= next_check and next_check < horizon:
                # progress and halt bounds are checked at 1 % steps of simulated time, not per event
                env.run(until=next_check)
                next_check += check_every
                halted = halt_check()
                if halted is not None:
                    break
                continue
            if when >= horizon:
                break
            env.step()
            events += 1
            if work_defined and all(g.done for g in work_defined):
                break
    work_done = bool(work_defined) and all(g.done for g in work_defined)
    if halted is None and not work_done:
        env.run(until=horizon)
    if hasattr(policy, "finish"):
        policy.finish()
    for group in groups:
        group.finish()
    summary = summarize(ctx, policy, groups, faults, uptime, events, time.perf_counter() - wall_start, final=True)
    summary["replication"] = replication
    summary["seed"] = seed
    summary["halted"] = None if halted is None else {**halted, "time_s": env.now}
    if work_defined:
        # time-to-train: when the last of the work was committed; None if the horizon came first
        summary["time_to_train_s"] = env.now if work_done else None
    summary["hypotheses"] = check_bounds(summary, scenario.hypotheses, halted=halted is not None)
    summary["hypotheses_passed"] = all(v["passed"] for v in summary["hypotheses"])
    tables = recorder.close()
    if out_dir is not None:
        write_learners(summary, out_dir / "learners.parquet")
        write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    if progress:
        progress(1.0)
    return Replication(summary, tables)
