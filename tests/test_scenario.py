"""The typed scenario model: overrides, resolved round-trips, cross-field checks, JSON Schema."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import BASE, CHAOSSIM, ROOT, make_scenario, scenario_dict
from pydantic import ValidationError
from ruamel.yaml import YAML

from sim.loading import ScenarioError, apply_override, load_scenario, scenario_yaml, validate
from sim.scenario import IslandOutage, OnFailure, Policy, Scenario, SelectMode

SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))


def test_defaults_are_filled_in():
    """A minimal scenario gets every default: sync_dp, restart, Daly checkpoints, no faults."""
    data = scenario_dict()
    del data["training"]
    scenario = validate(data, "<test>")
    assert scenario.training.policy is Policy.SYNC_DP
    assert scenario.training.on_failure is OnFailure.RESTART
    assert scenario.training.checkpoint.interval == "daly"
    assert scenario.training.recovery.detect + scenario.training.recovery.reschedule == 600.0
    assert scenario.replications == 1 and scenario.faults == []


@pytest.mark.parametrize(
    "assignment, getter, expected",
    [
        ("duration=2d", lambda s: s.duration, 2 * 86400.0),
        ("seed=99", lambda s: s.seed, 99),
        ("training.policy=elastic_dp", lambda s: s.training.policy, Policy.ELASTIC_DP),
        ("training.checkpoint.interval=young", lambda s: s.training.checkpoint.interval, "young"),
        ("training.recovery.reload=7m", lambda s: s.training.recovery.reload, 420.0),
        ("topology.regions.0.islands.0.chips=8", lambda s: s.topology.regions[0].islands[0].chips, 8),
        ("topology.regions.0.islands.0.count=3", lambda s: s.topology.regions[0].islands[0].count, 3),
        ("topology.default_link.bandwidth=5Gbps", lambda s: s.topology.default_link.bandwidth, 5e9),
        ("workload.params=12B", lambda s: s.workload.params, 12e9),
        ("surrogate.model=mlp", lambda s: s.surrogate.model, "mlp"),  # a section the file does not have
    ],
)
def test_set_override(assignment, getter, expected):
    """``--set dotted.key=value`` reaches nested keys and list items by index; values are read as YAML."""
    assert getter(make_scenario(assignment)) == expected


def test_set_override_replaces_a_list_item_and_whole_lists():
    """An index addresses one list item; a YAML flow value replaces a whole list."""
    data = scenario_dict()
    apply_override(data, "topology.regions.0.islands=[{name: a, chip: v5p, chips: 64}, {name: b, chip: v6e, chips: 256}]")
    apply_override(data, "topology.regions.0.islands.1.chips=512")
    scenario = validate(data, "<test>")
    assert [(i.name, i.chips) for i in scenario.topology.regions[0].islands] == [("a", 64), ("b", 512)]


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("duration", "expected dotted.key=value"),
        ("topology.regions.3.name=x", "expected an index below 1"),
        ("name.first=x", "is a value, not a section"),
    ],
)
def test_bad_override(assignment, message):
    """A malformed --set is a ScenarioError saying what was expected."""
    with pytest.raises(ScenarioError, match=message):
        apply_override(scenario_dict(), assignment)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT / "scenarios")))
def test_resolved_yaml_round_trips(path: Path):
    """The resolved scenario (every default filled in, SI numbers) loads back to an equal model."""
    scenario = load_scenario(path)
    text = scenario_yaml(scenario)
    again = validate(YAML(typ="safe").load(text), "resolved.yaml")
    assert again == scenario
    assert scenario_yaml(again) == text


def test_resolved_units_are_short():
    """A resolved value is written in the largest unit with a short exact text, so the quickstart's
    ``mtbf: 50000h`` reads back as 50000h, not 2083.3333333333335d, and loads to the same float; a zero
    is in the base unit (``detect: 0s``, not 0d)."""
    from sim.schema import unit_text
    from sim.units import parse_bandwidth, parse_count, parse_duration

    text = scenario_yaml(load_scenario(ROOT / "scenarios" / "quickstart.yaml"))
    assert "mtbf: 50000h" in text and "2083" not in text
    for parse, value, written in ((parse_duration, 5400.0, "1.5h"), (parse_duration, 1.5, "1.5s"),
                                  (parse_duration, 0.03, "30ms"), (parse_bandwidth, 2.5e9, "2.5Gbps"),
                                  (parse_count, 12e9, "12B"), (parse_duration, 1234.567891, "20.576131516666667m"),
                                  (parse_duration, 0.0, "0s"), (parse_bandwidth, 0.0, "0bps"), (parse_count, 0.0, "0")):
        assert unit_text(parse, value) == written and parse(written) == value


def test_round_trip_keeps_infinity_and_shorthands():
    """Infinite grace caps, 'all' targets and duration shorthands survive the resolved form."""
    faults = [{"name": "o", "kind": "island_outage", "target": "all", "at": ["1h", "2h"], "duration": "30m"}]
    scenario = make_scenario(faults=faults)
    assert scenario.training.grace.max == math.inf
    assert isinstance(scenario.faults[0], IslandOutage)
    assert scenario.faults[0].target.mode is SelectMode.ALL
    assert scenario.faults[0].duration.value == 1800.0
    assert validate(YAML(typ="safe").load(scenario_yaml(scenario)), "r") == scenario


def test_models_are_frozen():
    """A scenario cannot be changed after validation (copies are made with model_copy)."""
    scenario = make_scenario()
    with pytest.raises(ValidationError, match="frozen"):
        scenario.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "top, message",
    [
        ({"faults": [{"name": "a", "kind": "slowdown", "at": "1h"}, {"name": "a", "kind": "slowdown", "at": "2h"}]},
         "fault names must be unique"),
        ({"faults": [{"name": "x", "kind": "island_outage"}]}, "needs 'mtbf'"),
        ({"faults": [{"name": "x", "kind": "island_outage", "at": "1h", "target": {"mode": "fixed"}}]}, "needs a value"),
        ({"faults": [{"name": "x", "kind": "chip_failure", "mtbf": "1y", "repair": {"distribution": "lognormal"}}]},
         "needs 'median'"),
        ({"training": {"policy": "sync_dp", "on_failure": "elastic"}}, "use policy elastic_dp"),
    ],
)
def test_cross_field_checks(top, message):
    """Checks that span fields give a message naming the problem."""
    with pytest.raises(ScenarioError, match=message):
        make_scenario(**top)


def test_unknown_chip_error_names_the_island_path():
    """An unknown chip type points at the island's ``chip`` key, not at the top level."""
    with pytest.raises(ScenarioError, match=r"topology\.regions\[0\]\.islands\[0\]\.chip: .*unknown chip 'v9'"):
        make_scenario("topology.regions.0.islands.0.chip=v9")


def test_user_chip_types_extend_the_catalog():
    """A scenario's ``chips:`` section adds chip types that islands can use."""
    scenario = make_scenario("topology.regions.0.islands.0.chip=x1", chips={"x1": {"peak_flops": "100T"}})
    assert scenario.chips["x1"].peak_flops == 100e12


def _schema() -> dict:
    result = subprocess.run([str(CHAOSSIM), "schema"], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_schema_validates_every_scenario():
    """``chaossim schema`` prints a valid JSON Schema that accepts every shipped scenario and rejects typos."""
    schema = _schema()
    validator_cls = jsonschema.Draft202012Validator
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    for path in SCENARIOS:
        data = YAML(typ="safe").load(path.read_text())
        errors = [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(data)]
        assert not errors, f"{path.name}: {errors}"
    typo = dict(BASE, sede=3)
    assert list(validator.iter_errors(typo))
    assert set(schema["properties"]) == set(Scenario.model_fields)
