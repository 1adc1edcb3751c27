"""Building blocks of the scenario model: unit-carrying field types and the frozen base model.

``Duration``, ``Seconds``, ``Bandwidth``, ``Bytes`` and ``Count`` accept unit strings (see
:mod:`sim.units`) or plain SI numbers and validate to floats; their JSON Schema says so, so editors
complete and check them. :class:`Model` forbids unknown keys and is frozen. :class:`LocatedError` lets a
cross-field check say where, below its model, the problem is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

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
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


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

