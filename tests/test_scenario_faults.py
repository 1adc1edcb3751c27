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


def horizon_s(scenario) -> float:
    """Long enough for every fault to act at least once, capped at the scenario's own duration."""
    need = 4 * HOUR
    for fault in scenario.faults:
        if isinstance(fault, TraceReplay):
            need = max(need, 3 * 24 * HOUR)
            continue
        schedule = fault.arrivals()
        if schedule is not None and schedule.at:
            need = max(need, schedule.at[0] + 2 * HOUR)
        elif schedule is not None and schedule.every is not None:
            need = max(need, (schedule.start or schedule.every) + 2 * HOUR)
    return min(scenario.duration, need)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_each_fault_changes_an_outcome(path):
    """Without any one of its faults, a shipped scenario's run comes out differently. A fault that
    changes nothing in the first horizon (a Poisson fault that happened not to fire) gets the
    scenario's whole duration before it is called idle."""
    shipped = load_scenario(path, ["surrogate=off", "compare={}", "replications=1", "hypotheses=[]", "halt=[]"])

    def idle_faults(cut: float, names: list[str]) -> list[str]:
        base = shipped.model_copy(update={"duration": cut})
        reference = outcomes(run_replication(base, 0, None, path.parent).summary)
        idle = []
        for fault in base.faults:
            if fault.name not in names:
                continue
            without = base.model_copy(update={"faults": [f for f in base.faults if f is not fault]})
            if not differs(outcomes(run_replication(without, 0, None, path.parent).summary), reference):
                idle.append(fault.name)
        return idle

    cut = horizon_s(shipped)
    idle = idle_faults(cut, [f.name for f in shipped.faults])
    if idle and cut < shipped.duration:
        cut = shipped.duration
        idle = idle_faults(cut, idle)
    assert idle == [], f"{path.name}: removing {idle} changes nothing in {cut / HOUR:g} h"
