"""The typed scenario model: what a YAML scenario file may say, with every default filled in.

A scenario has the sections ``topology`` (what exists), ``workload`` (what is trained), ``training``
(the strategy under test and how it reacts to failures), ``faults`` (what breaks, where and when),
``surrogate`` (the small real model whose parameters are merged), ``hypotheses`` and ``halt``
(steady-state checks), and ``sweep`` (factors for ``chaossim sweep``). Every model is frozen and
rejects unknown keys, so a typo is an error that names its YAML path rather than a silently ignored
setting. Quantities are unit strings (see :mod:`sim.units`) and become SI floats on validation;
``model_dump(mode="json")`` therefore gives the *resolved* scenario, which loads back unchanged.

Loading from files, ``--set`` overrides and error formatting live in :mod:`sim.loading`; the fault
section's models in :mod:`sim.fault_spec`; unit-carrying field types in :mod:`sim.schema`.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .fault_spec import (
    SELECTORS_HELP,
    BlastRadius,
    ChipFailure,
    Fault,
    FaultBase,
    IslandOutage,
    Lemons,
    LinkDegradation,
    LinkPartition,
    RegionOutage,
    RepairPipeline,
    RepairSpec,
    Schedule,
    SelectMode,
    Slowdown,
    SyncerOutage,
    Target,
    TraceReplay,
    foreign_selector,
)
from .schema import Bandwidth, Bytes, Count, LocatedError, Model, PositiveSeconds, Seconds, _schema_also
from .syncer import GraceMode, MergeWeighting

# The fault models live in sim.fault_spec and the field types in sim.schema; they are re-exported here
# so that ``from sim.scenario import ChipFailure`` names the whole scenario vocabulary in one place.
__all__ = [
    "Bandwidth", "BlastRadius", "Bytes", "ChipFailure", "Count", "Fault", "FaultBase", "GraceMode", "IslandOutage", "Lemons",
    "LinkDegradation", "LinkPartition", "LocatedError", "MergeWeighting", "Model", "PositiveSeconds", "RegionOutage",
    "RepairPipeline", "RepairSpec", "Scenario", "Schedule", "Seconds", "SelectMode", "Slowdown", "SyncerOutage", "Target", "TraceReplay",
]



# --------------------------------------------------------------------------------------------- hardware


def _carries_something(value: float | None) -> float | None:
    """Bandwidth 0 would stall every transfer silently; a link that is down is a link_partition fault."""
    if value == 0:
        raise ValueError("a link needs a bandwidth > 0 (for a link that carries nothing, inject a link_partition fault), got 0")
    return value


class ChipSpec(Model):
    """A chip type; the built-in catalog (:mod:`sim.hardware`) can be extended or overridden."""

    peak_flops: Count = Field(description="peak bf16 FLOP/s per chip, e.g. '459T'")
    hbm: Bytes | None = None
    chips_per_host: int = Field(4, gt=0)
    chips_per_cube: int = Field(64, gt=0)
    dcn_bandwidth: Bandwidth | None = Field(None, description="per-chip data-centre network bandwidth")

    _positive_bandwidth = field_validator("dcn_bandwidth")(_carries_something)


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

    _positive_bandwidth = field_validator("bandwidth")(_carries_something)


class LinkOverride(LinkSpec):
    between: tuple[str, str]


class SyncerSpec(Model):
    region: str | None = Field(None, description="region hosting the synchronizer (default: the first)")


MAX_ISLANDS = 100_000
"""Islands (learners) one topology may expand to: each is an object, names are checked one by one."""


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
        islands = sum(i.count for r in self.regions for i in r.islands)
        if islands > MAX_ISLANDS:
            raise LocatedError(f"{islands:,} islands (counts included), more than the limit of {MAX_ISLANDS:,}", ("regions",))
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


class RoundSchedule(str, Enum):
    """Who decides when a fragment round opens (Decoupled DiLoCo; DESIGN.md, the protocol, rule 3)."""

    SYNCHRONIZER = "synchronizer"  # the synchronizer's slot clock opens rounds; learners re-align
    LEARNER = "learner"  # each learner reports on its own step counter; schedules can drift apart


class ApplyMode(str, Enum):
    """How a learner applies a merged fragment that comes back (protocol rule 5)."""

    KEEP_LOCAL = "keep_local"  # theta = Theta_p + (theta - snapshot): steps since the report are kept
    OVERWRITE = "overwrite"  # theta = Theta_p: steps since the report are discarded (booked lost)


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
    swap: Seconds = Field(60.0, description="time to swap a warm standby (hot spare) in (replaces detect+reschedule)")
    pool: int = Field(0, ge=0, description="spare-pool units per island (elastic.unit size), used when its standbys are out")
    selection: Seconds = Field(600.0, description="host selection time: bringing a spare-pool unit into the job")
    when_empty: Literal["reschedule", "wait"] = Field(
        "reschedule", description="no standby or pool unit free: reschedule (D, as restart) or wait for a repair"
    )


class Grace(Model):
    mode: GraceMode = GraceMode.ADAPTIVE
    gamma: float = Field(0.5, ge=0, lt=1)
    ema_alpha: float = Field(0.5, gt=0, le=1, description="weight of the newest sample in the moving averages")
    fixed: Seconds = 0.0
    max: Seconds = math.inf


class Outer(Model):
    lr: float = Field(0.7, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    anchor: Literal["synchronizer", "received"] = Field(
        "synchronizer", description="what a member's outer gradient is measured from: the synchronizer's "
        "Theta_p before the merge (as published), or the Theta_p the member last received (its own progress only)")


LOCKSTEP_ROUND_TIMEOUT_S = 600.0  # diloco / streaming_diloco: how long a round waits for a down member


class Training(Model):
    policy: Policy = Policy.SYNC_DP
    on_failure: OnFailure = OnFailure.RESTART
    checkpoint: Checkpoint = Checkpoint()
    recovery: Recovery = Recovery()
    elastic: Elastic = Elastic()
    spares: Spares = Spares()
    inner_steps: int = Field(24, ge=1, description="H: inner steps between outer syncs")
    fragments: int = Field(24, ge=1, description="P: parameter fragments (streaming / decoupled), at offsets floor(p*H/P)")
    overlap: int = Field(2, ge=0, description="tau: steps over which a fragment's sync is overlapped")
    quorum: int = Field(1, ge=1, description="K: minimum learners per merge (decoupled)")
    grace: Grace = Grace()
    merge: MergeWeighting = MergeWeighting.TOKEN_WEIGHTED
    averaging: Literal["rda", "mean"] = "rda"
    outer: Outer = Outer()
    bits: int = Field(16, ge=1, le=32, description="bits per value of synced (outer) gradients: bytes on the wire and the surrogate's quantiser")
    schedule: RoundSchedule = Field(RoundSchedule.SYNCHRONIZER, description="decoupled: who opens fragment rounds")
    apply: ApplyMode = Field(ApplyMode.KEEP_LOCAL, description="decoupled: how a merged fragment is applied")
    round_timeout: PositiveSeconds | None = Field(
        None,
        description="decoupled: merge a round short of quorum after this long (none: never, as published); "
        "diloco / streaming_diloco: drop a learner that is down from a round after this long (none: 600 s)",
    )

    @model_validator(mode="after")
    def _fragments_fit(self) -> Training:
        if self.policy is Policy.SYNC_DP and self.on_failure is OnFailure.ELASTIC:
            raise ValueError("sync_dp restarts on failure: use policy elastic_dp for elastic lockstep training")
        if self.policy in (Policy.STREAMING_DILOCO, Policy.DECOUPLED_DILOCO) and self.overlap > self.inner_steps:
            raise LocatedError(
                f"overlap ({self.overlap}) must not exceed inner_steps ({self.inner_steps}): a fragment's sync "
                "would still be overlapped when its next one starts", ("overlap",),
            )
        if self.policy in (Policy.STREAMING_DILOCO, Policy.DECOUPLED_DILOCO) and self.fragments > self.inner_steps:
            raise ValueError(
                f"fragments ({self.fragments}) must not exceed inner_steps ({self.inner_steps}): "
                "fragment p syncs at offset floor(p*H/P) of every H steps, one fragment per offset"
            )
        if self.round_timeout is None and self.policy in (Policy.DILOCO, Policy.STREAMING_DILOCO):
            # lockstep rounds must drop a dead member at some point; the resolved scenario shows the value
            object.__setattr__(self, "round_timeout", LOCKSTEP_ROUND_TIMEOUT_S)
        return self


# --------------------------------------------------------------------------------------------- the rest


class Surrogate(Model):
    model: Literal["mlp", "markov", "off"] = Field(
        "off", description="mlp: classifier on a stationary mixture; markov: bigram model on drifting Markov text")
    dim: int = Field(16, ge=1, description="mlp: input features")
    hidden: int = Field(32, ge=1, description="mlp: hidden units")
    classes: int = Field(8, ge=2, description="mlp: classes")
    vocab: int = Field(32, ge=2, description="markov: vocabulary size (parameters: vocab^2)")
    components: int = Field(4, ge=1, description="markov: text sources, dealt to learners by non_iid")
    drift_steps: int = Field(1000, ge=0, description="markov: steps for a source to move to its next key (0: no drift)")
    batch: int = Field(16, ge=1)
    inner_lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    non_iid: float = Field(0.5, ge=0, le=1)
    resolution: float = Field(0.1, gt=0, le=1, description="surrogate steps per simulated step")
    max_steps_per_learner: int = Field(20000, ge=1, description="cap on surrogate steps per learner per run")
    eval_every: Seconds = Field(0.0, description="evaluation period of the global model (0: 1/200 of the run)")
    log_rounds: bool = Field(False, description="write surrogate_merges.parquet: every played round as the "
                             "surrogate saw it (round, fragment, members, weights, merged or skipped)")

    __get_pydantic_json_schema__ = _schema_also({"enum": ["off", False, None]})

    @model_validator(mode="before")
    @classmethod
    def _off_shorthand(cls, data: Any) -> Any:
        if data in ("off", False, None):
            return {"model": "off"}
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping such as {{model: mlp}} or {{model: markov}}, or off, got {data!r}")
        return data


class Bound(Model):
    metric: str
    min: float | None = None
    max: float | None = None
    if_halted: Literal["fail", "judge"] = Field(
        "fail", description="a hypothesis on a replication that a halt bound stopped early fails, "
        "unless 'judge' (then the values at the halt are judged)",
    )

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



class Until(Model):
    """A work-defined job: the replication ends once this much work is committed (time-to-train)."""

    tokens: Count | None = Field(None, description="tokens to train, e.g. '1T'")
    steps: Count | None = Field(None, description="steps to train")

    @model_validator(mode="after")
    def _one_measure(self) -> Until:
        if (self.tokens is None) == (self.steps is None):
            raise ValueError("until needs exactly one of 'tokens' or 'steps'")
        return self


class Scenario(Model):
    """A scenario file. ``compare`` lists variants that ``chaossim run`` plays side by side on the same
    failures (the same seeds): each dotted key takes its i-th value in variant i (:mod:`sim.compare`)."""

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(ge=0)
    duration: PositiveSeconds = Field(
        description="simulated time per replication (finite); with 'until', the most a replication may take"
    )
    until: Until | None = None
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
    compare: dict[str, list[Any]] = Field(
        {},
        description="variants that `chaossim run` plays side by side on the same failures: dotted keys, "
        "each with one value per variant (equal lengths), e.g. {training.policy: [sync_dp, elastic_dp]}",
    )

    @field_validator("compare")
    @classmethod
    def _compare_is_a_zip(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        lengths = {key: len(values) for key, values in value.items()}
        if any(n == 0 for n in lengths.values()) or len(set(lengths.values())) > 1:
            raise ValueError(f"expected one non-empty list of values per key, all of one length, got {lengths}")
        reserved = [k for k in value if k.split(".")[0] in ("seed", "replications", "sweep", "compare", "duration")]
        if reserved:
            raise ValueError(
                f"{reserved[0]} cannot vary between variants (they share seeds and duration "
                "so that they see the same failures)"
            )
        return value

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
        self._steps_fit(chips)
        names = [f.name for f in self.faults]
        if len(set(names)) != len(names):
            raise LocatedError(f"fault names must be unique, got {names}", ("faults",))
        learners = sum(i.count for r in self.topology.regions for i in r.islands)
        if self.training.policy is Policy.DECOUPLED_DILOCO and self.training.quorum > learners:
            raise LocatedError(
                f"quorum {self.training.quorum} exceeds the {learners} learners (islands) of the topology",
                ("training", "quorum"),
            )
        if self.until is not None and self.training.policy not in (Policy.SYNC_DP, Policy.ELASTIC_DP):
            raise LocatedError(
                f"until (a work-defined job) needs policy sync_dp or elastic_dp, got {self.training.policy.value}",
                ("until",),
            )
        for k, fault in enumerate(self.faults):
            wrong = foreign_selector(fault)
            if wrong:
                raise LocatedError(f"{fault.kind} faults cannot select {wrong}: {SELECTORS_HELP[fault.kind]}",
                                   ("faults", k, "target", wrong))
        return self

    def _steps_fit(self, chips: dict) -> None:
        """A step longer than the whole run trains nothing: a typo in params, chips or step_time."""
        from .hardware import derived_step_time_s
        from .units import format_duration

        workload = self.workload
        for region in self.topology.regions:
            for island in region.islands:
                if workload.step_time == "auto":
                    step = derived_step_time_s(workload.params, workload.tokens_per_step,
                                               island.chips * chips[island.chip].peak_flops, workload.mfu)
                    loc = ("workload", "params")
                else:
                    step, loc = workload.step_time, ("workload", "step_time")
                if step > self.duration:
                    raise LocatedError(
                        f"one step of island {island.name!r} takes {format_duration(step)}, longer than the whole run "
                        f"({format_duration(self.duration)}): nothing would be trained", loc,
                    )
