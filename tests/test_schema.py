"""``chaossim schema``: strict JSON, checked by a real JSON Schema validator against every shipped
scenario and against bad ones; its unit patterns accept exactly what the unit parsers accept."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT
from ruamel.yaml import YAML
from typer.testing import CliRunner

from sim.cli import app
from sim.schema import UNIT_PATTERNS, unit_pattern
from sim.units import parse_bandwidth, parse_bytes, parse_count, parse_duration

SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    text = CliRunner().invoke(app, ["schema"]).stdout
    # strict JSON: Python's parser would accept Infinity and NaN, so refuse them explicitly
    schema = json.loads(text, parse_constant=lambda name: pytest.fail(f"schema holds {name}, not JSON"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_is_valid(validator, path):
    """Each shipped scenario passes the JSON Schema an editor would use."""
    assert [e.message for e in validator.iter_errors(load(path))] == []


@pytest.mark.parametrize(("key", "value"), [
    ("duration", "7 dayz"),
    ("topology.default_link.bandwidth", "2GBps"),
    ("topology.default_link.latency", "30 parsecs"),
    ("workload.params", "12 bn"),
    ("training.recovery.detect", "2 minutes"),
])
def test_bad_units_are_rejected_by_the_schema(validator, key, value):
    """Editors reject the unit typos that ``chaossim validate`` rejects."""
    data = copy.deepcopy(load(ROOT / "scenarios" / "four-regions-12b.yaml"))
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    assert any(validator.iter_errors(data)), f"{key}: {value!r} passed the schema"


@pytest.mark.parametrize("name", ["bandwidth_in_bytes", "duration_in_parsecs", "unknown_top_key", "missing_topology"])
def test_bad_files_are_rejected_by_the_schema(validator, name):
    """Bad scenario files of the test suite fail the schema too."""
    assert any(validator.iter_errors(load(ROOT / "tests" / "data" / "bad" / f"{name}.yaml")))


SAMPLES = {
    parse_duration: ["30s", "2h45m", "500ms", "7d", "1y", "1.5d", "90", "inf", "7 dayz", "2 minutes", "3x", "", "1e3s", "-5s"],
    parse_bandwidth: ["2Gbps", "500Mbps", "10Gbit/s", "1.5e9", "kbps", "2GBps", "2GB/s", "2 Gbps", "7 gbps", "2Gbs"],
    parse_bytes: ["95GB", "16GiB", "512MB", "64KB", "1024", "95gb", "95Gb", "2 GB", "1b", "3 bytes"],
    parse_count: ["12B", "4M", "1.5k", "1e6", "12", "12 B", "12b", "4m", "2T", "seven"],
}


@pytest.mark.parametrize("parser", list(SAMPLES), ids=lambda p: p.__name__)
def test_patterns_accept_what_the_parsers_accept(parser):
    """Each unit pattern matches a sample exactly when its parser reads it."""
    for text in SAMPLES[parser]:
        try:
            parser(text)
            accepted = True
        except ValueError:
            accepted = False
        assert bool(re.search(UNIT_PATTERNS[parser], text)) == accepted, text


BOUNDED = {
    parse_duration: ["30s", "-5h", "0s", "0", "0h0m", "inf", "+2h", "0.0001s", "1e-3s", "0e5s", "-1d", "-inf", "1d-2h"],
    parse_bandwidth: ["2Gbps", "-2Gbps", "0Gbps", "0", "0.5Gbps", "+1e9", "0e9"],
    parse_bytes: ["95GB", "-8B", "0B", "0.5GB", "1", "-1"],
    parse_count: ["12B", "-8B", "0", "0.0k", "1e6", "-1e6"],
}


@pytest.mark.parametrize("parser", list(BOUNDED), ids=lambda p: p.__name__)
@pytest.mark.parametrize("minimum", ["ge0", "gt0"])
def test_bounded_patterns_accept_what_validate_accepts(parser, minimum):
    """A unit field that must be >= 0 (or > 0) has a pattern that matches exactly the strings its parser
    reads to such a value: an editor refuses 'duration: -5h', 'mtbf: 0h' or 'bandwidth: -2Gbps'."""
    for text in BOUNDED[parser] + SAMPLES[parser]:
        try:
            value = parser(text)
            accepted = value >= 0 if minimum == "ge0" else value > 0
        except ValueError:
            accepted = False
        assert bool(re.search(unit_pattern(parser, minimum), text)) == accepted, (text, minimum)


@pytest.mark.parametrize(("key", "value"), [
    ("duration", "-5h"), ("duration", "0s"), ("faults.0.mtbf", "-50000h"), ("faults.0.mtbf", "0h"),
    ("workload.params", "-8B"), ("workload.tokens_per_step", 0), ("topology.default_link.bandwidth", "-2Gbps"),
    ("duration", -3600),
])
def test_out_of_range_values_are_rejected_by_the_schema(validator, key, value):
    """What validate refuses as out of range, the schema refuses too."""
    data = copy.deepcopy(load(ROOT / "scenarios" / "four-regions-12b.yaml"))
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value
    paths = [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(data)]
    # (at the key, or at the fault it belongs to: a union of fault kinds fails as a whole)
    assert any(p and (key == p or key.startswith(p + ".")) for p in paths), f"{key}: {value!r} passed the schema ({paths})"


def test_schema_knows_the_surrogate_tasks(validator):
    """Both surrogate tasks and their knobs pass the schema; an unknown task or a one-token vocabulary fail."""
    data = load(ROOT / "scenarios" / "quickstart.yaml")
    for surrogate, valid in [({"model": "markov", "vocab": 16, "components": 2, "drift_steps": 0}, True),
                             ({"model": "mlp", "hidden": 8}, True), ("off", True),
                             ({"model": "rnn"}, False), ({"model": "markov", "vocab": 1}, False)]:
        errors = list(validator.iter_errors({**data, "surrogate": surrogate}))
        assert (errors == []) == valid, surrogate
