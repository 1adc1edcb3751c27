"""What ``chaossim validate`` checks beyond the scenario model: bound metrics, and faults that do nothing.

The scenario model (:mod:`sim.scenario`) checks each field; these checks look at the scenario as a
whole, the way a reviewer would:

* **errors** - a hypothesis or halt bound names a metric the run never reports (``goodptu``). The
  metric names are those of a real summary: the scenario is run for one simulated minute (faults,
  surrogate and all) and each bound's metric is looked up in what came out, so the check follows
  the policies' metrics as they are, not a list kept by hand. Fault counts (``failures.<kind>``)
  are known whether or not one happened.
* **warnings** - a link fault on a link that carries none of the policy's training traffic
  (lockstep DP and DiLoCo all-reduce around the ring of regions in topology order; Decoupled DiLoCo
  sends fragments between each learner's region and the synchronizer's), and a synchronizer outage
  under a policy that has no synchronizer. (A fault that can never fire is one of the likely
  mistakes of :mod:`sim.lint`, which ``run`` prints too.)
"""

from __future__ import annotations

import difflib

from .cost import estimate
from .executors import summary_row
from .scenario import ChipFailure, LinkDegradation, LinkPartition, Policy, Scenario, SyncerOutage
from .summary import metric_value
from .topology import build_topology, link_name

PROBE_S = 60.0  # simulated seconds of the run that discovers the metric names
PROBE_WORK = 1e3  # at most this much estimated work (sim.cost): validate must answer at once at any scale


def bound_problems(scenario: Scenario, scenario_dir=None) -> list[tuple[str, int, str]]:
    """(section, index, what is wrong) for each hypothesis or halt bound whose metric the run does not
    report; an unknown name close to a known one says which (``goodptu``: did you mean ``goodput``)."""
    from .runner import run_replication

    bounds = [("hypotheses", k, b) for k, b in enumerate(scenario.hypotheses)]
    bounds += [("halt", k, b) for k, b in enumerate(scenario.halt)]
    if not bounds:
        return []
    probe = scenario.model_copy(update={"duration": min(scenario.duration, PROBE_S), "replications": 1,
                                        "hypotheses": [], "halt": []})
    # a scenario passed with --allow-large can hold a failure per microsecond, a round per nanosecond
    # or terabytes of per-chip lifetimes; the names come out of any length of run and any lifetime
    # law, so the probe draws memoryless lifetimes and is shortened to stay small (the surrogate's
    # terms do not grow with the duration)
    probe = probe.model_copy(update={"faults": [
        f.model_copy(update={"lifetime": "exponential"}) if isinstance(f, ChipFailure) and f.renews_each_chip else f
        for f in probe.faults]})
    work = sum(t.work for t in estimate(probe).terms if not t.what.startswith("surrogate"))
    if work > PROBE_WORK:
        probe = probe.model_copy(update={"duration": probe.duration * PROBE_WORK / work})
    summary = run_replication(probe, 0, None, scenario_dir).summary
    problems = []
    for section, k, bound in bounds:
        if bound.metric.startswith(("failures.", "failures_by_fault.")):
            continue  # a fault kind that did not happen in the probe is a count of 0, not a typo
        try:
            metric_value(summary, bound.metric)
        except KeyError as err:
            message = err.args[0]
            numbers = [k for k, v in summary_row(summary).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            close = difflib.get_close_matches(bound.metric, numbers, n=1)
            if close:
                message = message.replace(f"unknown metric {bound.metric!r}", f"unknown metric {bound.metric!r}, did you mean {close[0]!r}?", 1)
            problems.append((section, k, message))
    return problems


def training_links(scenario: Scenario) -> set[str] | None:
    """The WAN links the policy's gradient or fragment traffic crosses (None: not known statically)."""
    topology = build_topology(scenario)
    regions = [r for r in topology.regions if any(i.region == r for i in topology.islands)]
    if scenario.training.policy is Policy.DECOUPLED_DILOCO:
        return {link_name(r, topology.syncer_region) for r in regions if r != topology.syncer_region}
    m = len(regions)
    ring = {link_name(regions[k], regions[(k + 1) % m]) for k in range(m)} if m > 1 else set()
    return ring if m != 2 else {link_name(*regions)}


def warnings(scenario: Scenario, file: str) -> list[str]:
    """One line per fault that cannot touch the training."""
    found = []
    used = training_links(scenario)
    policy = scenario.training.policy.value
    for k, fault in enumerate(scenario.faults):
        where = f"{file}: faults[{k}] ({fault.name})"
        if isinstance(fault, (LinkDegradation, LinkPartition)) and used is not None:
            links = fault.target.links or sorted(build_topology(scenario).links)
            idle = [link for link in links if link_name(*link.split("~")) not in used]
            if idle and len(idle) == len(links):
                found.append(
                    f"{where}: link {', '.join(idle)} carries none of {policy}'s gradient or fragment traffic "
                    f"(it uses {', '.join(sorted(used)) or 'no WAN link'}); only a rejoining learner's state pull could cross it"
                )
        if isinstance(fault, SyncerOutage) and scenario.training.policy is not Policy.DECOUPLED_DILOCO:
            found.append(f"{where}: {policy} has no synchronizer, so a syncer_outage changes nothing")
    return found
