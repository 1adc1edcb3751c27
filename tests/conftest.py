"""Shared fixtures: a tiny valid scenario to start from, and helpers to run it in memory."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sim.loading import apply_override, validate
from sim.runner import run_replication
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
CHAOSSIM = ROOT / ".venv" / "bin" / "chaossim"

# One region, one 1,024-chip v5p island, a fixed 1 s step: with a single island there is no
# all-reduce traffic at all, so sync_dp goodput is exactly the checkpoint/restart model.
BASE: dict = {
    "version": 1,
    "name": "tiny",
    "seed": 1,
    "duration": "1d",
    "topology": {"regions": [{"name": "r0", "islands": [{"name": "isl", "chip": "v5p", "chips": 1024}]}]},
    "workload": {"params": "1B", "tokens_per_step": "1M", "step_time": "1s"},
    "training": {
        "policy": "sync_dp",
        "on_failure": "restart",
        "checkpoint": {"interval": "1000s", "write_time": "60s"},
        "recovery": {"detect": "120s", "reschedule": "480s", "reload": "300s"},
    },
    "faults": [],
}


def scenario_dict(*sets: str, **top) -> dict:
    """The base scenario as a plain dict, with top-level keys replaced and ``dotted.key=value`` sets applied."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(top))
    for assignment in sets:
        apply_override(data, assignment)
    return data


def make_scenario(*sets: str, **top) -> Scenario:
    """A validated tiny Scenario: see :func:`scenario_dict`."""
    return validate(scenario_dict(*sets, **top), "<test>")


def run(scenario: Scenario, replication: int = 0):
    """One replication in memory (no results folder); returns (summary, tables)."""
    rep = run_replication(scenario, replication)
    return rep.summary, rep.tables


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A fresh, not yet existing results folder under tmp_path."""
    return tmp_path / "results"
