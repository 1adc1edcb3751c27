"""The fault section of a scenario: what breaks, which targets, when, for how long.

Every fault has a ``name``, a ``kind`` (the discriminator of the :data:`Fault` union), a ``target``
selector in the style of chaos tools (islands / regions / links, with ``mode`` all | one | fixed |
fixed-percent and a ``value``), and stochastic arrivals (``mtbf``) and/or a schedule (``at``, ``every``
with ``jitter``), plus a duration or repair distribution. :mod:`sim.faults` turns these into processes.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from . import distributions as dist
from .schema import Bandwidth, LocatedError, Model, PositiveSeconds, Seconds, _schema_also


class BlastRadius(str, Enum):
    CHIP = "chip"
    HOST = "host"
    CUBE = "cube"
    ISLAND = "island"



class SelectMode(str, Enum):
    ALL = "all"
    ONE = "one"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"


class Target(Model):
    """Which islands / regions / links a fault hits, chaos-tool style (selector + mode + value)."""

    islands: list[str] | None = None
    regions: list[str] | None = None
    links: list[str] | None = Field(None, description="links as 'regionA~regionB'")
    mode: SelectMode = SelectMode.ALL
    value: float | None = Field(None, ge=0)

    __get_pydantic_json_schema__ = _schema_also({"const": "all"})

    @model_validator(mode="before")
    @classmethod
    def _all_shorthand(cls, data: Any) -> Any:
        if data == "all":
            return {}
        if isinstance(data, str):
            raise ValueError(f"expected 'all' or a mapping with islands/regions/links and mode, got {data!r}")
        return data

    @model_validator(mode="after")
    def _names_listed_once(self) -> Target:
        for key in ("islands", "regions", "links"):
            names = getattr(self, key)
            if names is not None and not names:
                raise LocatedError(f"an empty {key} list selects nothing; leave it out to select all", (key,))
            if names is not None and len(set(names)) != len(names):
                raise LocatedError(f"{key} names must be listed once, got {names}", (key,))
        return self

    @model_validator(mode="after")
    def _value_fits_mode(self) -> Target:
        if self.mode in (SelectMode.FIXED, SelectMode.FIXED_PERCENT) and self.value is None:
            raise ValueError(f"mode {self.mode.value} needs a value")
        if self.mode is SelectMode.FIXED_PERCENT and self.value is not None and self.value > 100:
            raise ValueError(f"fixed-percent value must be <= 100, got {self.value}")
        return self


class RepairSpec(Model):
    """A repair-time (or outage-length) distribution."""

    distribution: Literal["constant", "exponential", "lognormal", "weibull"] = "constant"
    value: Seconds | None = Field(None, description="constant")
    mean: PositiveSeconds | None = Field(None, description="exponential, weibull")
    median: PositiveSeconds | None = Field(None, description="lognormal")
    sigma: float = Field(0.5, gt=0, description="lognormal")
    shape: float = Field(1.0, gt=0, description="weibull")

    __get_pydantic_json_schema__ = _schema_also(
        {"type": ["string", "number"], "description": "shorthand for a constant duration, e.g. '2h'"}
    )

    @model_validator(mode="before")
    @classmethod
    def _duration_shorthand(cls, data: Any) -> Any:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            return {"distribution": "constant", "value": data}
        return data

    @model_validator(mode="after")
    def _has_parameters(self) -> RepairSpec:
        need = {"constant": "value", "exponential": "mean", "lognormal": "median", "weibull": "mean"}[self.distribution]
        if getattr(self, need) is None:
            raise ValueError(f"a {self.distribution} distribution needs '{need}'")
        return self

    def build(self) -> dist.Distribution:
        if self.distribution == "constant":
            return dist.Constant(self.value)
        if self.distribution == "exponential":
            return dist.Exponential(self.mean)
        if self.distribution == "lognormal":
            return dist.LogNormal(self.median, self.sigma)
        return dist.Weibull.from_mean(self.mean, self.shape)


class RepairPipeline(Model):
    """Automatic repair first (a reset, a reboot); with probability ``1 - success`` it fails and the
    unit escalates to a manual repair (a technician, a part), which starts when the automatic one ends."""

    auto: RepairSpec = Field(description="automatic repair time")
    success: float = Field(ge=0, le=1, description="probability that the automatic repair fixes the unit")
    manual: RepairSpec = Field(description="manual repair time, after a failed automatic one")

    def build(self) -> dist.Pipeline:
        return dist.Pipeline(self.auto.build(), self.success, self.manual.build())


def _repair_kind(data: Any) -> str:
    auto = data.get("auto") if isinstance(data, dict) else getattr(data, "auto", None)
    return "pipeline" if auto is not None else "distribution"


Repair = Annotated[
    Annotated[RepairSpec, Tag("distribution")] | Annotated[RepairPipeline, Tag("pipeline")],
    Discriminator(_repair_kind),
]
"""A repair time: a distribution (or a constant shorthand), or a pipeline (``auto`` / ``success`` / ``manual``)."""


class Lemons(Model):
    """Lemon hardware: a fixed share of the targeted hosts (or cubes) fails ``factor`` times as often.

    Chosen once per replication from the fault's random stream. With ``cleared_by_repair`` a lemon
    becomes a normal unit at its first failure that a repair fixed for good: one escalated to a
    manual repair under a repair pipeline (the automatic one cannot replace the bad part), any repair
    otherwise.
    """

    fraction: float = Field(gt=0, le=1, description="share of the units that are lemons")
    factor: float = Field(ge=1, description="failure rate of a lemon over a normal unit")
    unit: BlastRadius = Field(BlastRadius.HOST, description="host or cube")
    cleared_by_repair: bool = False

    @model_validator(mode="after")
    def _unit_is_hardware(self) -> Lemons:
        if self.unit not in (BlastRadius.HOST, BlastRadius.CUBE):
            raise ValueError(f"lemons.unit must be host or cube, got {self.unit.value}")
        return self


class Schedule(Model):
    """Deterministic injections: at fixed times and/or every period (with uniform jitter)."""

    at: list[Seconds] = []
    every: PositiveSeconds | None = None
    start: Seconds = 0.0
    jitter: Seconds = 0.0
    until: Seconds = math.inf


class FaultBase(Model):
    name: str = Field(min_length=1)
    target: Target = Target()
    at: Seconds | list[Seconds] | None = Field(None, description="shorthand for schedule.at")
    every: PositiveSeconds | None = Field(None, description="shorthand for schedule.every")
    jitter: Seconds = 0.0
    schedule: Schedule | None = None
    mtbf: PositiveSeconds | None = Field(None, description="stochastic arrivals: mean time between failures per target")
    duration: RepairSpec | None = Field(None, description="how long the fault lasts (repair time)")
    cause: Literal["random", "systematic"] = Field(
        "random", description="counted apart in failures_by_cause (systematic: a recurring cause, e.g. a bad driver)"
    )

    def arrivals(self) -> Schedule | None:
        """The schedule, merging the ``at``/``every``/``jitter`` shorthands into one object."""
        if self.at is None and self.every is None and self.schedule is None:
            return None
        base = self.schedule or Schedule()
        at = base.at + ([] if self.at is None else (self.at if isinstance(self.at, list) else [self.at]))
        return Schedule(
            at=sorted(at), every=self.every or base.every, start=base.start,
            jitter=self.jitter or base.jitter, until=base.until,
        )

    @model_validator(mode="after")
    def _has_arrivals(self) -> FaultBase:
        if self.mtbf is None and self.arrivals() is None:
            raise ValueError("a fault needs 'mtbf' (stochastic arrivals) or 'at' / 'every' / 'schedule'")
        return self


class ChipFailure(FaultBase):
    kind: Literal["chip_failure"]
    mtbf: PositiveSeconds | None = Field(
        None, description="per-chip mean time between failures, e.g. '50000h' (and/or at/every: one random chip)"
    )
    lifetime: Literal["exponential", "weibull", "lognormal"] = "exponential"
    shape: float = Field(1.0, gt=0, description="Weibull shape k of chip lifetimes")
    sigma: float = Field(1.0, gt=0, description="lognormal lifetimes: sigma of the log (the mean is mtbf)")
    start: Literal["new", "stationary"] = Field(
        "new", description="Weibull: every chip new at t = 0, or ages drawn from the renewal equilibrium"
    )
    blast_radius: BlastRadius = BlastRadius.CHIP
    repair: Repair = RepairSpec(distribution="lognormal", median=7200.0, sigma=0.6)
    lemons: Lemons | None = Field(None, description="a share of the hosts failing more often (exponential lifetimes)")

    @model_validator(mode="after")
    def _lifetime_options(self) -> ChipFailure:
        if self.start == "stationary" and self.lifetime == "lognormal":
            raise ValueError("start: stationary needs weibull lifetimes (lognormal chips start new)")
        if self.lemons is not None and (self.lifetime != "exponential" or self.mtbf is None):
            raise ValueError("lemons need stochastic exponential lifetimes (mtbf, lifetime: exponential)")
        return self

    @property
    def renews_each_chip(self) -> bool:
        """Lifetimes that are not memoryless: every chip's next failure time is kept (memory grows
        with chips); exponential ones are one superposed Poisson stream."""
        return self.mtbf is not None and (self.lifetime == "lognormal" or (self.lifetime == "weibull" and self.shape != 1.0))


class IslandOutage(FaultBase):
    kind: Literal["island_outage"]
    duration: RepairSpec = RepairSpec(value=3600.0)


class RegionOutage(FaultBase):
    kind: Literal["region_outage"]
    duration: RepairSpec = RepairSpec(value=3600.0)


class LinkDegradation(FaultBase):
    kind: Literal["link_degradation"]
    duration: RepairSpec = RepairSpec(value=1800.0)
    bandwidth: Bandwidth | None = Field(None, description="bandwidth during the fault")
    latency: Seconds | None = Field(None, description="latency during the fault")

    @model_validator(mode="after")
    def _degrades_not_cuts(self) -> LinkDegradation:
        if self.bandwidth == 0:
            raise LocatedError("a degraded link keeps a bandwidth > 0; a link that carries nothing is kind: link_partition",
                               ("bandwidth",))
        return self


class LinkPartition(FaultBase):
    kind: Literal["link_partition"]
    duration: RepairSpec = RepairSpec(value=600.0)


class Slowdown(FaultBase):
    kind: Literal["slowdown"]
    duration: RepairSpec = RepairSpec(value=3600.0)
    factor: float = Field(2.0, ge=1, description="step-time multiplier of the selected islands")


class SyncerOutage(FaultBase):
    kind: Literal["syncer_outage"]
    duration: RepairSpec = RepairSpec(value=600.0)


class TraceReplay(Model):
    """Replay a CSV of failures: columns ``time,target[,duration][,kind]`` (see README)."""

    kind: Literal["trace"]
    name: str = Field(min_length=1)
    file: str = Field(description="CSV path, relative to the scenario file")
    blast_radius: BlastRadius = BlastRadius.ISLAND


Fault = Annotated[
    ChipFailure | IslandOutage | RegionOutage | LinkDegradation | LinkPartition | Slowdown | SyncerOutage | TraceReplay,
    Field(discriminator="kind"),
]




# which selector keys each fault kind understands (a target of the wrong kind must not mean "all")
SELECTORS = {
    "chip_failure": {"islands", "regions"},
    "island_outage": {"islands", "regions"},
    "slowdown": {"islands", "regions"},
    "trace": set(),
    "region_outage": {"regions"},
    "link_degradation": {"links"},
    "link_partition": {"links"},
    "syncer_outage": set(),
}
SELECTORS_HELP = {
    kind: f"it selects {' or '.join(sorted(keys))}" if keys else "it has no target to select"
    for kind, keys in SELECTORS.items()
}


def foreign_selector(fault) -> str | None:
    target = getattr(fault, "target", None)
    if target is None:
        return None
    for key in ("islands", "regions", "links"):
        if getattr(target, key) is not None and key not in SELECTORS[fault.kind]:
            return key
    return None

