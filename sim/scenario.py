"""The typed scenario model: what a YAML scenario file may say, with every default filled in.

A scenario has the sections ``topology`` (what exists), ``workload`` (what is trained), ``training``
(the strategy under test and how it reacts to failures), ``faults`` (what breaks, where and when),
``surrogate`` (the small real model whose parameters are merged), ``hypotheses`` and ``halt``
(steady-state checks), and ``sweep`` (factors for ``chaossim sweep``). Every model is frozen and
rejects unknown keys, so a typo is an error that names its YAML path rather than a silently ignored
setting. Quantities are unit strings (see :mod:`sim.units`) and become SI floats on validation;
``model_dump(mode="json")`` therefore gives the *resolved* scenario, which loads back unchanged.

Loading from files, ``--set`` overrides and error formatting live in :mod:`sim.loading`.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from . import distributions as dist
from .syncer import GraceMode, MergeWeighting
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


# --------------------------------------------------------------------------------------------- hardware


class ChipSpec(Model):
    """A chip type; the built-in catalog (:mod:`sim.hardware`) can be extended or overridden."""

    peak_flops: Count = Field(description="peak bf16 FLOP/s per chip, e.g. '459T'")
    hbm: Bytes | None = None
    chips_per_host: int = Field(4, gt=0)
    chips_per_cube: int = Field(64, gt=0)
    dcn_bandwidth: Bandwidth | None = Field(None, description="per-chip data-centre network bandwidth")


# --------------------------------------------------------------------------------------------- topology


class IslandSpec(Model):
    name: str = Field(min_length=1)
    chip: str
    chips: int = Field(gt=0, description="chips in one island (one SPMD slice / one learner)")
    count: int = Field(1, ge=1, description="repeat this island; copies are named name-0, name-1, ...")
    spares: int = Field(0, ge=0, description="hot spare units (of elastic.unit size) for on_failure: spares")


class RegionSpec(Model):
    name: str = Field(min_length=1)
    islands: list[IslandSpec] = Field(min_length=1)


class LinkSpec(Model):
    bandwidth: Bandwidth
    latency: Seconds = 0.0


class LinkOverride(LinkSpec):
    between: tuple[str, str]


class SyncerSpec(Model):
    region: str | None = Field(None, description="region hosting the synchronizer (default: the first)")


class Topology(Model):
    regions: list[RegionSpec] = Field(min_length=1)
    default_link: LinkSpec = LinkSpec(bandwidth=2e9, latency=0.03)
    links: list[LinkOverride] = []
    intra_region: LinkSpec = Field(
        LinkSpec(bandwidth=100e12, latency=0.0005),
        description="aggregate data-centre network between islands of one region (default ~2k chips x 50 Gbps)",
    )
    syncer: SyncerSpec = SyncerSpec()

    @model_validator(mode="after")
    def _names_are_consistent(self) -> Topology:
        regions = [r.name for r in self.regions]
        if len(set(regions)) != len(regions):
            raise LocatedError(f"region names must be unique, got {regions}", ("regions",))
        expanded = [i.name if i.count == 1 else f"{i.name}-{k}" for r in self.regions for i in r.islands
                    for k in range(i.count)]
        specs = [i.name for r in self.regions for i in r.islands]
        if len(set(specs)) != len(specs) or len(set(expanded)) != len(expanded):
            raise LocatedError(
                f"island names must be unique (copies of an island with count > 1 are name-0, name-1, ...), "
                f"got {expanded}", ("regions",))
        for k, link in enumerate(self.links):
            for end in link.between:
                if end not in regions:
                    raise LocatedError(
                        f"link between {list(link.between)}: unknown region {end!r} (known: {regions})",
                        ("links", k, "between"),
                    )
        if self.syncer.region is not None and self.syncer.region not in regions:
            raise LocatedError(f"syncer region {self.syncer.region!r} is not one of {regions}", ("syncer", "region"))
        return self


# --------------------------------------------------------------------------------------------- workload


class Workload(Model):
    params: Count = Field(description="model parameters, e.g. '12B'")
    tokens_per_step: Count = Field(description="global tokens per step per island group, e.g. '4M'")
    step_time: Literal["auto"] | PositiveSeconds = Field(
        "auto", description="'auto' derives 6*params*tokens/(chips*peak*mfu) per island"
    )
    mfu: float = Field(0.45, gt=0, le=1)
    bytes_per_value: float = Field(2.0, gt=0, description="bytes per gradient value on the wire (bf16 = 2)")


# --------------------------------------------------------------------------------------------- training


class Policy(str, Enum):
    SYNC_DP = "sync_dp"
    ELASTIC_DP = "elastic_dp"
    DILOCO = "diloco"
    STREAMING_DILOCO = "streaming_diloco"
    DECOUPLED_DILOCO = "decoupled_diloco"


class OnFailure(str, Enum):
    RESTART = "restart"
    ELASTIC = "elastic"
    SPARES = "spares"


class PauseConflict(str, Enum):
    JOIN = "join"  # a failure during a reconfiguration pause joins it
    RESTART = "restart"  # ... or starts the pause over


class BlastRadius(str, Enum):
    CHIP = "chip"
    HOST = "host"
    CUBE = "cube"
    ISLAND = "island"


class Checkpoint(Model):
    interval: Literal["young", "daly"] | PositiveSeconds = Field(
        "daly", description="fixed interval of useful work between checkpoints, or 'young' / 'daly' from the job MTBF"
    )
    write_time: Seconds = Field(60.0, description="blocking checkpoint write time (C)")


class Recovery(Model):
    detect: Seconds = Field(120.0, description="failure detection (part of D)")
    reschedule: Seconds = Field(480.0, description="rescheduling onto a new allocation (part of D)")
    reload: Seconds = Field(300.0, description="restoring the checkpoint on the new allocation (R)")


class Elastic(Model):
    unit: BlastRadius = Field(
        BlastRadius.CUBE, description="smallest unit an island can drop (a failure drops the larger of this and its blast radius)"
    )
    downscale: Seconds = Field(60.0, description="pause to drop a failed unit")
    upscale: Seconds = Field(60.0, description="pause to re-add a repaired unit")
    during_pause: PauseConflict = PauseConflict.JOIN


class Spares(Model):
    swap: Seconds = Field(60.0, description="time to swap a hot spare in (replaces detect+reschedule)")


class Grace(Model):
    mode: GraceMode = GraceMode.ADAPTIVE
    gamma: float = Field(0.5, ge=0, lt=1)
    ema_alpha: float = Field(0.5, gt=0, le=1, description="weight of the newest sample in the moving averages")
    fixed: Seconds = 0.0
    max: Seconds = math.inf


class Outer(Model):
    lr: float = Field(0.7, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class Training(Model):
    policy: Policy = Policy.SYNC_DP
    on_failure: OnFailure = OnFailure.RESTART
    checkpoint: Checkpoint = Checkpoint()
    recovery: Recovery = Recovery()
    elastic: Elastic = Elastic()
    spares: Spares = Spares()
    inner_steps: int = Field(24, ge=1, description="H: inner steps between outer syncs")
    fragments: int = Field(24, ge=1, description="P: parameter fragments (streaming / decoupled)")
    overlap: int = Field(2, ge=0, description="tau: steps over which a fragment's sync is overlapped")
    quorum: int = Field(1, ge=1, description="K: minimum learners per merge (decoupled)")
    grace: Grace = Grace()
    merge: MergeWeighting = MergeWeighting.TOKEN_WEIGHTED
    averaging: Literal["rda", "mean"] = "rda"
    outer: Outer = Outer()
    bits: int = Field(16, ge=1, le=32, description="bits per value of synced (outer) gradients")
    round_timeout: PositiveSeconds = Field(600.0, description="diloco: how long a round waits for a down learner")

    @model_validator(mode="after")
    def _fragments_fit(self) -> Training:
        if self.policy is Policy.SYNC_DP and self.on_failure is OnFailure.ELASTIC:
            raise ValueError("sync_dp restarts on failure: use policy elastic_dp for elastic lockstep training")
        if self.policy in (Policy.STREAMING_DILOCO, Policy.DECOUPLED_DILOCO) and self.inner_steps % self.fragments:
            raise ValueError(
                f"inner_steps ({self.inner_steps}) must be a multiple of fragments ({self.fragments}): "
                "each fragment syncs once every inner_steps / fragments steps"
            )
        return self


# --------------------------------------------------------------------------------------------- faults


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
    lifetime: Literal["exponential", "weibull"] = "exponential"
    shape: float = Field(1.0, gt=0, description="Weibull shape k of chip lifetimes")
    start: Literal["new", "stationary"] = Field(
        "new", description="Weibull: every chip new at t = 0, or ages drawn from the renewal equilibrium"
    )
    blast_radius: BlastRadius = BlastRadius.CHIP
    repair: RepairSpec = RepairSpec(distribution="lognormal", median=7200.0, sigma=0.6)


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


# --------------------------------------------------------------------------------------------- the rest


class Surrogate(Model):
    model: Literal["mlp", "off"] = "off"
    dim: int = Field(16, ge=1)
    hidden: int = Field(32, ge=1)
    classes: int = Field(8, ge=2)
    batch: int = Field(16, ge=1)
    inner_lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    non_iid: float = Field(0.5, ge=0, le=1)
    resolution: float = Field(0.1, gt=0, le=1, description="surrogate steps per simulated step")
    max_steps_per_learner: int = Field(20000, ge=1, description="cap on surrogate steps per learner per run")
    eval_every: Seconds = Field(0.0, description="evaluation period of the global model (0: 1/200 of the run)")

    __get_pydantic_json_schema__ = _schema_also({"enum": ["off", False, None]})

    @model_validator(mode="before")
    @classmethod
    def _off_shorthand(cls, data: Any) -> Any:
        if data in ("off", False, None):
            return {"model": "off"}
        return data


class Bound(Model):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_bound(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError(f"a bound on {self.metric!r} needs 'min' or 'max'")
        return self


class SweepSpec(Model):
    grid: dict[str, list[Any]] = {}
    zip: dict[str, list[Any]] = {}
    seeds: list[int] = []

    @model_validator(mode="after")
    def _zip_lengths_match(self) -> SweepSpec:
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip factors must have equal lengths, got {sorted(lengths)}")
        return self


# which selector keys each fault kind understands (a target of the wrong kind must not mean "all")
_SELECTORS = {
    "chip_failure": {"islands", "regions"},
    "island_outage": {"islands", "regions"},
    "slowdown": {"islands", "regions"},
    "trace": set(),
    "region_outage": {"regions"},
    "link_degradation": {"links"},
    "link_partition": {"links"},
    "syncer_outage": set(),
}
_SELECTORS_HELP = {
    kind: f"it selects {' or '.join(sorted(keys))}" if keys else "it has no target to select"
    for kind, keys in _SELECTORS.items()
}


def _foreign_selectors(fault) -> str | None:
    target = getattr(fault, "target", None)
    if target is None:
        return None
    for key in ("islands", "regions", "links"):
        if getattr(target, key) is not None and key not in _SELECTORS[fault.kind]:
            return key
    return None


class Scenario(Model):
    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(ge=0)
    duration: PositiveSeconds = Field(description="simulated time per replication (finite)")
    replications: int = Field(1, ge=1)
    chips: dict[str, ChipSpec] = Field({}, description="extra or overriding chip types")
    topology: Topology
    workload: Workload
    training: Training = Training()
    faults: list[Fault] = []
    surrogate: Surrogate = Surrogate()
    hypotheses: list[Bound] = []
    halt: list[Bound] = []
    sweep: SweepSpec | None = None

    @field_validator("duration")
    @classmethod
    def _finite_duration(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("expected a finite duration such as '7d'")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Scenario:
        from .hardware import catalog

        chips = catalog(self.chips)
        for r, region in enumerate(self.topology.regions):
            for k, island in enumerate(region.islands):
                if island.chip not in chips:
                    raise LocatedError(
                        f"island {island.name!r}: unknown chip {island.chip!r} (known: {sorted(chips)})",
                        ("topology", "regions", r, "islands", k, "chip"),
                    )
        names = [f.name for f in self.faults]
        if len(set(names)) != len(names):
            raise LocatedError(f"fault names must be unique, got {names}", ("faults",))
        learners = sum(i.count for r in self.topology.regions for i in r.islands)
        if self.training.policy is Policy.DECOUPLED_DILOCO and self.training.quorum > learners:
            raise LocatedError(
                f"quorum {self.training.quorum} exceeds the {learners} learners (islands) of the topology",
                ("training", "quorum"),
            )
        for k, fault in enumerate(self.faults):
            wrong = _foreign_selectors(fault)
            if wrong:
                raise LocatedError(f"{fault.kind} faults cannot select {wrong}: {_SELECTORS_HELP[fault.kind]}",
                                   ("faults", k, "target", wrong))
        return self
