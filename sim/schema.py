"""Building blocks of the scenario model: unit-carrying field types and the frozen base model.

``Duration``, ``Seconds``, ``Bandwidth``, ``Bytes`` and ``Count`` accept unit strings (see
:mod:`sim.units`) or plain SI numbers and validate to floats; their JSON Schema says so, so editors
complete and check them. :class:`Model` forbids unknown keys and is frozen. :class:`LocatedError` lets a
cross-field check say where, below its model, the problem is.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from .units import parse_bandwidth, parse_bytes, parse_count, parse_duration


def _unit(parser, description: str):
    schema = {"anyOf": [{"type": "string"}, {"type": "number"}], "description": description}
    return Annotated[float, BeforeValidator(parser), WithJsonSchema(schema)]


Duration = _unit(parse_duration, "duration: '500ms', '30s', '2h45m', '7d', '1y' or seconds")
Seconds = Annotated[Duration, Field(ge=0)]
PositiveSeconds = Annotated[Duration, Field(gt=0)]
Bandwidth = Annotated[_unit(parse_bandwidth, "bandwidth: '2Gbps', '500Mbps' or bits/s"), Field(ge=0)]
Bytes = Annotated[_unit(parse_bytes, "size: '95GB', '16GiB' or bytes"), Field(gt=0)]
Count = Annotated[_unit(parse_count, "count: '12B', '4M', '1.5k' or a number"), Field(gt=0)]


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
