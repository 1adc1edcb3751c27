"""Unit strings in scenario files: what parses to which SI number, and what is refused."""

from __future__ import annotations

import math

import pytest
from conftest import make_scenario

from sim.loading import ScenarioError
from sim.units import format_duration, parse_bandwidth, parse_bytes, parse_count, parse_duration

H, D = 3600.0, 86400.0


@pytest.mark.parametrize(
    "parse, text, expected",
    [
        (parse_duration, "30d", 30 * D),
        (parse_duration, "2h45m", 2 * H + 45 * 60),
        (parse_duration, "500ms", 0.5),
        (parse_duration, "90", 90.0),
        (parse_duration, 90, 90.0),
        (parse_duration, "1.5d", 1.5 * D),
        (parse_duration, "1y", 365 * D),
        (parse_duration, "1w", 7 * D),
        (parse_duration, "50000h", 50000 * H),
        (parse_duration, "10min", 600.0),
        (parse_duration, "250us", 250e-6),
        (parse_duration, "1h 30m", 5400.0),
        (parse_duration, "inf", math.inf),
        (parse_bandwidth, "2Gbps", 2e9),
        (parse_bandwidth, "500Mbps", 500e6),
        (parse_bandwidth, "10Gbit/s", 10e9),
        (parse_bandwidth, "1.5e9", 1.5e9),
        (parse_bandwidth, 100, 100.0),
        (parse_bytes, "95GB", 95e9),
        (parse_bytes, "16GiB", 16 * 2**30),
        (parse_bytes, "64KB", 64e3),
        (parse_bytes, "1.2TiB", 1.2 * 2**40),
        (parse_count, "12B", 12e9),
        (parse_count, "4M", 4e6),
        (parse_count, "1.5k", 1500.0),
        (parse_count, "1e6", 1e6),
        (parse_count, "1T", 1e12),
        (parse_count, 7, 7.0),
    ],
)
def test_parses(parse, text, expected):
    """Each accepted unit string gives the SI value written out by hand."""
    assert parse(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "parse, text, hint",
    [
        (parse_bandwidth, "2GBps", "bits per second"),  # bytes per second: refused, not guessed
        (parse_bandwidth, "2GB/s", "bits per second"),
        (parse_bandwidth, "fast", "bandwidth"),
        (parse_duration, "5 parsecs", "duration"),
        (parse_duration, "2h45", "duration"),
        (parse_duration, "", "duration"),
        (parse_duration, True, "duration"),
        (parse_duration, "nan", "duration"),
        (parse_bytes, "95Gb", "bytes"),  # gigabits are not a size
        (parse_bytes, "lots", "size"),
        (parse_count, "12X", "suffixes"),
        (parse_count, "4 million", "count"),
    ],
)
def test_refuses(parse, text, hint):
    """A malformed or ambiguous unit string raises ValueError saying what was expected."""
    with pytest.raises(ValueError, match=hint) as info:
        parse(text)
    assert repr(text) in str(info.value) or str(text) in str(info.value)


def test_negative_duration_parses_and_models_refuse_it():
    """'-5s' parses to -5 (the sign is the caller's business); the scenario model refuses it where forbidden."""
    assert parse_duration("-5s") == -5.0
    with pytest.raises(ScenarioError, match="greater than"):
        make_scenario("duration=-5s")
    with pytest.raises(ScenarioError, match="greater than or equal"):
        make_scenario("training.checkpoint.write_time=-1m")


@pytest.mark.parametrize("seconds, text", [(0.0, "0s"), (0.5, "500ms"), (90, "90s"), (2 * H + 45 * 60, "2h45m"), (3 * D + 5, "3d5s"), (3 * D + 2 * H, "3d2h")])
def test_format_duration(seconds, text):
    """Durations print in a compact form (at most two parts) that parses back."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-9)


@pytest.mark.parametrize("seconds, text", [(1313325398746604 * D, "3.6e+12y"), (5000 * D, "13.7y"), (999 * D, "999d")])
def test_format_duration_past_a_thousand_days_is_in_years(seconds, text):
    """An absurd step time reads '3.6e+12y', not '1313325398746604d'; it still parses back (to 3 digits)."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, rel=5e-3)
