"""One display unit per metric, for every table: the CLI, the sweep table, the report, the hypotheses.

The simulator stores one SI unit per quantity (seconds, chip-seconds, bytes) and names metrics after
it (``global_downtime_s``). People read hours, fractions and gigabytes, so :func:`metric_quantity`
turns a metric name into a name, a unit and the factor that converts the stored value to it, and
:func:`format_metric` writes one value in that unit without exponent notation (``22.69``,
``784,200``, ``34.15T``). A bound on a metric (``global_downtime_s <= 0``) is shown in the same unit
as its value (:func:`verdict_text`), so a table never mixes seconds and hours in one row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_NAMED = {
    "goodput": ("goodput", "fraction of chip-time", 1.0),
    "useful_at_end_fraction": ("useful only by the run-end convention", "fraction of chip-time", 1.0),
    "surrogate_merges": ("rounds the surrogate merged (the loss rests on them)", "count", 1.0),
    "surrogate_rounds_skipped": ("rounds the surrogate skipped whole (its resolution)", "count", 1.0),
    "uptime": ("uptime", "fraction of wall time", 1.0),
    "tokens": ("tokens", "count", 1.0),
    "steps": ("steps", "count", 1.0),
    "wall_time_s": ("simulator wall time", "s", 1.0),
    "row_wall_s": ("simulator wall time", "s", 1.0),
    "surrogate_wall_s": ("surrogate wall time", "s", 1.0),
    "step_compute_s": ("step compute", "s", 1.0),
    "step_comm_s": ("step exposed communication", "s", 1.0),
    "step_stretch": ("step stretch (compute + comm over compute)", "x", 1.0),
    "duration_s": ("simulated duration", "h", 1 / 3600),
    "chips": ("chips", "count", 1.0),
    "islands": ("islands", "count", 1.0),
    "interruptions": ("interruptions", "count", 1.0),
    "absorbed": ("absorbed failures", "count", 1.0),
    "failures_total": ("failures", "count", 1.0),
    "events": ("simulation events", "count", 1.0),
    "events_per_s": ("simulation events per second", "count", 1.0),
    "sim_speedup": ("simulated / wall time", "x", 1.0),
    "final_loss": ("final surrogate loss", "nats", 1.0),
    "wan_bytes": ("WAN traffic", "GB", 1e-9),
    "mean_learners_per_merge": ("learners per merge", "learners", 1.0),
    "outer_rounds": ("outer rounds", "count", 1.0),
    "rejoins": ("rejoins", "count", 1.0),
}
_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"))  # the count suffixes scenario files use


@dataclass(frozen=True)
class Quantity:
    """How to show a stored value: ``label`` (with unit) and ``scale`` (stored value * scale)."""

    name: str
    unit: str
    scale: float

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name

    @property
    def suffix(self) -> str:
        """The unit written after a number (none for counts and fractions)."""
        return "" if self.unit in ("count", "") or self.unit.startswith("fraction") else f" {self.unit}"


def metric_quantity(metric: str) -> Quantity:
    """The display name, unit and scale of a summary metric (dotted names included)."""
    if metric in _NAMED:
        return Quantity(*_NAMED[metric])
    head, _, tail = metric.partition(".")
    if head == "chip_time_fraction" and tail:
        return Quantity(f"{tail} chip-time", "fraction of chip-time", 1.0)
    if head == "chip_time" and tail:
        return Quantity(f"{tail} chip-time", "chip-h", 1 / 3600)
    if head in ("failures", "failures_by_fault") and tail:
        return Quantity(f"{tail} failures", "count", 1.0)
    if head == "merges_by_learner" and tail:
        return Quantity(f"rounds merging learner {tail}", "count", 1.0)
    if metric.endswith("_s"):
        # seconds are stored; a chaos run spans hours to weeks, so hours read best
        return Quantity(metric[:-2].replace("_", " "), "h", 1 / 3600)
    if metric.endswith("_bytes"):
        return Quantity(metric[:-6].replace("_", " "), "GB", 1e-9)
    return Quantity(metric.replace("_", " "), "", 1.0)


def readable_number(value: float) -> str:
    """A number without exponent notation: ``0.0002``, ``22.69``, ``784,200``."""
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size == 0 or size >= 1:
        return f"{value:.4g}"
    if size < 1e-6:
        return "< 0.000001" if value > 0 else "> -0.000001"
    places = max(4, 1 - math.floor(math.log10(size)))  # two significant digits below 0.0001
    return f"{value:.{places}f}".rstrip("0").rstrip(".")


def format_metric(metric: str, value: float | None, unit: bool = False) -> str:
    """One metric value in its display unit (with the unit after it when ``unit``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    q = metric_quantity(metric)
    shown = value * q.scale
    if q.unit == "count":
        if metric == "tokens" or abs(shown) >= 1e7:
            for size, suffix in _SUFFIXES:
                if abs(shown) >= size:
                    return f"{readable_number(shown / size)}{suffix}"
        if abs(shown) < 1000 and shown != round(shown):
            return readable_number(shown)  # a mean over replications: 0.5 interruptions is not 0
        return f"{shown:,.0f}"
    fraction = q.unit.startswith("fraction") and not 0 < abs(shown) < 5e-5  # a tiny share is not shown as 0
    text = f"{shown:.4f}" if fraction else readable_number(shown)
    return text + (q.suffix if unit else "")


def bound_text(metric: str, low: float | None, high: float | None) -> str:
    """``>= 0.75``, ``<= 0 h``: a bound in the display unit of its metric."""
    q = metric_quantity(metric)
    parts = [f"{op} {readable_number(v * q.scale)}{q.suffix}" for op, v in ((">=", low), ("<=", high)) if v is not None]
    return " and ".join(parts)


def verdict_text(verdict: dict) -> str:
    """``global_downtime_s <= 0 h: 47.75 h`` for one hypothesis or halt verdict (the error if any)."""
    value = verdict.get("error") or format_metric(verdict["metric"], verdict["value"], unit=True)
    if verdict.get("halted"):
        value += " (not judged: the replication halted early)"
    return f"{verdict['metric']} {bound_text(verdict['metric'], verdict['min'], verdict['max'])}: {value}"
