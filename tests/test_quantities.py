"""One display unit per metric: the CLI, the sweep table, the report and the hypotheses agree."""

from __future__ import annotations

import re

import pytest

from sim.quantities import bound_text, format_metric, metric_quantity, readable_number, verdict_text


def test_downtime_bound_and_value_in_hours():
    """A downtime hypothesis reads in hours on both sides of the bound (it is stored in seconds)."""
    verdict = {"metric": "global_downtime_s", "value": 47.75 * 3600, "min": None, "max": 0.0, "passed": False}
    assert verdict_text(verdict) == "global_downtime_s <= 0 h: 47.75 h"
    assert bound_text("global_downtime_s", None, 1800.0) == "<= 0.5 h"


@pytest.mark.parametrize(("metric", "value", "text"), [
    ("wan_bytes", 7.842e14, "784,200"),  # GB
    ("tokens", 3.415e13, "34.15T"),
    ("tokens", 2.5e6, "2.5M"),
    ("goodput", 0.000149, "0.0001"),
    ("global_downtime_s", 81720.0, "22.7"),
    ("failures_total", 58.0, "58"),
    ("interruptions", 0.5, "0.5"),  # a mean over replications is not rounded to a whole count
    ("failures_total", 1.5, "1.5"),
    ("failures.chip_failure", 2.0 / 3.0, "0.6667"),
    ("steps", 2134140.0, "2,134,140"),
    ("chip_time_fraction.lost", 0.0458, "0.0458"),
    ("chip_time_fraction.lost", 4.2e-6, "0.0000042"),  # small but not zero: never shown as 0.0000
    ("chip_time_fraction.spare", 0.0, "0.0000"),
])
def test_readable_quantities(metric, value, text):
    """Large and small values read without exponent notation, in the metric's one unit."""
    assert format_metric(metric, value) == text


def test_no_exponent_notation_anywhere():
    """No metric value from 1e-3 to 1e16 is written with an exponent."""
    for metric in ("wan_bytes", "tokens", "global_downtime_s", "wall_time_s", "final_loss", "steps"):
        for exponent in range(-3, 17):
            assert not re.search(r"e[+-]\d", format_metric(metric, 1.234 * 10.0**exponent)), (metric, exponent)
    assert readable_number(4033.2) == "4,033"


def test_units_are_named_once():
    """Every metric stored in seconds is shown in hours except the simulator's own wall time."""
    assert metric_quantity("global_downtime_s").unit == "h"
    assert metric_quantity("quorum_unmet_s").unit == "h"
    assert metric_quantity("wall_time_s").unit == "s"
    assert metric_quantity("wan_bytes").label == "WAN traffic (GB)"
