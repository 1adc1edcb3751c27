"""Every fault of every shipped scenario does something: removing it changes at least one outcome.

Each scenario runs cut short (long enough for each fault to fire: four hours, or two hours past its
first scheduled time, three days for a trace) with the surrogate off, once as shipped and once without
each fault in turn, on the same seed. A fault's own arrival count does not count as a change: a fault
must change what the training kept (goodput, uptime, downtime, tokens, the chip-time ledger, WAN
traffic, interruptions or the synchronizer's rounds) by more than floating-point noise.
"""

from __future__ import annotations

import pytest
from conftest import ROOT

from sim.loading import load_scenario
from sim.runner import run_replication
from sim.scenario import TraceReplay

SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))
OUTCOMES = ("goodput", "uptime", "global_downtime_s", "tokens", "steps", "interruptions", "wan_bytes",
            "quorum_unmet_s", "mean_learners_per_merge", "mean_staleness_s", "outer_rounds")
HOUR = 3600.0
NOISE = 1e-3  # a relative change below this is floating-point re-ordering, not an effect


def outcomes(summary: dict) -> dict:
    found = {k: summary[k] for k in OUTCOMES if isinstance(summary.get(k), (int, float))}
    return found | {f"chip_time.{k}": v for k, v in summary["chip_time"].items()}


def differs(a: dict, b: dict) -> bool:
    """True when some outcome moved by more than :data:`NOISE` of its size."""
    return any(abs(a[k] - b.get(k, 0.0)) > NOISE * max(abs(a[k]), abs(b.get(k, 0.0)), 1e-9) for k in a)


def horizon_s(fault, scenario) -> float:
    """Long enough for ``fault`` to act at least once, capped at the scenario's own duration."""
    need = 4 * HOUR
    if isinstance(fault, TraceReplay):
        need = 3 * 24 * HOUR
    elif (schedule := fault.arrivals()) is not None and schedule.at:
        need = schedule.at[0] + 2 * HOUR
    elif schedule is not None and schedule.every is not None:
        need = (schedule.start or schedule.every) + 2 * HOUR
    return min(scenario.duration, need)


@pytest.mark.timeout(600)  # four-regions-12b plays 2 x 26 h of every outer round: ~180 s alone
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_fault_changes_an_outcome(path):
    """Without any one of its faults, a shipped scenario's run comes out differently. Each fault is
    judged over its own horizon (a Poisson fault over four hours, a scheduled one until two hours past
    its first arrival); one that changes nothing there (a Poisson fault that happened not to fire) gets
    the scenario's whole duration before it is called idle."""
    shipped = load_scenario(path, ["surrogate=off", "compare={}", "replications=1", "hypotheses=[]", "halt=[]"])
    references: dict[float, dict] = {}  # outcomes of the shipped scenario, by horizon

    def changes_nothing(fault, cut: float) -> bool:
        base = shipped.model_copy(update={"duration": cut})
        if cut not in references:
            references[cut] = outcomes(run_replication(base, 0, None, path.parent).summary)
        without = base.model_copy(update={"faults": [f for f in base.faults if f is not fault]})
        return not differs(outcomes(run_replication(without, 0, None, path.parent).summary), references[cut])

    idle = []
    for fault in shipped.faults:
        cut = horizon_s(fault, shipped)
        if changes_nothing(fault, cut) and (cut == shipped.duration or changes_nothing(fault, shipped.duration)):
            idle.append(fault.name)
    assert idle == [], f"{path.name}: removing {idle} changes nothing, even over {shipped.duration / HOUR:g} h"
