"""Scenario files in: YAML loading, ``--set`` overrides, and one-line errors.

Every problem with a scenario (a missing file, malformed YAML, an unknown key, a wrong unit, a
negative duration, an empty topology, an unknown island in a fault target) becomes a
:class:`ScenarioError` whose message is one line naming the file, the YAML path, the line where it
can, and what was expected::

    scenarios/x.yaml: topology.regions[0].islands[0].chips (line 9): expected an integer > 0, got -4

The CLI prints that line and exits with code 2; nothing else is printed.
"""

from __future__ import annotations

import copy
import io
import os
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .scenario import Scenario


class ScenarioError(ValueError):
    """A bad scenario; ``str(err)`` is the one-line message for the user."""


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def read_yaml(path: Path) -> Any:
    """The YAML document at ``path`` with line information kept (ruamel round-trip types)."""
    if not path.exists():
        raise ScenarioError(f"{path}: no such file")
    if path.is_dir():
        raise ScenarioError(f"{path}: is a folder, expected a YAML scenario file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read: {err}") from None
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = (err.problem or err.context or "malformed YAML").strip()
        raise ScenarioError(f"{path}{where}: malformed YAML: {problem}") from None
    except YAMLError as err:
        raise ScenarioError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        got = "an empty document" if data is None else "a list" if isinstance(data, list) else f"the value {data!r:.40}"
        raise ScenarioError(f"{path}: expected a mapping of scenario sections (name, seed, topology, ...), got {got}")
    return data


def parse_value(text: str) -> Any:
    """A ``--set`` value read as YAML: ``2`` is an int, ``30s`` a string, ``[1, 2]`` a list."""
    try:
        return YAML(typ="safe").load(io.StringIO(text))
    except YAMLError:
        return text


def apply_override(data: Any, assignment: str, source: str = "--set") -> None:
    """Apply ``dotted.key=value`` in place; list items are addressed by index (``regions.0.name``)."""
    if "=" not in assignment:
        raise ScenarioError(f"{source} {assignment!r}: expected dotted.key=value")
    key, _, raw = assignment.partition("=")
    set_path(data, key.strip(), parse_value(raw), source)


def set_path(data: Any, key: str, value: Any, source: str = "--set") -> None:
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(
                    f"{source} {key}: {'.'.join(parts[:depth])} is a list of {len(node)} item(s); "
                    f"expected an index below {len(node)}, got {part!r}"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ScenarioError(f"{source} {key}: {'.'.join(parts[:depth])} is a value, not a section")


def variant(data: Any, setting: dict, where: str, source: str) -> Scenario:
    """The scenario ``data`` with each dotted key of ``setting`` set to its value, validated.

    A sweep point and a compared variant are built this way; neither sweeps nor compares again.
    ``where`` names the variant in errors, ``source`` the origin of a bad key.
    """
    point = copy.deepcopy(data)
    point.pop("sweep", None)
    point.pop("compare", None)
    for key, value in setting.items():
        set_path(point, key, copy.deepcopy(value), source)
    return validate(point, where)


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def _locate(data: Any, loc: tuple) -> tuple[str, int | None]:
    """The YAML path text and the 1-based line of a pydantic error location."""
    node, path, line = data, "", None
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            if isinstance(node, CommentedSeq) and part in (node.lc.data or {}):
                line = node.lc.item(part)[0] + 1
            node, path = node[part], f"{path}[{part}]"
        elif isinstance(node, dict) and isinstance(part, str) and part in node:
            # keys added by --set have no position in the file: keep the parent's line
            if isinstance(node, CommentedMap) and part in (node.lc.data or {}):
                line = node.lc.key(part)[0] + 1
            node, path = node[part], f"{path}.{part}" if path else part
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue  # the tag of a discriminated union (faults[i] is a chip_failure ...)
        else:
            path = f"{path}.{part}" if path and isinstance(part, str) else (f"{path}[{part}]" if path else str(part))
            node = None
    return path or "(top level)", line


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class at a location, to list the keys it accepts.

    Containers and ``Annotated`` are looked through; a union of models stays a union until the next
    location part names one of its ``kind`` tags (pydantic puts the tag of a discriminated union there).
    """
    candidates = _models(Scenario)
    for part in loc:
        if isinstance(part, int) or not candidates:
            continue
        tagged = [m for m in candidates if typing.get_args(_kind(m)) == (part,)]
        if tagged:
            candidates = tagged
            continue
        owner = next((m for m in candidates if part in m.model_fields), None)
        candidates = _models(owner.model_fields[part].annotation) if owner else []
    return candidates[0] if len(candidates) == 1 else None


def _kind(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("kind")
    return field.annotation if field else None


def _models(tp: Any) -> list[type[BaseModel]]:
    """The model classes a (possibly nested, optional, annotated) type annotation may hold."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _models(typing.get_args(tp)[0])
    if origin in (list, tuple, dict):
        return _models(typing.get_args(tp)[-1]) if typing.get_args(tp) else []
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _models(arg)]
    return []


def describe(err: dict, data: Any, file: str) -> str:
    """One line for one pydantic error."""
    ctx = err.get("ctx") or {}
    # a cross-field check (sim.scenario.LocatedError) says where below its model the problem is
    loc = tuple(err["loc"]) + tuple(getattr(ctx.get("error"), "loc", ()))
    path, line = _locate(data, loc)
    where = f"{file}: {path}" + (f" (line {line})" if line else "")
    kind, msg = err["type"], err["msg"]
    tag = str(ctx.get("discriminator", "kind")).strip("'")
    if kind == "union_tag_invalid":
        return f"{where}: unknown {tag} {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return f"{where}: required key {tag!r} is missing"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        known = f" (expected one of: {', '.join(model.model_fields)})" if model else ""
        return f"{where}: unknown key {loc[-1]!r}{known}"
    if kind == "missing":
        return f"{where}: required key is missing"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if "input" in err and kind != "value_error" and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} ({err['input']!r})" if " got " in msg else f"{msg}, got {err['input']!r}"
    return f"{where}: {msg}"


def validate(data: Any, file: str) -> Scenario:
    try:
        scenario = Scenario.model_validate(_plain(data))
    except ValidationError as err:
        errors = err.errors(include_url=False)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ScenarioError(describe(errors[0], data, file) + more) from None
    scenario = _absolute_trace_paths(scenario, Path(file).parent)
    check_targets(scenario, data, file)
    return scenario


def _absolute_trace_paths(scenario: Scenario, folder: Path) -> Scenario:
    """Trace files are named relative to their scenario file; keep them absolute from here on, so the
    resolved scenario in a results folder, and a sweep's workers, find the same file."""
    from .scenario import TraceReplay

    faults = [
        f.model_copy(update={"file": str((folder / f.file).resolve())})
        if isinstance(f, TraceReplay) and not Path(f.file).is_absolute() else f
        for f in scenario.faults
    ]
    return scenario.model_copy(update={"faults": faults}) if faults != scenario.faults else scenario


def check_targets(scenario: Scenario, data: Any, file: str) -> None:
    """Fault targets must name islands, regions and links that exist; trace files must parse."""
    from .faults import matching_islands, matching_links, read_trace
    from .scenario import LinkDegradation, LinkPartition, TraceReplay
    from .topology import build_topology

    topology = build_topology(scenario)
    for index, fault in enumerate(scenario.faults):
        if isinstance(fault, TraceReplay):
            path, line = _locate(data, ("faults", index))
            where = f"{file}: {path}" + (f" (line {line})" if line else "")
            read_trace(fault, topology, Path(file).parent, where)
            continue
        path, line = _locate(data, ("faults", index, "target"))
        where = f"{file}: {path}" + (f" (line {line})" if line else "")
        try:
            if isinstance(fault, (LinkDegradation, LinkPartition)):
                matching_links(fault.target, topology, where)
            else:
                matching_islands(fault.target, topology, where)
        except ValueError as err:
            raise ScenarioError(str(err)) from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override and validate a scenario file; every failure is a one-line ScenarioError."""
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment, f"{path}: --set")
    return validate(data, str(path))


def scenario_yaml(scenario: Scenario, folder: Path | None = None) -> str:
    """The resolved scenario (every default filled in, units readable: ``7d``, ``2Gbps``) as YAML that
    loads back unchanged. Trace files are written relative to ``folder``, where the YAML is to be
    saved, so that it loads back from there and names no absolute path."""
    from .schema import readable

    data = readable(scenario)
    if folder is not None:
        for fault in data.get("faults", []):
            if fault.get("kind") == "trace" and Path(fault["file"]).is_absolute():
                fault["file"] = os.path.relpath(fault["file"], Path(folder).resolve())
    stream = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    yaml.dump(_finite_json(data), stream)
    return stream.getvalue()


def _finite_json(data: Any) -> Any:
    """pydantic dumps inf as the string 'Infinity'; write 'inf', which the unit parsers accept."""
    if isinstance(data, dict):
        return {k: _finite_json(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite_json(v) for v in data]
    if data == "Infinity":
        return "inf"
    return data
