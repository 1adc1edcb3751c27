"""Lockstep data-parallel training: every island in one job (``sync_dp`` and ``elastic_dp``).

Each step all-reduces the gradients of the whole model: inside a region over the data-centre network,
then across regions over the WAN ring (volume ``2 (M-1)/M * params * bytes_per_value`` per member),
and the step waits for it, so WAN bandwidth stretches the step. The exposed communication is booked
as ``waiting`` chip-time.

``sync_dp`` stops the whole job on any failure and restarts from the last checkpoint (or swaps in a
hot spare, with ``on_failure: spares``); ``elastic_dp`` drops the failed unit and goes on smaller.
Checkpoints come every fixed interval of running time, or at the Young or Daly interval computed from
the job's mean time between failures (:mod:`sim.checkpointing`).
"""

from __future__ import annotations

import math

import numpy as np

from ..checkpointing import daly_interval_s, young_interval_s
from ..context import RunContext
from ..faults import matching_islands, schedule_times
from ..hardware import derived_step_time_s
from ..learner import Group
from ..scenario import ChipFailure, IslandOutage, OnFailure, RegionOutage, Scenario
from ..topology import Topology


def job_mtbf_s(scenario: Scenario, topology: Topology) -> float:
    """Mean time between failures of the whole job from its chip and outage faults.

    Rates follow :mod:`sim.faults`: chip failures at (targeted chips) / mtbf, stochastic outages at
    (matching islands or regions) / mtbf, scheduled injections at their count over the run. Slowdowns
    and link faults stretch steps but stop nothing; trace files are not read here.
    """
    rate_per_s = 0.0
    for fault in scenario.faults:
        if isinstance(fault, (ChipFailure, IslandOutage, RegionOutage)) and fault.arrivals() is not None:
            injections = schedule_times(fault, scenario.duration, np.random.default_rng(0))  # count only
            rate_per_s += len(injections) / scenario.duration
        if isinstance(fault, ChipFailure) and fault.mtbf is not None:
            rate_per_s += sum(i.chips for i in matching_islands(fault.target, topology, fault.name)) / fault.mtbf
        elif isinstance(fault, RegionOutage) and fault.mtbf is not None:
            rate_per_s += len(fault.target.regions or topology.regions) / fault.mtbf
        elif isinstance(fault, IslandOutage) and fault.mtbf is not None:
            rate_per_s += len(matching_islands(fault.target, topology, fault.name)) / fault.mtbf
    return math.inf if rate_per_s == 0 else 1.0 / rate_per_s


def checkpoint_interval_s(scenario: Scenario, topology: Topology) -> float | None:
    """Running time between checkpoints; None when no checkpoint is taken.

    None for ``young``/``daly`` when nothing can fail (infinite MTBF) or when writes are free
    (``write_time: 0``): the job then checkpoints continuously and a restart loses nothing.
    """
    rule = scenario.training.checkpoint.interval
    write_s = scenario.training.checkpoint.write_time
    if not isinstance(rule, str):
        return rule
    mtbf_s = job_mtbf_s(scenario, topology)
    if not math.isfinite(mtbf_s) or write_s == 0:
        return None
    return young_interval_s(write_s, mtbf_s) if rule == "young" else daly_interval_s(write_s, mtbf_s)


def target_steps(scenario: Scenario) -> float:
    """Steps a work-defined job (``until``) must commit; infinite when the run is time-defined."""
    until = scenario.until
    if until is None:
        return math.inf
    return until.steps if until.steps is not None else until.tokens / scenario.workload.tokens_per_step


def base_step_time_s(scenario: Scenario, flops_per_s: float) -> float:
    """Compute time of one step for a group with ``flops_per_s`` peak, every chip present."""
    workload = scenario.workload
    if workload.step_time != "auto":
        return workload.step_time
    return derived_step_time_s(workload.params, workload.tokens_per_step, flops_per_s, workload.mfu)


class SyncDP:
    mode = None  # taken from training.on_failure (restart or spares)

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.gradient_bytes = ctx.scenario.workload.params * ctx.scenario.workload.bytes_per_value
        self._allreduce: tuple[tuple[int, ...], float] | None = None  # (islands in the job, seconds)

    def on_failure(self) -> OnFailure:
        return self.mode or self.ctx.scenario.training.on_failure

    def build(self) -> list[Group]:
        ctx, topology = self.ctx, self.ctx.topology
        flops = sum(i.peak_flops for i in topology.islands)
        job = Group(
            ctx.env, "job", topology.islands, ctx.scenario.training, self.on_failure(), self.step_times,
            ctx.recorder, checkpoint_interval_s(ctx.scenario, topology), base_step_time_s(ctx.scenario, flops),
            target_steps=target_steps(ctx.scenario), stretches=not ctx.extras.get("event_per_checkpoint", False),
        )
        job.uptime_counts_kept = True  # the global model advances only by work that is kept
        job.record_step_rate = True
        ctx.links.listeners.append(self._links_changed)
        if ctx.scenario.training.checkpoint.write_time == 0 and job.checkpoint_interval_s is None:
            job.on_restart = lambda group: group.ledger.commit(ctx.env.now)  # continuous checkpoints
        self.job = job
        self.nominal_step = self.step_times(job)  # every chip present, nominal links
        self.surrogate = None
        if ctx.scenario.surrogate.model != "off":
            from .outer import SurrogateDriver

            # one data-parallel model whose gradient averages every island's shard; it trains only
            # when a checkpoint commits work, so work rolled back never touched it
            self.surrogate = SurrogateDriver(ctx, len(topology.islands), 1)
            job.commit_listeners.append(self._train_surrogate)
        return [job]

    def _train_surrogate(self, group: Group, steps: float, force: bool = False) -> None:
        with self.surrogate.timed() as model:
            model.train_data_parallel(self.surrogate.steps_for(0, steps))
        tokens = group.ledger.committed_steps * self.ctx.scenario.workload.tokens_per_step
        self.surrogate.record(self.ctx.scenario.training.policy.value, tokens, force)

    def finish(self) -> None:
        if self.surrogate is not None:
            # the run ends: work since the last checkpoint was never rolled back (Ledger.finish)
            self._train_surrogate(self.job, self.job.ledger.pending_steps, force=True)

    def metrics(self, final: bool) -> dict:
        compute_s, comm_s = self.nominal_step
        out = {}
        if self.surrogate is not None:
            out = {"final_loss": self.surrogate.model.eval_loss(), "surrogate_wall_s": self.surrogate.wall_s}
        regions = len(self.ctx.topology.regions)
        ledger = self.job.ledger
        steps_run = ledger.committed_steps + ledger.rolled_back_steps + ledger.pending_steps
        # every ring link carries 2 (M-1)/M of the gradient per step (M = regions; none with one region)
        ring_links = regions if regions > 2 else regions - 1
        per_link = 2 * (regions - 1) / regions * self.gradient_bytes if regions > 1 else 0.0
        return out | {
            "wan_bytes": steps_run * per_link * ring_links,
            "step_compute_s": compute_s,
            "step_comm_s": comm_s,
            "step_stretch": (compute_s + comm_s) / compute_s,
            "checkpoint_interval_s": self.job.checkpoint_interval_s,
        }

    def step_times(self, group: Group) -> tuple[float, float]:
        """(compute_s, exposed_comm_s): the all-reduce is not overlapped with compute."""
        return group.compute_time_s(), self.allreduce_s(group)

    def _links_changed(self, *_) -> None:
        self._allreduce = None  # the all-reduce time depends on the links
        self.job.wake("link changed")

    def allreduce_s(self, group: Group) -> float:
        """Exposed all-reduce time per step; kept until the islands in the job or the links change."""
        key = tuple(i.index for i in group.islands if group.in_job[i.index] > 0)
        if self._allreduce is None or self._allreduce[0] != key:
            self._allreduce = key, self._allreduce_now(group)
        return self._allreduce[1]

    def _allreduce_now(self, group: Group) -> float:
        links = self.ctx.links
        live = [i for i in group.islands if group.in_job[i.index] > 0]
        regions = sorted({i.region for i in live}, key=self.ctx.topology.regions.index)
        intra = 0.0
        for region in regions:
            k = sum(1 for i in live if i.region == region)
            if k > 1:
                bandwidth, latency = links.current(f"dcn:{region}")
                if bandwidth <= 0:
                    return math.inf
                intra = max(intra, 2 * (k - 1) / k * self.gradient_bytes * 8 / bandwidth + 2 * (k - 1) * latency)
        return intra + links.ring_allreduce_s(regions, self.gradient_bytes)


class ElasticDP(SyncDP):
    mode = OnFailure.ELASTIC
