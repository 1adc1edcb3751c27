"""Variants played side by side on the same failures: the ``compare:`` section of a scenario.

A scenario's ``compare`` maps dotted keys to lists of equal length; variant *i* is the scenario with
every key set to its *i*-th value, built exactly as ``--set`` builds a scenario::

    compare:
      training.policy:     [sync_dp, elastic_dp, decoupled_diloco]
      training.on_failure: [restart, elastic,    restart]

Variants share the seed, the replications and the duration, so the fault processes, whose draws come
from named streams of that seed (:mod:`sim.rng`), inject the same failures into each: what differs
between the rows of the comparison is the strategy, not the luck. A variant is named by its values
(``sync_dp, restart``), which is also what the report labels it by.

``--set`` on a key that ``compare`` varies plays that one setting alone (the user asked for it), and
``--set compare={}`` plays the base scenario alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .loading import (
    ScenarioError,
    apply_override,
    check_cost,
    located,
    mistakes,
    read_yaml,
    validate,
    variant,
)
from .scenario import Scenario


@dataclass(frozen=True)
class Variant:
    """One compared setting: its label, the values it sets (as written) and the validated scenario."""

    label: str
    setting: dict
    scenario: Scenario

    @property
    def folder_name(self) -> str:
        """A folder name made of the label (``sync_dp-restart``)."""
        return re.sub(r"[^A-Za-z0-9_.]+", "-", self.label).strip("-") or "base"


def _overridden(overrides: list[str]) -> set[str]:
    return {assignment.partition("=")[0].strip() for assignment in overrides}


def load_variants(
    path: str | Path, overrides: list[str] = (), allow_large: bool = True, warnings: list[str] | None = None,
    trace_dirs: tuple[Path, ...] | list[Path] = (),
) -> tuple[Scenario, list[Variant]]:
    """The base scenario and its variants (one, unlabelled, when nothing is compared).

    Every variant is validated here, so a bad value in ``compare`` fails before anything runs, as the
    usual one-line :class:`~sim.loading.ScenarioError` naming the variant. As for
    :func:`~sim.loading.load_scenario`: without ``allow_large`` the variants' cost together is held to
    the ceiling, ``warnings`` receives each variant's likely mistakes (once each), and trace files must
    lie in the scenario's folder or one of ``trace_dirs``.
    """
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment, f"{path}: --set")
    return variants_of(data, path, _overridden(list(overrides)), allow_large, warnings, trace_dirs)


def variants_of(
    data: dict, path: Path, overridden: set[str] = frozenset(), allow_large: bool = True,
    warnings: list[str] | None = None, trace_dirs: tuple[Path, ...] | list[Path] = (),
) -> tuple[Scenario, list[Variant]]:
    """:func:`load_variants` of YAML data already read from ``path`` (and overridden at the keys
    ``overridden``)."""
    path = Path(path)
    roots = tuple(trace_dirs)
    base = validate(data, str(path), roots)
    compared = base.compare
    if not compared or overridden & set(compared):
        variants = [Variant("", {}, base)]
    else:
        variants = []
        for i in range(len(next(iter(compared.values())))):
            setting = {key: values[i] for key, values in compared.items()}
            label = ", ".join(str(value) for value in setting.values())
            where = f"{path} [compare variant {i}: {label}]"
            try:
                scenario = variant(data, setting, where, f"{path}: compare", roots, path.parent)
            except ScenarioError as err:
                raise _compare_value_error(err, data, path, where, setting, i) from None
            variants.append(Variant(label, setting, scenario))
        if len({v.folder_name for v in variants}) != len(variants):  # e.g. values that differ only in case
            variants = [Variant(f"{i} {v.label}", v.setting, v.scenario) for i, v in enumerate(variants)]
    if not allow_large:
        check_cost([(v.scenario, v.scenario.replications) for v in variants], data, str(path))
    if warnings is not None:
        for v in variants:
            warnings.extend(line for line in mistakes(v.scenario, data, str(path)) if line not in warnings)
    return base, variants


def _compare_value_error(err: ScenarioError, data: dict, path: Path, where: str, setting: dict, i: int) -> ScenarioError:
    """A variant refused at one of its compared keys is the compare list's fault: name that entry
    (``compare.training.policy[0] (line 44)``), not the base scenario's key."""
    found = re.match(rf"{re.escape(where)}: (?P<key>\S+)(?: \((?:line \d+|from [^)]*)\))?: (?P<message>.*)", str(err))
    if found is None or found["key"] not in setting:
        return err
    return ScenarioError(f"{located(data, ('compare', found['key'], i), str(path))}: {found['message']}")

