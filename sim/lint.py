"""Warnings for valid scenarios that are probably not what their author meant.

Each check finds a setting that validation accepts but that cannot do what it seems to say: a fault
scheduled after the run ends, a checkpoint write longer than the run, a link from a region to
itself or given twice, a link under 1 Mbit/s or a run under a minute (a number written without its
unit), a bound whose min is above its max, a ``fixed`` selector asking for more targets than exist
(or half a target), spares or a quorum that the chosen policy ignores, a fixed
grace above its cap, a schedule that ends before it starts, trace rows past the end. They are
printed (``warning: ...``, one line each, naming the file and YAML path) by ``chaossim run`` and
``chaossim validate``, and never change the exit code.
"""

from __future__ import annotations

from .cost import injections_within, island_list, matching_islands
from .fault_spec import SelectMode
from .scenario import (
    LinkDegradation,
    LinkPartition,
    OnFailure,
    Policy,
    RegionOutage,
    Scenario,
    SyncerOutage,
    TraceReplay,
    Training,
)
from .units import format_duration


def likely_mistakes(scenario: Scenario) -> list[tuple[tuple, str]]:
    """(YAML location, message) of every likely mistake, in scenario order."""
    found: list[tuple[tuple, str]] = []
    found += _links(scenario)
    found += _training(scenario)
    found += _faults(scenario)
    for section in ("hypotheses", "halt"):
        for k, bound in enumerate(getattr(scenario, section)):
            if bound.min is not None and bound.max is not None and bound.min > bound.max:
                found.append(((section, k), f"min {bound.min} is above max {bound.max}: the bound can never pass"))
    return found


SLOW_LINK_BPS = 1e6
"""A link slower than 1 Mbit/s is most likely a bandwidth written without its unit (``5`` for ``5Gbps``)."""
SHORT_RUN_S = 60.0
"""A run shorter than a minute is most likely a duration written without its unit (``6`` for ``6h``)."""


def _slow(where: tuple, bandwidth_bps: float) -> list[tuple[tuple, str]]:
    if bandwidth_bps >= SLOW_LINK_BPS:
        return []
    return [(where, (f"a link of {bandwidth_bps:g} bit/s: a bare number is bits per second; write the unit "
                     f"(e.g. {bandwidth_bps:g}Gbps) if that is not what you meant"))]


def _links(scenario: Scenario) -> list[tuple[tuple, str]]:
    topology = scenario.topology
    found = [*_slow(("topology", "default_link", "bandwidth"), topology.default_link.bandwidth),
             *_slow(("topology", "intra_region", "bandwidth"), topology.intra_region.bandwidth)]
    seen = {}
    for k, link in enumerate(scenario.topology.links):
        a, b = link.between
        if a == b:
            found.append((("topology", "links", k, "between"), f"a link between {a!r} and itself (traffic inside a region uses intra_region)"))
        found += _slow(("topology", "links", k, "bandwidth"), link.bandwidth)
        pair = tuple(sorted(link.between))
        if pair in seen:
            found.append((("topology", "links", k), f"the link {pair[0]}~{pair[1]} is given twice (also links[{seen[pair]}]); the last one wins"))
        seen.setdefault(pair, k)
    return found


def _training(scenario: Scenario) -> list[tuple[tuple, str]]:
    training, duration = scenario.training, scenario.duration
    found = []
    if duration < SHORT_RUN_S:
        found.append((("duration",), (f"the run lasts {duration:g} s: a bare number is seconds; write the "
                                      f"unit (e.g. {duration:g}h) if that is not what you meant")))
    if training.checkpoint.write_time > duration:
        found.append((("training", "checkpoint", "write_time"), "a checkpoint write takes longer than the whole run"))
    if training.recovery.reload > duration:
        found.append((("training", "recovery", "reload"), "a reload takes longer than the whole run"))
    uses_spares = training.on_failure is OnFailure.SPARES and training.policy is not Policy.ELASTIC_DP
    for r, region in enumerate(scenario.topology.regions):
        for k, island in enumerate(region.islands):
            if island.spares and not uses_spares:
                found.append((("topology", "regions", r, "islands", k, "spares"),
                              f"spares are ignored under policy {training.policy.value} with on_failure {training.on_failure.value}"))
    # the default quorum (1) is written out in every resolved scenario: only a chosen one is a mistake
    if training.quorum != Training.model_fields["quorum"].default and training.policy is not Policy.DECOUPLED_DILOCO:
        found.append((("training", "quorum"), f"quorum applies to decoupled_diloco's synchronizer; policy {training.policy.value} has none"))
    if training.grace.fixed > training.grace.max:
        found.append((("training", "grace", "fixed"), f"a fixed grace of {training.grace.fixed:g} s is above grace.max {training.grace.max:g} s, which caps it"))
    return found


def _pool(fault, scenario: Scenario) -> int:
    regions = scenario.topology.regions
    if isinstance(fault, (LinkDegradation, LinkPartition)):
        return len(fault.target.links) if fault.target.links is not None else len(regions) * (len(regions) - 1) // 2
    if isinstance(fault, RegionOutage):
        return len(fault.target.regions) if fault.target.regions is not None else len(regions)
    if isinstance(fault, SyncerOutage):
        return 1
    return len(matching_islands(fault, island_list(scenario)))


def _faults(scenario: Scenario) -> list[tuple[tuple, str]]:
    found, duration = [], scenario.duration
    for k, fault in enumerate(scenario.faults):
        if isinstance(fault, TraceReplay):
            late = _trace_rows_after(fault, scenario)
            if late:
                found.append((("faults", k, "file"), f"{late} trace row(s) at or after the end of the run never fire"))
            continue
        sched = fault.arrivals()
        if sched is not None and sched.until < sched.start:
            found.append((("faults", k, "schedule"), "the schedule ends (until) before it starts (start)"))
        if fault.mtbf is None and injections_within(fault, duration) == 0:
            found.append((("faults", k), f"fault {fault.name!r} has no injection within the run ({format_duration(scenario.duration)}): it never fires"))
        target = fault.target
        if target.mode is SelectMode.FIXED and target.value is not None:
            pool = _pool(fault, scenario)
            if target.value != int(target.value):
                found.append((("faults", k, "target", "value"), f"fixed selects whole targets: {target.value:g} is taken as {int(target.value)}"))
            elif target.value > pool:
                found.append((("faults", k, "target", "value"), f"fixed {target.value:g} asks for more targets than the {pool} that match"))
    return found


def _trace_rows_after(fault: TraceReplay, scenario: Scenario) -> int:
    from .faults import read_trace
    from .topology import build_topology

    rows = read_trace(fault, build_topology(scenario), None, f"trace {fault.name}")
    return sum(1 for time_s, *_ in rows if time_s >= scenario.duration)
