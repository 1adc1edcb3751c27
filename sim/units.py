"""Unit strings in scenario files, parsed to SI numbers.

Scenario files state quantities as strings with units so that a reader never has to guess
(``30d``, ``2h45m``, ``500ms``, ``2Gbps``, ``95GB``, ``12B``, ``4M``). Inside the simulator every
quantity is a plain float in one SI unit:

========== ============================ =========================================
quantity   accepted (examples)          internal unit
========== ============================ =========================================
duration   ``90``, ``500ms``, ``2h45m``, seconds
           ``1.5d``, ``1y`` (365 days)
bandwidth  ``2Gbps``, ``500Mbps``,      bits per second
           ``10Gbit/s``, ``1.5e9``
bytes      ``95GB``, ``1.2TiB``, ``64KB`` bytes (decimal SI; ``KiB``/``MiB``/... binary)
count      ``12B``, ``4M``, ``1.5k``,   a plain number (``k``/``M``/``B``/``T``
           ``1e6``                      = 10^3, 10^6, 10^9, 10^12)
========== ============================ =========================================

Each parser raises ``ValueError`` with a message that says what was expected; the scenario loader
turns that into a one-line error naming the file and YAML path.
"""

from __future__ import annotations

import contextlib
import math
import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}
_DURATION_TERM = re.compile(r"\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*(ns|us|µs|ms|min|s|m|h|d|w|y)\s*")

_BANDWIDTH_UNITS = {
    "bps": 1.0,
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
    "tbps": 1e12,
    "bit/s": 1.0,
    "kbit/s": 1e3,
    "mbit/s": 1e6,
    "gbit/s": 1e9,
    "tbit/s": 1e12,
    "b/s": 1.0,
}

_BYTE_UNITS = {
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "pb": 1e15,
    "kib": 2.0**10,
    "mib": 2.0**20,
    "gib": 2.0**30,
    "tib": 2.0**40,
    "pib": 2.0**50,
}

_COUNT_UNITS = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}

_NUMBER_WITH_SUFFIX = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-zµ/]*)\s*$")


def _finite(value: float, what: str, text: object) -> float:
    if not math.isfinite(value):
        raise ValueError(f"expected a finite {what}, got {text!r}")
    return value


def parse_duration(value: str | float) -> float:
    """Seconds from ``90``, ``"500ms"``, ``"2h45m"``, ``"1.5d"``; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', '2h45m' or '7d', got {value!r}")
    if isinstance(value, (int, float)):
        if value == math.inf:
            return math.inf  # "never": a grace window without cap, a schedule without end
        return _finite(float(value), "duration", value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '30s', '2h45m' or '7d', got {value!r}")
    text = value.strip()
    if text in ("inf", "infinity"):
        return math.inf
    with contextlib.suppress(ValueError):  # not a bare number: parse unit terms below
        return _finite(float(text), "duration", value)
    negative = text.startswith("-")
    body = text[1:] if negative else text
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION_TERM.match(body, pos)
        if not match or match.end() == pos:
            raise ValueError(
                f"expected a duration like '30s', '2h45m', '500ms' or '7d' (units ns us ms s m h d w y), "
                f"got {value!r}"
            )
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"expected a duration like '30s', '2h45m' or '7d', got {value!r}")
    return -total if negative else total


def parse_bandwidth(value: str | float) -> float:
    """Bits per second from ``"2Gbps"``, ``"500Mbit/s"`` or a bare number of bits per second."""
    expected = "a bandwidth like '2Gbps', '500Mbps' or '10Gbit/s'"
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        return _finite(float(value), "bandwidth", value)
    match = _NUMBER_WITH_SUFFIX.match(str(value))
    if not match:
        raise ValueError(f"expected {expected}, got {value!r}")
    number, unit = match.groups()
    if unit == "":
        return _finite(float(number), "bandwidth", value)
    factor = _BANDWIDTH_UNITS.get(unit.lower())
    # 'GBps' or 'GB/s' would be bytes per second: refuse rather than guess by a factor of 8.
    if factor is None or "B" in unit.replace("bps", "").replace("bit", ""):
        raise ValueError(f"expected {expected} (bits per second), got {value!r}")
    return _finite(float(number) * factor, "bandwidth", value)


def parse_bytes(value: str | float) -> float:
    """Bytes from ``"95GB"`` (10^9), ``"16GiB"`` (2^30) or a bare number of bytes."""
    expected = "a size like '95GB', '16GiB' or '512MB'"
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        return _finite(float(value), "size", value)
    match = _NUMBER_WITH_SUFFIX.match(str(value))
    if not match:
        raise ValueError(f"expected {expected}, got {value!r}")
    number, unit = match.groups()
    if unit == "":
        return _finite(float(number), "size", value)
    if unit[-1] != "B" and unit.lower() not in ("b",):
        raise ValueError(f"expected {expected} (bytes: B, KB, MB, GB, TB, KiB, ...), got {value!r}")
    factor = _BYTE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"expected {expected}, got {value!r}")
    return _finite(float(number) * factor, "size", value)


def parse_count(value: str | float) -> float:
    """A plain number from ``"12B"`` (12e9), ``"4M"``, ``"1.5k"``, ``"1e6"`` or a number."""
    expected = "a count like '12B', '4M', '1.5k' or '1e6'"
    if isinstance(value, bool):
        raise ValueError(f"expected {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        return _finite(float(value), "count", value)
    match = _NUMBER_WITH_SUFFIX.match(str(value))
    if not match or match.group(2) not in _COUNT_UNITS:
        raise ValueError(f"expected {expected} (suffixes k M B T), got {value!r}")
    number, unit = match.groups()
    return _finite(float(number) * _COUNT_UNITS[unit], "count", value)


def format_duration(seconds: float) -> str:
    """A compact human form (``"2h45m"``, ``"1.5s"``) for tables and logs."""
    if not math.isfinite(seconds):
        return "inf"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1e3:.3g}ms"
    if seconds < 120:
        return f"{seconds:.3g}s"
    if seconds >= 1000 * 86400:  # past ~3 years days stop being readable: 3.6e+12y, not 1313325398746604d9h
        return f"{seconds / _DURATION_UNITS['y']:.3g}y"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        whole = int(seconds // size)
        if whole:
            parts.append(f"{whole}{unit}")
            seconds -= whole * size
    if seconds >= 1 and len(parts) < 2:
        parts.append(f"{int(seconds)}s")
    return "".join(parts[:2])
