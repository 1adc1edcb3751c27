"""Where a result came from: the chaossim version, the command line, its overrides, the seeds, the date.

``summary.json``, the resolved ``scenario.yaml`` (as a comment header) and the report carry the same
record, so a number found in a folder months later can be traced to the command that made it and
re-run. Replication summaries do not carry it: they stay identical for the same scenario and seed.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

from . import __version__


def provenance(command: list[str], overrides: list[str], seeds: list[int]) -> dict:
    """The record for a run started by ``chaossim`` + ``command`` (the words after ``chaossim``)."""
    return {
        "chaossim": __version__,
        "command": shlex.join(["chaossim", *command]),
        "overrides": list(overrides),
        "seeds": list(seeds),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def header(record: dict) -> str:
    """The record as YAML comment lines, for the top of a resolved scenario file."""
    lines = [f"chaossim {record['chaossim']}, {record['date']}", f"command: {record['command']}"]
    lines += [f"seeds: {', '.join(map(str, record['seeds']))}"]
    return "".join(f"# {line}\n" for line in lines)
