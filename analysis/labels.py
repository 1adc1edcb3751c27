"""Names, units and colours shared by every figure and by the report tables.

Metric names, units and formats come from :mod:`sim.quantities` (one unit per metric, shared with the
CLI). This module turns sweep factor values (``"10s"``, ``"50000h"``, ``"2Gbps"``, ``16384``) into
numbers with a unit so that they sort and plot on a numeric axis. Values as the user wrote them
(strings, which :meth:`analysis.load.Results.written` puts back into a sweep's rows) are labelled as
written; values resolved to SI numbers are labelled in a compact form (``300`` s reads ``5min``).

Colours are fixed per learner phase and per chip-time bucket, so the same state has the same colour
in the timeline, the ledger bars and across reports.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, replace

import pandas as pd

from sim.quantities import Quantity, format_metric, metric_quantity
from sim.units import parse_bandwidth, parse_bytes, parse_count, parse_duration

__all__ = ["Quantity", "format_metric", "metric_quantity"]  # one unit per metric: sim.quantities

# Phases of sim.metrics.Phase: running is progress, recovery phases are warm colours, elastic
# reconfiguration purple, waiting grey, down black.
PHASE_COLOURS = {
    "running": "#2ca02c",
    "checkpoint": "#1f77b4",
    "detect": "#d94801",
    "reload": "#fd8d3c",
    "swap": "#fdd0a2",
    "downscale": "#756bb1",
    "upscale": "#bcbddc",
    "blocked": "#bdbdbd",
    "down": "#252525",
}
PHASE_ORDER = list(PHASE_COLOURS)

# Buckets of sim.metrics.Bucket, in the order they stack (useful at the bottom).
BUCKET_COLOURS = {
    "useful": "#2ca02c",
    "lost": "#d62728",
    "recovery": "#fd8d3c",
    "checkpoint": "#1f77b4",
    "waiting": "#bdbdbd",
    "down": "#252525",
    "spare": "#9edae5",
}
BUCKET_ORDER = list(BUCKET_COLOURS)
FAILURE_COLOUR = "#d62728"

@dataclass(frozen=True)
class FactorAxis:
    """A sweep factor's values as numbers (``numbers`` is None when they are categories)."""

    name: str
    unit: str
    numbers: pd.Series | None
    written: bool = False  # the values are the user's texts ("50000h"): ticks show them, not ``numbers``

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit and not self.written else self.name


def _parsed(values: pd.Series, parse) -> pd.Series | None:
    try:
        return values.map(lambda v: parse(v))
    except (ValueError, TypeError):
        return None


def _parsers(annotation, found: list) -> list:
    """Unit parsers (BeforeValidator functions) anywhere inside a type annotation."""
    for meta in getattr(annotation, "__metadata__", ()):
        if callable(getattr(meta, "func", None)):
            found.append(meta.func)
    for arg in typing.get_args(annotation):
        _parsers(arg, found)
    return found


def key_parser(key: str):
    """The unit parser of a dotted scenario key (``training.grace.max`` -> parse_duration), or None.

    Sweep rows hold *resolved* factor values (``training.grace.max`` in seconds), so the unit comes
    from the scenario model, not from the value.
    """
    from pydantic import BaseModel

    from sim.scenario import Scenario

    annotation, info = Scenario, None
    for part in key.split("."):
        if part.isdigit():
            continue  # a list index: the item type is searched below
        models = [a for a in [annotation, *_flat_args(annotation)] if isinstance(a, type) and issubclass(a, BaseModel)]
        info = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if info is None:
            return None
        annotation = info.annotation
    if info is None:
        return None
    found = [m.func for m in info.metadata if callable(getattr(m, "func", None))]
    found += _parsers(info.annotation, [])
    known = (parse_duration, parse_bandwidth, parse_bytes, parse_count)
    return next((f for f in found if f in known), None)


def _flat_args(annotation) -> list:
    args = []
    for arg in typing.get_args(annotation):
        args.append(arg)
        args.extend(_flat_args(arg))
    return args


_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def _compact_unit(seconds: pd.Series) -> tuple[str, float] | None:
    """The unit in which the longest of the values reads shortest (``300``, ``900`` s: 5min and
    15min; 1.8e8 s: 50000h, not 2083.33d), on a tie the one with whole numbers (30s and 120s, not
    0.5min), then the larger; never one that needs an exponent (3e+06min). None without a value."""
    if not len(seconds):
        return None
    values = [v for v in seconds if v != 0]  # 0 reads "0" in any unit: it must not pick one (0d)
    if not values:
        return "s", 1.0
    best = None
    for order, (unit, size) in enumerate(_DURATION_UNITS):
        texts = [f"{v / size:g}" for v in values]
        if any("e" in t for t in texts):
            continue
        score = (max(map(len, texts)), any("." in t for t in texts), order)
        if best is None or score < best[0]:
            best = (score, unit, size)
    return best[1:] if best else None


def _duration_axis(name: str, seconds: pd.Series) -> FactorAxis:
    finite = seconds[seconds.map(math.isfinite)].abs()
    top = finite.max() if len(finite) else 0.0
    # one unit for the column, the one in which its values read shortest; else the largest value
    # picks it: grace windows read in seconds, MTBFs in hours or days
    unit, size = _compact_unit(finite) or (("s", 1.0) if top < 600 else (("h", 3600.0) if top <= 30 * 86400 else ("d", 86400.0)))
    return FactorAxis(name, unit, seconds / size)


_SCALED = {parse_bandwidth: ("Gbit/s", 1e9), parse_bytes: ("GB", 1e9), parse_count: ("", 1.0)}


def factor_axis(values: pd.Series, name: str | None = None) -> FactorAxis:
    """Numbers and a unit for factor values: plain numbers, durations, bandwidths, counts or bytes."""
    name = name or str(values.name)
    if values.map(lambda v: isinstance(v, bool)).any():
        return FactorAxis(name, "", None)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        parser = key_parser(name) if "." in name or name == "duration" else None
        if parser is parse_duration:
            return _duration_axis(name, numeric.astype(float))
        if parser in _SCALED:
            unit, size = _SCALED[parser]
            return FactorAxis(name, unit, numeric.astype(float) / size)
        return FactorAxis(name, "", numeric.astype(float))
    if not values.map(lambda v: isinstance(v, str)).all():
        return FactorAxis(name, "", None)
    seconds = _parsed(values, parse_duration)
    if seconds is not None:
        return replace(_duration_axis(name, seconds), written=True)
    for parse in (parse_bandwidth, parse_count, parse_bytes):
        parsed = _parsed(values, parse)
        if parsed is not None:
            unit, size = _SCALED[parse]
            return FactorAxis(name, unit, parsed / size, written=True)
    return FactorAxis(name, "", None)


def level_texts(values: pd.Series) -> pd.Series:
    """Factor values as a scenario file writes them: the user's own texts where the values are
    those (``50000h``, ``5m``), else in the column's one compact unit (``0s``, ``15s``, ``5min``,
    ``2Gbit/s``, ``16384``): sweep rows hold them resolved to SI numbers, and ``0.0`` for a grace
    window names no unit."""
    axis = factor_axis(values)
    if axis.numbers is None or not axis.unit or axis.written:
        return values.map(str)
    return pd.Series([f"{n:g}{axis.unit}" if math.isfinite(n) else str(v) for v, n in zip(values, axis.numbers)],
                     index=values.index, name=values.name)


def ordered_levels(values: pd.Series) -> list:
    """Distinct factor values in numeric order where they have one, else in order of appearance."""
    distinct = pd.Series(pd.unique(values), name=values.name)
    axis = factor_axis(distinct)
    if axis.numbers is None:
        return list(distinct)
    return list(distinct.iloc[axis.numbers.argsort(kind="stable")])


def level_text(value, axis: FactorAxis, number: float | None = None) -> str:
    """Tick text of one factor level: the value as the user wrote it, else the converted number when
    there is a unit (the axis label names it), else the value."""
    if number is not None and axis.unit and not axis.written and math.isfinite(number):
        return f"{number:g}"
    return str(value)
