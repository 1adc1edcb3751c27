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
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean

from .input_limits import MAX_FILE_BYTES, InputLimitError, check_document, check_text
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
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"{path}: {size:,} bytes, larger than the limit of {MAX_FILE_BYTES:,} for a scenario file")
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: not a UTF-8 text file (byte {err.start})") from None
    try:
        check_text(text)
        data = _yaml().load(text)
        check_document(data)
    except InputLimitError as err:
        raise ScenarioError(f"{path}: {err}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: nesting too deep to read") from None
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
                _mark_set(node, int(part), source)
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                if isinstance(node, CommentedMap) and node.lc.data:
                    # the value no longer comes from the file: an error about it must not cite the
                    # line that still says the old one
                    node.lc.data.pop(part, None)
                _mark_set(node, part, source)
            else:
                if node.get(part) is None:
                    node[part] = CommentedMap()  # (a section --set adds can note where its keys came from)
                    _mark_set(node, part, source)
                node = node[part]
        else:
            raise ScenarioError(f"{source} {key}: {'.'.join(parts[:depth])} is a value, not a section")


_SET_BY = "chaossim_set_by"  # attribute of a YAML node: {key or index: the override that set it}


def _mark_set(node: Any, part: Any, source: str) -> None:
    """Note that ``node[part]`` was set by ``source`` (``--set``, a compare variant, a sweep factor),
    so an error about it names that, not a line of the file."""
    if isinstance(node, (CommentedMap, CommentedSeq)):
        marks = getattr(node, _SET_BY, None)
        if marks is None:
            marks = {}
            setattr(node, _SET_BY, marks)
        marks[part] = source.rsplit(": ", 1)[-1]


def _copy_set_marks(source: Any, copied: Any) -> None:
    """Give a deep copy of a YAML document the override marks of the original (deepcopy drops them)."""
    if hasattr(source, _SET_BY):
        setattr(copied, _SET_BY, dict(getattr(source, _SET_BY)))
    if isinstance(source, dict) and isinstance(copied, dict):
        for key, value in source.items():
            if key in copied:
                _copy_set_marks(value, copied[key])
    elif isinstance(source, list) and isinstance(copied, list):
        for value, twin in zip(source, copied):
            _copy_set_marks(value, twin)


def variant(data: Any, setting: dict, where: str, source: str, trace_dirs: tuple[Path, ...] | None = None,
            folder: Path | None = None) -> Scenario:
    """The scenario ``data`` with each dotted key of ``setting`` set to its value, validated.

    A sweep point and a compared variant are built this way; neither sweeps nor compares again.
    ``where`` names the variant in errors, ``source`` the origin of a bad key; ``trace_dirs`` and
    ``folder`` are :func:`validate`'s (``where`` is a label, not a file, so the folder is given).
    """
    point = copy.deepcopy(data)
    _copy_set_marks(data, point)
    point.pop("sweep", None)
    point.pop("compare", None)
    for key, value in setting.items():
        set_path(point, key, copy.deepcopy(value), source)
    return validate(point, where, trace_dirs, folder)


def _plain(data: Any) -> Any:
    """Plain Python values: ruamel's round-trip scalars (a boolean that is an int, a float with
    formatting, a ``!!str``-tagged scalar) would otherwise reach validation and error messages."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    if isinstance(data, ScalarBoolean):
        return bool(data)
    if isinstance(data, TaggedScalar):
        return str(data.value)
    if isinstance(data, bool):
        return data
    if isinstance(data, float):
        return float(data)
    if isinstance(data, int):
        return int(data)
    if isinstance(data, str):
        return str(data)
    return data


def _locate(data: Any, loc: tuple) -> tuple[str, int | str | None]:
    """The YAML path text of a pydantic error location, and where it is: the 1-based line in the file,
    the override that set it (``"--set"``, ``"compare"``, ``"sweep factor"``), or None."""
    node, path, line = data, "", None
    for part in loc:
        set_by = getattr(node, _SET_BY, {}).get(part)  # (an inner override names itself over an outer one)
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            if isinstance(node, CommentedSeq) and part in (node.lc.data or {}):
                line = node.lc.item(part)[0] + 1
            node, path = node[part], f"{path}[{part}]"
        elif isinstance(node, dict) and isinstance(part, str) and part in node:
            # a key whose value came from an override has no line of its own: keep the parent's line
            if isinstance(node, CommentedMap) and part in (node.lc.data or {}):
                line = node.lc.key(part)[0] + 1
            node, path = node[part], f"{path}.{part}" if path else part
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue  # the tag of a discriminated union (faults[i] is a chip_failure ...)
        elif _union_member(part):
            continue  # pydantic names the union member it tried; the user's file has no such key
        else:
            path = f"{path}.{part}" if path and isinstance(part, str) else (f"{path}[{part}]" if path else str(part))
            node = None
        if set_by is not None:
            line = set_by  # the value (and everything below it) came from an override, not the file
    return path or "(top level)", line


def located(data: Any, loc: tuple, file: str) -> str:
    """``file: yaml.path (line N)`` for a location (``(from --set)`` for a value an override set), the
    start of every message about it."""
    path, line = _locate(data, loc)
    if isinstance(line, str):
        return f"{file}: {path} (from {line})"
    return f"{file}: {path}" + (f" (line {line})" if line else "")


_PYDANTIC_TYPES = {"int", "float", "str", "bool", "bytes", "none", "list", "dict", "tuple", "set", "is-instance"}


def _union_member(part: Any) -> bool:
    """True for the labels pydantic gives union members in a location (``literal['auto']``,
    ``function-after[...]``, ``int``): internals that must never reach a message."""
    return isinstance(part, str) and ("[" in part or "(" in part or part in _PYDANTIC_TYPES)


def _clean(loc: tuple) -> tuple:
    return tuple(part for part in loc if not _union_member(part))


_CONSTRAINTS = ("greater_than", "less_than", "too_short", "too_long", "multiple_of", "finite_number")


def _best(errors: list[dict]) -> tuple[dict, list[dict], int]:
    """The error to show, the union alternatives tried at its place, and how many other problems.

    A field typed as a union (``'auto'`` or a duration) gets one error per alternative. The one to
    show is the most specific: the deepest location (a list item rather than the list), then a
    broken constraint (the value parsed but is out of range) over a value that did not parse.
    """
    first = _clean(tuple(errors[0]["loc"]))
    same = [e for e in errors if _clean(tuple(e["loc"]))[: len(first)] == first]
    others = len({_clean(tuple(e["loc"])) for e in errors if e not in same})

    def rank(err: dict) -> tuple:
        return (len(_clean(tuple(err["loc"]))), err["type"].startswith(_CONSTRAINTS), err["type"] != "literal_error")

    best = max(same, key=rank)
    return best, [e for e in same if _clean(tuple(e["loc"])) == _clean(tuple(best["loc"]))], others


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


def describe(err: dict, data: Any, file: str, alternatives: list[dict] = ()) -> str:
    """One line for one pydantic error (``alternatives``: every error of the union it belongs to)."""
    ctx = err.get("ctx") or {}
    # a cross-field check (sim.scenario.LocatedError) says where below its model the problem is
    loc = _clean(tuple(err["loc"])) + tuple(getattr(ctx.get("error"), "loc", ()))
    where = located(data, loc, file)
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
    if kind == "model_type":  # pydantic's "a valid dictionary or instance of Grace" names a Python class
        model = _model_at(loc)
        msg = "expected a mapping" + (f" of the keys {', '.join(model.model_fields)}" if model else "")
    literals = [str(e["ctx"]["expected"]) for e in alternatives if e["type"] == "literal_error" and e.get("ctx")]
    if literals and kind == "value_error" and msg.startswith("expected "):
        # neither alternative parsed: say both ("expected 'auto' or a duration like '30s'")
        msg = f"expected {' or '.join(literals)} or {msg.removeprefix('expected ')}"
    if "input" in err and kind != "value_error" and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} ({err['input']!r})" if " got " in msg else f"{msg}, got {err['input']!r}"
    elif isinstance(err.get("input"), (dict, list)) and kind.endswith("_type") and " got " not in msg:
        msg = f"{msg}, got a {'mapping' if isinstance(err['input'], dict) else 'list'}"
    return f"{where}: {msg}"


def validate(data: Any, file: str, trace_dirs: tuple[Path, ...] | None = None, folder: Path | None = None) -> Scenario:
    """Validate raw YAML data read from ``file``; every failure is a one-line ScenarioError.

    ``folder`` is where relative trace paths start (default: the file's folder; a sweep passes it
    because its ``file`` is a label naming the point). With ``trace_dirs`` (a file-based load:
    ``load_scenario``, sweeps) trace files must lie in that folder or one of those; without, as for
    scenarios built in memory, anywhere.
    """
    folder = Path(file).parent if folder is None else folder
    try:
        check_document(data)  # again after --set and sweep factors, which can bring aliases and long strings too
    except InputLimitError as err:
        raise ScenarioError(f"{file}: {err}") from None
    try:
        scenario = Scenario.model_validate(_plain(data))
    except ValidationError as err:
        best, alternatives, others = _best(err.errors(include_url=False))
        more = f" (and {others} more)" if others else ""
        raise ScenarioError(describe(best, data, file, alternatives) + more) from None
    scenario = _absolute_trace_paths(scenario, folder)
    if trace_dirs is not None:
        check_trace_roots(scenario, file, (folder, *trace_dirs))
    check_targets(scenario, data, file)
    return scenario


def _absolute_trace_paths(scenario: Scenario, folder: Path) -> Scenario:
    """Trace files are named relative to their scenario file; keep them absolute from here on, so the
    resolved scenario in a results folder, and a sweep's workers, find the same file.
    Where they may lie is :func:`check_trace_roots`'s concern.
    """
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
            where = located(data, ("faults", index), file)
            read_trace(fault, topology, Path(file).parent, where)
            continue
        where = located(data, ("faults", index, "target"), file)
        try:
            if isinstance(fault, (LinkDegradation, LinkPartition)):
                matching_links(fault.target, topology, where)
            else:
                matching_islands(fault.target, topology, where)
        except ValueError as err:
            raise ScenarioError(str(err)) from None


def load_scenario(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), allow_large: bool = True,
    warnings: list[str] | None = None, trace_dirs: tuple[Path, ...] | list[Path] = (),
) -> Scenario:
    """Read, override and validate a scenario file; every failure is a one-line ScenarioError.

    Without ``allow_large`` a scenario whose estimated cost passes the ceiling (:mod:`sim.cost`) is
    refused too, as the CLI does unless ``--allow-large`` is given. ``warnings``, when given, receives
    one line per likely mistake (:mod:`sim.lint`). Trace files must lie in the scenario's folder or
    in one of ``trace_dirs`` (``--trace-dir``).
    """
    path = Path(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment, f"{path}: --set")
    scenario = validate(data, str(path), tuple(trace_dirs))
    if not allow_large:
        check_cost([(scenario, scenario.replications)], data, str(path))
    if warnings is not None:
        warnings.extend(mistakes(scenario, data, str(path)))
    return scenario


def mistakes(scenario: Scenario, data: Any, file: str) -> list[str]:
    """The likely mistakes (:mod:`sim.lint`) of ``scenario``, read from ``data`` in ``file``, one line each."""
    from .lint import likely_mistakes

    return [f"{located(data, loc, file)}: {message}" for loc, message in likely_mistakes(scenario)]


def check_trace_roots(scenario: Scenario, file: str, roots: tuple[Path, ...]) -> None:
    """Every trace file (resolved, links followed) lies in one of ``roots``, the scenario's folder
    first, then those the user allowed: a scenario from elsewhere cannot make the simulator read, and
    report on, any file."""
    from .scenario import TraceReplay

    roots = [Path(d).resolve() for d in roots]
    for index, fault in enumerate(scenario.faults):
        if isinstance(fault, TraceReplay) and not any(Path(fault.file).resolve().is_relative_to(r) for r in roots):
            raise ScenarioError(
                f"{file}: faults[{index}].file: trace {fault.file!r} is outside the scenario's folder "
                f"{roots[0]}; move it there or pass --trace-dir {Path(fault.file).parent}"
            )


def check_cost(plans: list[tuple[Scenario, int]], data: Any, file: str, replications_loc: tuple = ("replications",)) -> None:
    """Refuse scenarios (each with its number of replications) whose estimated cost passes the ceiling."""
    from .cost import CostError, check, estimate

    try:
        check([(estimate(scenario), n) for scenario, n in plans], replications_loc)
    except CostError as err:
        raise ScenarioError(f"{located(data, err.loc, file)}: {err}") from None


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
    yaml.width = 4096  # a long trace path stays on its line (a folded scalar is valid YAML but hard to read or grep)
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
