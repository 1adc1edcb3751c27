"""What a run will cost, estimated from the scenario before anything runs, and the ceiling on it.

A scenario can be valid and still absurd: 10^15 chips fail every microsecond, a million-year run
writes a checkpoint every hour, ``every: 1ns`` injects 10^14 faults a day, ``replications: 1e9``.
Each would run until killed. :func:`estimate` adds up, per replication, the work a run does:

* **fault events**: per fault, the expected arrivals within the duration (stochastic: targets x
  duration / mtbf, with a chip failure's targets its chips; scheduled: ``at`` times plus
  (until - start) / every, times the targets each injection hits; trace: its rows), each a few
  simulation events (the failure, its repair, the recovery phases);
* **checkpoints** (lockstep policies): duration / interval, the interval fixed or Young's
  ``sqrt(2 C M)`` from the job MTBF implied by the fault terms;
* **outer rounds** (DiLoCo family): per learner duration / step time x fragments / inner_steps,
  from the scenario's fields (step time given, or ``6 params tokens / (chips peak mfu)``);
* **surrogate steps and evaluations**: per learner group at most ``max_steps_per_learner``, each
  weighted by batch x parameters over the default MLP step's (:func:`surrogate_step_work`), and
  one evaluation per ``eval_every``;

and the memory that grows with chips (Weibull and lognormal lifetimes keep one float per chip) or with
the surrogate's sizes (:func:`surrogate_bytes`: ``dim: 100000, hidden: 100000`` is 10^10 parameters per
learner; ``batch: 1e9`` on a Decoupled DiLoCo learner a draw of 16 GB and a workspace of 792 GB). ``chaossim run``
and ``sweep`` refuse a plan whose total over replications (and sweep points) passes
:data:`WORK_CEILING` or :data:`MEMORY_CEILING_BYTES`, unless ``--allow-large`` is given; the message
names the largest term and its YAML path. The estimate is an expectation, accurate to a small factor
(the tests hold it to the event counts of the shipped scenarios); it is a guard against orders of
magnitude, not a schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .checkpointing import young_interval_s
from .fault_spec import SelectMode
from .hardware import catalog, derived_step_time_s
from .scenario import (
    ChipFailure,
    LinkDegradation,
    LinkPartition,
    Policy,
    RegionOutage,
    Scenario,
    SyncerOutage,
    TraceReplay,
)

WORK_CEILING = 2e8
"""Events, rounds and surrogate steps one command may run without ``--allow-large``: about an hour
at the simulator's typical 50,000 per second on one core."""
MEMORY_CEILING_BYTES = 2e9
"""Memory one replication may need for per-chip state without ``--allow-large``."""

EVENTS_PER_FAILURE = 3  # the failure, its repair, and the recovery phase it starts
EVENTS_PER_INJECTION = 2  # a fault's start and its end
BYTES_PER_RENEWED_CHIP = 24  # next-failure time, age and a scratch draw per chip (Weibull, lognormal)
LOCKSTEP = (Policy.SYNC_DP, Policy.ELASTIC_DP)
# The surrogate's float64 arrays, in parameter vectors: per learner its parameters, AdamW moments, the
# anchor it last received, its reported fragments and the merge scratch; shared: Theta, the outer
# velocity, the data-parallel moments and the gradient scratch
VECTORS_PER_LEARNER = 6
SHARED_VECTORS = 5
MLP_SAMPLES_PER_LEARNER, MLP_EVAL_SAMPLES = 2048, 4096  # sim.surrogate.data.make_dataset's defaults
SAMPLES_PER_DRAW = 1 << 20  # sim.surrogate.model.SAMPLES_PER_DRAW (not imported: that loads Numba)
MARKOV_KEYS = 16  # sim.surrogate.markov.KEYS: key matrices per source, each kept with its CDF
REFERENCE_STEP_SIZE = 16 * 808  # samples x parameters of the default MLP step (batch 16, 16/32/8)


@dataclass(frozen=True)
class Term:
    """One part of the work of a replication, and where in the scenario it comes from."""

    what: str
    loc: tuple  # YAML location (keys and indices) of the field that sets it
    work: float


@dataclass(frozen=True)
class Cost:
    terms: tuple[Term, ...]
    memory_bytes: float
    memory_loc: tuple

    @property
    def work(self) -> float:
        """Work of one replication."""
        return math.fsum(t.work for t in self.terms)

    def largest(self) -> Term:
        return max(self.terms, key=lambda t: t.work, default=Term("nothing", (), 0.0))


class CostError(ValueError):
    """A plan past the ceiling; ``loc`` is the YAML location to name."""

    def __init__(self, message: str, loc: tuple):
        super().__init__(message)
        self.loc = loc


def island_list(scenario: Scenario) -> list[tuple[str, str, int]]:
    """(region, spec name and copy name, chips) of every island, without building the topology."""
    out = []
    for region in scenario.topology.regions:
        for spec in region.islands:
            names = [spec.name] if spec.count == 1 else [f"{spec.name}-{k}" for k in range(spec.count)]
            out.extend((region.name, (spec.name, name), spec.chips) for name in names)
    return out


def matching_islands(fault, islands: list) -> list:
    """The islands (region, names, chips) a fault's selector matches, before its mode."""
    target = fault.target
    picked = islands
    if target.regions is not None:
        picked = [i for i in picked if i[0] in target.regions]
    if target.islands is not None:
        picked = [i for i in picked if set(i[1]) & set(target.islands)]
    return picked


def _hit(mode: SelectMode, value: float | None, pool: float) -> float:
    """How many of ``pool`` targets one injection hits under a selector mode."""
    if mode is SelectMode.ALL:
        return pool
    if mode is SelectMode.ONE:
        return min(1.0, pool)
    if mode is SelectMode.FIXED:
        return min(float(value or 0), pool)
    return math.floor(pool * (value or 0) / 100.0)


def injections_within(fault, duration_s: float) -> float:
    sched = fault.arrivals()
    if sched is None:
        return 0.0
    count = float(sum(1 for t in sched.at if t < duration_s))
    if sched.every is not None:
        first = sched.start if sched.start > 0 else sched.every
        count += max(0.0, math.ceil((min(duration_s, sched.until) - first) / sched.every))
    return count


def _trace_rows(fault: TraceReplay) -> float:
    try:
        with open(fault.file, "rb") as handle:
            return float(sum(1 for _ in handle))
    except OSError:
        return 0.0  # the loader reports a missing trace; it costs nothing


def _fault_terms(scenario: Scenario) -> tuple[list[Term], float, float, tuple]:
    """Fault terms, the job failure rate they imply (1/s), and the Weibull memory and its location."""
    islands, duration = island_list(scenario), scenario.duration
    regions = [r.name for r in scenario.topology.regions]
    links = len(regions) * (len(regions) - 1) / 2  # the WAN links a link fault can select
    terms, rate, memory, memory_loc = [], 0.0, 0.0, ()
    for k, fault in enumerate(scenario.faults):
        loc = ("faults", k)
        label = f"faults[{k}] ({fault.name})"
        if isinstance(fault, TraceReplay):
            terms.append(Term(f"{label}: trace rows", loc + ("file",), EVENTS_PER_FAILURE * _trace_rows(fault)))
            continue
        if isinstance(fault, (LinkDegradation, LinkPartition)):
            pool = float(len(fault.target.links) if fault.target.links is not None else links)
        elif isinstance(fault, RegionOutage):
            pool = float(len(fault.target.regions) if fault.target.regions is not None else len(regions))
        elif isinstance(fault, SyncerOutage):
            pool = 1.0
        else:
            pool = float(len(matching_islands(fault, islands)))
        mode, value = fault.target.mode, fault.target.value
        injections = injections_within(fault, duration)
        if injections:
            hits = injections * max(_hit(mode, value, pool), 1.0 if isinstance(fault, ChipFailure) else 0.0)
            terms.append(Term(f"{label}: scheduled injections", loc + ("every" if fault.every else "schedule",),
                              EVENTS_PER_INJECTION * hits))
            if isinstance(fault, (ChipFailure,)) or fault.kind in ("island_outage", "region_outage"):
                rate += hits / duration
        if fault.mtbf is None:
            continue
        if isinstance(fault, ChipFailure):
            # the mode picks islands; every chip of the picked islands fails at 1/mtbf
            chips = sorted((i[2] for i in matching_islands(fault, islands)), reverse=True)
            chips_hit = float(sum(chips[: int(_hit(mode, value, len(chips)))]))
            arrivals = chips_hit * duration / fault.mtbf
            terms.append(Term(f"{label}: chip failures ({chips_hit:.3g} chips)", loc + ("mtbf",), EVENTS_PER_FAILURE * arrivals))
            rate += chips_hit / fault.mtbf
            if fault.renews_each_chip and chips_hit * BYTES_PER_RENEWED_CHIP > memory:
                memory, memory_loc = chips_hit * BYTES_PER_RENEWED_CHIP, loc + ("lifetime",)
        else:
            arrivals = pool * duration / fault.mtbf
            terms.append(Term(f"{label}: arrivals", loc + ("mtbf",), EVENTS_PER_INJECTION * arrivals))
            if fault.kind in ("island_outage", "region_outage"):
                rate += pool / fault.mtbf
    return terms, rate, memory, memory_loc


def _step_times(scenario: Scenario) -> list[float]:
    """Step time of each learner (island) at full strength, from the scenario's own fields."""
    workload, chips = scenario.workload, catalog(scenario.chips)
    if workload.step_time != "auto":
        return [workload.step_time] * len(island_list(scenario))
    times = []
    for region in scenario.topology.regions:
        for spec in region.islands:
            peak = spec.chips * chips[spec.chip].peak_flops
            times.extend([derived_step_time_s(workload.params, workload.tokens_per_step, peak, workload.mfu)] * spec.count)
    return times


def surrogate_params(cfg) -> int:
    """Parameters of one learner's surrogate model."""
    if cfg.model == "mlp":
        return cfg.dim * cfg.hidden + cfg.hidden + cfg.hidden * cfg.classes + cfg.classes
    return cfg.vocab * cfg.vocab


def surrogate_step_work(scenario: Scenario, learners: int) -> float:
    """Work units of one surrogate step: one at the default sizes (a step there costs about what an
    event does), more in proportion to samples x parameters (what the products of a step grow with;
    an upper bound for markov, whose step touches one row of its vocab^2 table per sample)."""
    return max(1.0, step_samples(scenario, learners) * surrogate_params(scenario.surrogate) / REFERENCE_STEP_SIZE)


def surrogate_bytes(scenario: Scenario, learners: int) -> float:
    """Bytes of the surrogate of one replication with ``learners`` learners (0 when it is off): the
    parameter vectors (:data:`VECTORS_PER_LEARNER` per learner, :data:`SHARED_VECTORS` shared) plus
    the task's data: the MLP's samples (features and label) and its evaluation activations, the
    Markov sources' key matrices and their CDFs."""
    cfg = scenario.surrogate
    if cfg.model == "off":
        return 0.0
    params = surrogate_params(cfg)
    if cfg.model == "mlp":
        samples = learners * MLP_SAMPLES_PER_LEARNER + MLP_EVAL_SAMPLES
        data = samples * (cfg.dim + 1) + MLP_EVAL_SAMPLES * (cfg.hidden + cfg.classes)
    else:
        data = 2 * cfg.components * MARKOV_KEYS * params
    return 8.0 * ((VECTORS_PER_LEARNER * learners + SHARED_VECTORS) * params + data) + \
        surrogate_scratch_bytes(scenario, learners)


def step_samples(scenario: Scenario, learners: int) -> int:
    """Samples one surrogate step takes: a DiLoCo learner's own ``batch``; the lockstep data-parallel
    step takes ``batch`` from each of the learners."""
    return scenario.surrogate.batch * (learners if scenario.training.policy in LOCKSTEP else 1)


def surrogate_scratch_bytes(scenario: Scenario, learners: int) -> float:
    """Bytes a training call of the surrogate holds while it runs: one draw of minibatches (at most
    :data:`SAMPLES_PER_DRAW` samples and a run's steps' worth, at least one step's) and the kernels'
    per-step workspace (each sample's features, hidden activations and their gradients, class scores)."""
    cfg = scenario.surrogate
    per_step = step_samples(scenario, learners)
    samples = max(per_step, min(SAMPLES_PER_DRAW, cfg.max_steps_per_learner * per_step))
    if cfg.model == "mlp":
        # a uniform float and a row index per sample; the workspace of sim.surrogate.kernels._workspace
        return 16.0 * samples + 8.0 * per_step * (cfg.dim + 2 * cfg.hidden + 2 * cfg.classes + 1)
    # four uniforms and a (context, next) pair per sample; the kernel works one sample at a time
    return 48.0 * samples


def estimate(scenario: Scenario) -> Cost:
    """The work and memory of one replication of a validated scenario (see the module docstring)."""
    terms, failure_rate, memory, memory_loc = _fault_terms(scenario)
    training, duration = scenario.training, scenario.duration
    if training.policy in LOCKSTEP:
        interval = training.checkpoint.interval
        if isinstance(interval, str):  # young / daly: both near sqrt(2 C M)
            write = training.checkpoint.write_time
            interval = young_interval_s(write, 1.0 / failure_rate) if failure_rate > 0 and write > 0 else math.inf
        terms.append(Term("checkpoints", ("training", "checkpoint", "interval"), duration / max(interval, 1e-300)))
        groups = 1
    else:
        fragments = 1 if training.policy is Policy.DILOCO else training.fragments
        steps = _step_times(scenario)
        rounds = math.fsum(duration / step * fragments / training.inner_steps for step in steps)
        # the step time is what usually makes rounds many: the one given, or (auto) the one of the island
        # with the most compute, whose chips are then the field to name
        if scenario.workload.step_time != "auto":
            loc, auto = ("workload", "step_time"), ""
        else:
            peak = catalog(scenario.chips)
            r, i, spec = max(((r, i, spec) for r, region in enumerate(scenario.topology.regions)
                              for i, spec in enumerate(region.islands)),
                             key=lambda c: c[2].chips * peak[c[2].chip].peak_flops)
            loc = ("topology", "regions", r, "islands", i, "chips")
            auto = (f"; the step time is auto, from workload params and tokens_per_step over the "
                    f"{spec.chips:,} {spec.chip} chips of {spec.name}")
        terms.append(Term(f"outer rounds (duration / step time {min(steps):.3g} s x fragments {fragments} / "
                          f"inner_steps {training.inner_steps}, over {len(steps)} learners{auto})", loc, rounds))
        groups = len(island_list(scenario))
    surrogate = scenario.surrogate
    if surrogate.model != "off":
        learners = len(island_list(scenario))
        per_step = surrogate_step_work(scenario, learners)
        terms.append(Term(f"surrogate steps (each {per_step:.3g} units: {step_samples(scenario, learners):,} samples x "
                          f"{surrogate_params(surrogate):,} parameters)" if per_step > 1 else "surrogate steps",
                          ("surrogate", "batch") if per_step > 1 else ("surrogate", "max_steps_per_learner"),
                          float(groups) * surrogate.max_steps_per_learner * per_step))
        evals = duration / surrogate.eval_every if surrogate.eval_every > 0 else 200.0
        terms.append(Term("surrogate evaluations", ("surrogate", "eval_every"), evals))
        model = surrogate_bytes(scenario, learners)
        if model > memory:
            # the batch when what a training call holds is most of it
            scratch = surrogate_scratch_bytes(scenario, learners) > model / 2
            memory, memory_loc = model, ("surrogate", "batch" if scratch else "model")
    return Cost(tuple(terms), memory, memory_loc)


def check(costs: list[tuple[Cost, int]], replications_loc: tuple, what: str = "replication") -> None:
    """Raise :class:`CostError` when ``costs`` (each a per-replication cost and its replications) pass
    a ceiling. ``replications_loc`` is named when no single term is too large by itself."""
    total = math.fsum(cost.work * n for cost, n in costs)
    count = sum(n for _, n in costs)
    worst = max((cost for cost, _ in costs), key=lambda c: c.largest().work)
    # memory first: a run past it dies mid-way of a MemoryError, one past the work ceiling only takes long
    worst_memory = max((cost for cost, _ in costs), key=lambda c: c.memory_bytes)
    memory = worst_memory.memory_bytes
    if memory > MEMORY_CEILING_BYTES:
        what_grows = {("surrogate", "model"): "the surrogate model and its data",
                      ("surrogate", "batch"): "the surrogate's minibatches and kernel workspace"}.get(
            tuple(worst_memory.memory_loc), "per-chip lifetimes (Weibull, lognormal)")
        raise CostError(
            f"estimated memory {memory / 1e9:.3g} GB for {what_grows} is past the ceiling of "
            f"{MEMORY_CEILING_BYTES / 1e9:.0f} GB; pass --allow-large to run it anyway", worst_memory.memory_loc,
        )
    if total > WORK_CEILING:
        term = worst.largest()
        loc = term.loc if term.work > WORK_CEILING / 10 else replications_loc
        raise CostError(
            f"estimated work {total:.3g} (events, rounds and surrogate steps; the largest part {term.what}: "
            f"{term.work:.3g} per {what}, x {count:,} {what}(s)) is past the ceiling of {WORK_CEILING:.0e}; "
            "pass --allow-large to run it anyway", loc,
        )
