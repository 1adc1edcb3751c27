"""The run summary: the metrics of DESIGN.md as one flat-ish JSON object, and bound checks.

Names (what ``chaossim run --json`` prints and ``summary.json`` holds):

* ``goodput`` = useful chip-seconds / provisioned chip-seconds;
* ``useful_at_end_fraction`` = the share of chip-seconds counted useful only because the run ended with
  them pending (no round merged them, no checkpoint kept them): the part of goodput a longer run could
  still lose;
* ``uptime`` = fraction of wall time in which at least one learner group runs steps (the global model
  advances); ``global_downtime_s`` = the rest, in seconds;
* ``chip_time`` (chip-seconds per bucket) and ``chip_time_fraction`` (the same over the total);
* ``failures`` by fault kind, ``failures_by_cause`` (random | systematic: lemon hardware's excess
  failures and faults marked ``cause: systematic``), ``repairs_escalated`` per fault (automatic
  repairs that failed over to manual), ``failures_total``, ``interruptions`` (failures that hit a group holding
  chips) and ``absorbed`` (failures that arrived while nothing could be lost), and both per fault name
  (``interruptions_by_fault``, ``absorbed_by_fault``); in a lockstep job every arrival is one or the other;
* ``protocol``: the DiLoCo-family settings the numbers rest on, in one line (:func:`protocol_settings`);
* ``steps``, ``tokens``: committed training progress;
* ``learners``: per group name, chips, downtime, steps, tokens, interruptions;
* ``islands_detail``: per island its group and downtime (the group's, plus time it sat out of a
  running group: an outage or all its units down under ``elastic``);
* ``wall_time_s``, ``events``, ``events_per_s``, ``sim_speedup`` (simulated over wall seconds).

Policies can add their own metrics through a ``metrics()`` method (the DiLoCo family does).
Bounds (hypotheses and halt conditions) name a metric by its dotted path: ``goodput``,
``chip_time_fraction.lost``, ``failures.chip_failure``.
"""

from __future__ import annotations

import math

from .metrics import Bucket, combine
from .scenario import Policy
from .syncer import GraceMode
from .units import format_duration

AT_END_NOTE_SHARE = 0.1
"""More than this share of goodput resting on the run-end convention gets a note (run, sweep)."""


def protocol_settings(training) -> str | None:
    """The outer-round settings a DiLoCo-family run's numbers rest on, in one line (None for lockstep).

    Decoupled DiLoCo's two schedules are two readings of the protocol with different learners per
    merge, staleness and goodput (README, "The two schedules"): a table that shows a number must show which."""
    policy = training.policy
    timeout = "no timeout" if training.round_timeout is None else f"timeout {format_duration(training.round_timeout)}"
    if policy is Policy.DILOCO:
        return f"H {training.inner_steps}, {training.bits} bits, {timeout}"
    if policy is Policy.STREAMING_DILOCO:
        return f"H {training.inner_steps}, P {training.fragments}, tau {training.overlap}, {training.bits} bits, {timeout}"
    if policy is not Policy.DECOUPLED_DILOCO:
        return None
    grace = training.grace
    if grace.mode is GraceMode.ADAPTIVE:
        cap = "uncapped" if grace.max == math.inf else f"max {format_duration(grace.max)}"
        window = f"grace adaptive gamma {grace.gamma:g} {cap}"  # (no comma: the parts are split at ", ")
    elif grace.mode is GraceMode.FIXED:
        window = f"grace fixed {format_duration(min(grace.fixed, grace.max))}"
    else:
        window = "no grace"
    return (f"schedule {training.schedule.value}, quorum {training.quorum}, {window}, {training.apply.value}, "
            f"{timeout}, H {training.inner_steps}, P {training.fragments}, tau {training.overlap}, {training.bits} bits")


def summarize(ctx, policy, groups, faults, uptime, events: int, wall_s: float, final: bool) -> dict:
    now = ctx.env.now
    for group in groups:
        group.settle()
        group.ledger.advance(now)
    chip_time = combine([g.ledger for g in groups])
    if not final:  # mid-run: pending compute is not useful yet, but it is not lost either
        chip_time[Bucket.USEFUL.value] += math.fsum(g.ledger.pending_chip_s for g in groups)
    total = math.fsum(chip_time.values())
    up_s = uptime.total_s()
    tokens_per_step = ctx.scenario.workload.tokens_per_step
    learners = []
    for group in groups:
        steps = group.ledger.committed_steps + (0.0 if final else group.ledger.pending_steps)
        learners.append(
            {
                "name": group.name,
                "islands": [i.name for i in group.islands],
                "chips": group.ledger.provisioned_chips,
                "downtime_s": now - group.up_s(),
                "steps": steps,
                "tokens": steps * tokens_per_step,
                "interruptions": len(group.interrupts_s),
                "absorbed": group.absorbed,
            }
        )
    summary = {
        "scenario": ctx.scenario.name,
        "policy": ctx.scenario.training.policy.value,
        "on_failure": groups[0].mode.value if groups else None,
        "protocol": protocol_settings(ctx.scenario.training),
        "duration_s": now,
        "chips": ctx.topology.total_chips,
        "islands": len(ctx.topology.islands),
        "goodput": chip_time[Bucket.USEFUL.value] / total if total > 0 else 0.0,
        # the part of goodput that rests on the run-end convention (mid-run: what is pending now)
        "useful_at_end_fraction": math.fsum(g.ledger.useful_at_end_chip_s if final else g.ledger.pending_chip_s
                                            for g in groups) / total if total > 0 else 0.0,
        "uptime": up_s / now if now > 0 else 0.0,
        "global_downtime_s": now - up_s,
        "chip_time": chip_time,
        "chip_time_fraction": {k: (v / total if total > 0 else 0.0) for k, v in chip_time.items()},
        "failures": dict(sorted(faults.counter.by_kind.items())),
        "failures_by_fault": dict(sorted(faults.counter.by_fault.items())),
        "failures_total": sum(faults.counter.by_kind.values()),
        "failures_by_cause": dict(sorted(faults.counter.by_cause.items())),
        "repairs_escalated": dict(sorted(faults.counter.escalated.items())),
        "interruptions": sum(len(g.interrupts_s) for g in groups),
        "absorbed": sum(g.absorbed for g in groups),
        "spare_waits": sum(g.spares.waits for g in groups),
        "spare_wait_s": math.fsum(g.spare_wait_s for g in groups),
        "interruptions_by_fault": _by_fault(g.interrupts_by_fault for g in groups),
        "absorbed_by_fault": _by_fault(g.absorbed_by_fault for g in groups),
        "steps": sum(entry["steps"] for entry in learners) if len(groups) > 1 else learners[0]["steps"],
        "tokens": sum(entry["tokens"] for entry in learners),
        "learners": learners,
        "islands_detail": [
            {"name": i.name, "region": i.region, "chip": i.chip_type, "chips": i.chips, "group": g.name,
             "downtime_s": g.island_downtime_s(i)}
            for g in groups for i in g.islands
        ],
        "wall_time_s": wall_s,
        "events": events,
        "events_per_s": events / wall_s if wall_s > 0 else 0.0,
        "sim_speedup": now / wall_s if wall_s > 0 else 0.0,
    }
    if hasattr(policy, "metrics"):
        summary.update(policy.metrics(final=final))
    return summary


def _by_fault(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for group_counts in counts:
        for fault, n in group_counts.items():
            total[fault] = total.get(fault, 0) + n
    return dict(sorted(total.items()))


def metric_value(summary: dict, path: str) -> float:
    """The value at a dotted ``path`` of the summary; KeyError names what is there."""
    node = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(k for k, v in summary.items() if isinstance(v, (int, float, dict)))
            raise KeyError(f"unknown metric {path!r} (top-level metrics: {', '.join(known)})")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise KeyError(f"metric {path!r} is not a number")
    return float(node)


def check_bounds(summary: dict, bounds, halted: bool = False) -> list[dict]:
    """One verdict per bound: ``{metric, value, min, max, passed[, error][, halted]}``.

    A fault kind that never happened counts as 0 failures; any other unknown metric fails its bound
    with the reason in ``error`` (a typo must never pass silently). On a ``halted`` replication a
    hypothesis fails (``halted: True``): it was stopped before the horizon it speaks about, unless the
    bound says ``if_halted: judge``, which judges the values at the halt.
    """
    verdicts = []
    for bound in bounds:
        error = None
        try:
            value = metric_value(summary, bound.metric)
        except KeyError as err:
            value = 0.0 if bound.metric.startswith(("failures.", "failures_by_fault.")) else None
            error = None if value == 0.0 else str(err.args[0])
        passed = error is None and (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
        verdict = {"metric": bound.metric, "value": value, "min": bound.min, "max": bound.max, "passed": passed}
        if error:
            verdict["error"] = error
        if halted and getattr(bound, "if_halted", "fail") == "fail":
            verdict.update(passed=False, halted=True)
        verdicts.append(verdict)
    return verdicts
