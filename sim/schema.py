"""Building blocks of the scenario model: unit-carrying field types and the frozen base model.

``Seconds``, ``PositiveSeconds``, ``Bandwidth``, ``Bytes`` and ``Count`` accept unit strings (see
:mod:`sim.units`) or plain SI numbers and validate to floats; their JSON Schema says so, with a pattern
per unit (:func:`unit_pattern`) and the bound (no sign where the value must be >= 0, a non-zero digit
where it must be > 0), so editors complete and check them as ``chaossim validate`` does.
:func:`readable` turns a validated model back into unit strings that parse to the same floats (a
resolved scenario says ``7d``, not ``604800.0``). :class:`Model` forbids unknown keys and is frozen.
:class:`LocatedError` lets a cross-field check say where, below its model, the problem is.
"""

from __future__ import annotations

import math
import types
import typing
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from .units import parse_bandwidth, parse_bytes, parse_count, parse_duration

# Patterns of the unit strings each parser accepts (ECMA regular expressions, as JSON Schema uses), so
# an editor rejects '7 dayz' or '2GBps' as `chaossim validate` does. A test holds them to the parsers.
_MANTISSA = r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
_NUMBER = rf"[+-]?{_MANTISSA}"
_UNITS = {
    parse_duration: r"(ns|us|µs|ms|min|s|m|h|d|w|y)",
    parse_bandwidth: r"([kKmMgGtT]?(bps|bit/s|b/s))",
    parse_bytes: r"(([kKmMgGtTpP][iI]?)?B|b)",
    parse_count: r"[kKMBGT]",
}


def unit_pattern(parser, minimum: str | None = None) -> str:
    """The pattern of ``parser``'s strings, for any value (``minimum`` None), a value >= 0 (``"ge0"``: no
    minus sign) or a value > 0 (``"gt0"``: also some non-zero digit before any exponent, or inf)."""
    number = _NUMBER if minimum is None else rf"\+?{_MANTISSA}"
    if parser is parse_duration:
        sign = "-?" if minimum is None else ""
        parts = rf"{sign}((\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+)\s*{_UNITS[parser]}\s*)+"
        body = rf"(inf|infinity|{number}|{parts})"
    else:
        body = rf"{number}\s*{_UNITS[parser]}?"
    nonzero = r"(?=\s*(inf|infinity)\s*$|[^eE]*[1-9])" if minimum == "gt0" else ""
    return rf"^{nonzero}\s*{body}\s*$"


UNIT_PATTERNS = {parser: unit_pattern(parser) for parser in _UNITS}


def _unit(parser, description: str, minimum: str | None = None):
    """A unit type: parsed by ``parser``, bounded below (``minimum``: None, "ge0" or "gt0"), with a JSON
    Schema that says both, so an editor refuses '-5h' or '0s' where ``chaossim validate`` does."""
    number: dict[str, Any] = {"type": "number"}
    bound: dict[str, Any] = {}
    if minimum == "ge0":
        number["minimum"], bound["ge"] = 0, 0
    elif minimum == "gt0":
        number["exclusiveMinimum"], bound["gt"] = 0, 0
    schema = {"anyOf": [{"type": "string", "pattern": unit_pattern(parser, minimum)}, number],
              "description": description}
    return Annotated[float, BeforeValidator(parser), Field(**bound), WithJsonSchema(schema)]


_DURATION = "duration: '500ms', '30s', '2h45m', '7d', '1y', 'inf' or seconds"
Seconds = _unit(parse_duration, _DURATION, "ge0")
PositiveSeconds = _unit(parse_duration, _DURATION, "gt0")
Bandwidth = _unit(parse_bandwidth, "bandwidth in bits per second: '2Gbps', '500Mbps' or bits/s", "ge0")
Bytes = _unit(parse_bytes, "size: '95GB', '16GiB' or bytes", "gt0")
Count = _unit(parse_count, "count: '12B', '4M', '1.5k' or a number", "gt0")


def strict_json(document: Any) -> Any:
    """A JSON Schema (or any document) with infinite numbers written as ``"inf"``: JSON has no Infinity,
    and every field that can be infinite is a duration, whose parser reads ``"inf"``."""
    if isinstance(document, dict):
        return {k: strict_json(v) for k, v in document.items()}
    if isinstance(document, list):
        return [strict_json(v) for v in document]
    if isinstance(document, float) and not math.isfinite(document):
        return "inf" if document > 0 else "-inf"
    return document


class Model(BaseModel):
    """Frozen, unknown keys forbidden, and booleans are never numbers.

    pydantic reads ``true`` as 1 for an int or float field (``chips: true`` would be one chip); YAML
    writers mean a boolean by it, so a boolean is accepted only where a field's type says bool.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                # pydantic keeps a field's top-level Annotated validators in its metadata
                parsed = field is not None and any(isinstance(m, BeforeValidator) for m in field.metadata)
                if field is not None and _boolean_in(value) and not parsed and not _admits_bool(field.annotation):
                    got = "the boolean " + str(value).lower() if isinstance(value, bool) else "a boolean in the list"
                    raise LocatedError(f"expected {_expected(field.annotation)}, got {got}", (key,))
        return data


class LocatedError(ValueError):
    """A cross-field check that knows where, below the model that raised it, the problem is.

    The loader appends ``loc`` (keys and list indices) to the model's own YAML path, so the user
    reads ``topology.regions[0].islands[1].chip (line 12)`` rather than ``(top level)``.
    """

    def __init__(self, message: str, loc: tuple = ()):
        super().__init__(message)
        self.loc = loc


def _schema_also(*alternatives: dict):
    """A ``__get_pydantic_json_schema__`` that also admits the shorthands a ``before`` validator accepts."""

    def hook(cls, core_schema, handler):
        return {"anyOf": [*alternatives, handler.resolve_ref_schema(handler(core_schema))]}

    return classmethod(hook)



def _boolean_in(value: Any) -> bool:
    """A boolean value, or a list holding one (``at: [true]``)."""
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))


def _admits_bool(annotation: Any) -> bool:
    """True if the annotation (through Annotated, unions, containers) can hold a bool or anything."""
    if annotation is bool or annotation is Any:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True  # the model's own validators decide (``surrogate: false`` is a shorthand)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    if origin is Annotated:
        # a unit type's parser refuses booleans itself, with the unit's own wording
        parsers = any(isinstance(m, BeforeValidator) for m in getattr(annotation, "__metadata__", ()))
        return parsers or _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return any(_admits_bool(arg) for arg in typing.get_args(annotation))
    return False


def _expected(annotation: Any) -> str:
    """A short name of what a field holds, for the message."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _expected(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_expected(a) for a in typing.get_args(annotation) if a is not type(None)))
    if origin is list:
        return "a list"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    return "a value"


# ------------------------------------------------------------------------------- readable resolved values

# Units a resolved value is written back in, largest first: the first whose text parses back to the
# exact same float is used, so a resolved scenario says '7d', '2Gbps', '12B' and still loads unchanged.
_WRITE_UNITS = {
    parse_duration: (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6)),
    parse_bandwidth: (("Tbps", 1e12), ("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3), ("bps", 1.0)),
    parse_bytes: (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)),
    parse_count: (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)),
}


def unit_text(parser, value: float) -> str | float:
    """``value`` as the unit string ``parser`` reads back exactly (``604800.0`` -> ``'7d'``)."""
    if not math.isfinite(value):
        return "inf" if value > 0 else value
    units = _WRITE_UNITS[parser]
    if value == 0:  # in the base unit: a zero detect time reads 0s, not 0d
        return "0" + next(unit for unit, size in units if size == 1.0)
    # the largest unit with a short exact text first (50000h, not 2083.3333333333335d), then any exact text
    for short in (True, False):
        for unit, size in units:
            number = value / size
            if abs(number) < 1 and (unit, size) != units[-1]:
                continue  # 30ms, not 0.03s
            for text in ((f"{number:.6g}",) if short else (f"{number:.12g}", repr(number))):
                if (not short or "e" not in text) and parser(f"{text}{unit}") == value:
                    return f"{text}{unit}"
    return value


def field_parser(info) -> Any:
    """The unit parser (``parse_duration``, ...) of a model field, or None for a plain field."""
    found = [m.func for m in info.metadata if callable(getattr(m, "func", None))]
    stack = [info.annotation]
    while stack:
        annotation = stack.pop()
        found += [m.func for m in getattr(annotation, "__metadata__", ()) if callable(getattr(m, "func", None))]
        stack.extend(typing.get_args(annotation))
    return next((f for f in found if f in _WRITE_UNITS), None)


def readable(model: BaseModel, dumped: dict | None = None) -> dict:
    """``model.model_dump(mode="json")`` with every unit-carrying value as its unit string."""
    dumped = model.model_dump(mode="json") if dumped is None else dumped
    for name, info in type(model).model_fields.items():
        dumped[name] = _readable_value(getattr(model, name), dumped[name], field_parser(info))
    return dumped


def _readable_value(value: Any, dumped: Any, parser) -> Any:
    if isinstance(value, BaseModel):
        return readable(value, dumped)
    if isinstance(value, (list, tuple)) and isinstance(dumped, list):
        return [_readable_value(v, d, parser) for v, d in zip(value, dumped)]
    if isinstance(value, dict) and isinstance(dumped, dict):
        return {k: _readable_value(value[k], d, parser) for k, d in dumped.items()}
    if parser is not None and isinstance(value, float) and not isinstance(value, bool):
        return unit_text(parser, value)
    return dumped
