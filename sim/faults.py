"""Failure processes: stochastic (superposed, vectorised), scheduled, and replayed from a trace.

Nothing is simulated per chip. ``N`` independent chips failing at rate ``1/MTBF`` are one Poisson
stream of rate ``N/MTBF``; a fault's stream is the superposition over every island it targets, and
the victim (island, then chip) is drawn only when a failure happens. Gaps and victims are drawn from
the fault's own named random stream in numpy blocks, so a fault costs one SimPy event per failure.

Weibull chip lifetimes are not memoryless, so superposition does not give a Poisson stream. Then
(and only then) per-chip next-failure times are kept in one numpy array (chips start new, or, with
``start: stationary``, at ages drawn from the renewal equilibrium, so the rate is N/MTBF from t = 0); the process takes the
earliest few thousand with ``argpartition`` into a small heap and only goes back to the array when
that batch is used up (a renewed chip whose next failure falls inside the batch joins the heap).

A fault's effect is delivered to the learner groups by an :class:`Effects` object (built by the
runner), which knows which group owns an island and what links and the synchronizer are.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import math
from pathlib import Path
from typing import Protocol

import numpy as np
import simpy
from scipy.special import gammaincinv

from .distributions import BlockSampler, Exponential, RepairDraws
from .recorder import Recorder
from .rng import Streams
from .scenario import (
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
    SelectMode,
    Slowdown,
    SyncerOutage,
    Target,
    TraceReplay,
)
from .topology import Island, Topology


class Effects(Protocol):
    """What faults can do; the runner implements it over the learner groups, network and syncer."""

    def chip_failure(self, island: Island, chip: int, radius: BlastRadius, repair_s: float, fault: str) -> None: ...
    def outage(self, islands: list[Island], started: bool, kind: str, fault: str) -> None: ...
    def slowdown(self, islands: list[Island], factor: float, started: bool, fault: str) -> None: ...
    def link(self, links: list[str], bandwidth_bps: float | None, latency_s: float | None, started: bool, fault: str) -> None: ...
    def syncer(self, started: bool, fault: str) -> None: ...


class FaultCounter:
    """Failures by fault kind, name and cause (every arrival, whether or not it hit a running group),
    and repairs that escalated from automatic to manual."""

    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {}
        self.by_fault: dict[str, int] = {}
        self.by_cause: dict[str, int] = {}
        self.escalated: dict[str, int] = {}

    def add(self, kind: str, name: str, n: int = 1, cause: str = "random") -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n
        self.by_fault[name] = self.by_fault.get(name, 0) + n
        self.by_cause[cause] = self.by_cause.get(cause, 0) + n


class LemonUnits:
    """The lemon hosts (or cubes) of a chip-failure fault: which units, and victims among them.

    Units are numbered across the fault's islands in order; a lemon is kept as (island position, unit).
    """

    def __init__(self, spec: Lemons, islands: list[Island], rng: np.random.Generator):
        self.spec, self.islands = spec, islands
        counts = [island.units(spec.unit) for island in islands]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        n = max(1, round(spec.fraction * offsets[-1]))
        picks = np.sort(rng.choice(int(offsets[-1]), size=n, replace=False))
        self.units = []
        for g in picks.tolist():
            k = int(np.searchsorted(offsets, g, side="right")) - 1
            self.units.append((k, g - int(offsets[k])))
        self.members = set(self.units)
        self._sizes()

    def _sizes(self) -> None:
        sizes = [self.islands[k].chips_in_unit(self.spec.unit, u) for k, u in self.units]
        self.chips = sum(sizes)
        self._cumulative = np.cumsum(sizes) / max(self.chips, 1)

    def excess_rate_per_s(self, mtbf_s: float) -> float:
        """Failure rate on top of the random stream: lemon chips fail (factor - 1) / mtbf more often."""
        return self.chips * (self.spec.factor - 1.0) / mtbf_s

    def victim(self, u: float) -> tuple[Island, int]:
        """A chip of a lemon, uniform over the lemons' chips (``u`` uniform in [0, 1))."""
        j = min(int(np.searchsorted(self._cumulative, u, side="right")), len(self.units) - 1)
        k, unit = self.units[j]
        low = self._cumulative[j - 1] if j else 0.0
        size = self.islands[k].chips_in_unit(self.spec.unit, unit)
        offset = min(int((u - low) / (self._cumulative[j] - low) * size), size - 1)
        return self.islands[k], unit * self.islands[k].unit_chips(self.spec.unit) + offset

    def repaired(self, k: int, chip: int, for_good: bool) -> None:
        """A failure of island ``k``'s ``chip`` was repaired; clear its unit if it was a lemon."""
        key = (k, chip // self.islands[k].unit_chips(self.spec.unit))
        if self.spec.cleared_by_repair and for_good and key in self.members:
            self.members.discard(key)
            self.units.remove(key)
            self._sizes()


def select(target: Target, pool: list, rng: np.random.Generator) -> list:
    """Apply a selector's mode to the matching ``pool`` (all, one, fixed count, fixed percent)."""
    if not pool or target.mode is SelectMode.ALL:
        return list(pool)
    if target.mode is SelectMode.ONE:
        n = 1
    elif target.mode is SelectMode.FIXED:
        n = int(target.value)
    else:
        n = math.floor(len(pool) * target.value / 100.0)
    n = max(0, min(n, len(pool)))
    picks = np.sort(rng.choice(len(pool), size=n, replace=False))
    return [pool[k] for k in picks]


def matching_islands(target: Target, topology: Topology, where: str) -> list[Island]:
    islands = topology.islands
    if target.regions is not None:
        unknown = set(target.regions) - set(topology.regions)
        if unknown:
            raise ValueError(f"{where}: unknown region(s) {sorted(unknown)} (known: {topology.regions})")
        islands = [i for i in islands if i.region in target.regions]
    if target.islands is not None:
        # an island spec with count > 1 can be targeted by its spec name (all its copies)
        known = {i.name for i in topology.islands} | {i.spec_name for i in topology.islands}
        wanted = set(target.islands)
        unknown = wanted - known
        if unknown:
            raise ValueError(f"{where}: unknown island(s) {sorted(unknown)} (known: {sorted(known)})")
        islands = [i for i in islands if i.name in wanted or i.spec_name in wanted]
    return islands


def matching_links(target: Target, topology: Topology, where: str) -> list[str]:
    if target.links is None:
        return sorted(topology.links)
    out = []
    for link in target.links:
        ends = link.split("~")
        name = "~".join(sorted(ends))
        if len(ends) != 2 or name not in topology.links:
            raise ValueError(f"{where}: unknown link {link!r} (known: {sorted(topology.links)})")
        out.append(name)
    return out


def schedule_times(fault: FaultBase, horizon_s: float, rng: np.random.Generator) -> list[float]:
    """Injection times of a scheduled fault within the horizon (jitter is uniform in [0, jitter])."""
    sched = fault.arrivals()
    if sched is None:
        return []
    times = list(sched.at)
    if sched.every is not None:
        t = sched.start if sched.start > 0 else sched.every  # '@every 1d' first fires after one period
        while t < min(horizon_s, sched.until):
            times.append(t)
            t += sched.every
    if sched.jitter > 0:
        times = [t + float(rng.uniform(0, sched.jitter)) for t in times]
    return sorted(t for t in times if t < horizon_s)


class PoissonChips:
    """The arrivals of one chip-failure fault with exponential lifetimes.

    Every targeted chip fails at 1/mtbf (the random stream); lemon chips fail (factor - 1)/mtbf more
    often (the systematic stream). Both are Poisson, so their sum is one stream whose next gap is drawn
    at the rate in force, and each arrival belongs to a stream in proportion. :meth:`gap_s` and
    :meth:`strike` are called alternately (the gap to an arrival, then its victim and repair), which
    fixes the order of draws from the fault's stream.
    """

    def __init__(self, fault: ChipFailure, islands: list[Island], rng: np.random.Generator):
        self.fault, self.islands = fault, islands
        chips = np.array([i.chips for i in islands], dtype=np.float64)
        # as Python floats: bisect_right on them is np.searchsorted(side="right") without a numpy call
        self._cumulative = (np.cumsum(chips) / chips.sum()).tolist()
        self.rate_per_s = chips.sum() / fault.mtbf
        self.lemons = LemonUnits(fault.lemons, islands, rng) if fault.lemons is not None else None
        self._gaps = BlockSampler(Exponential(1.0 / self.rate_per_s if self.lemons is None else 1.0), rng, 4096)
        self._repairs = RepairDraws(fault.repair.build(), rng, 4096)
        self._pipeline = isinstance(fault.repair, RepairPipeline)
        self._uniforms = BlockSampler(_Uniform(), rng, 4096)
        self._excess_per_s = 0.0

    def gap_s(self) -> float:
        """Seconds from the last arrival to the next."""
        if self.lemons is None:
            return self._gaps.next()
        self._excess_per_s = self.lemons.excess_rate_per_s(self.fault.mtbf)
        return self._gaps.next() / (self.rate_per_s + self._excess_per_s)

    def strike(self) -> tuple[Island, int, float, bool, str]:
        """The arrival that gap led to: (island, chip, repair seconds, escalated, cause)."""
        systematic = False
        if self.lemons is not None:
            total_per_s = self.rate_per_s + self._excess_per_s
            systematic = self._uniforms.next() * total_per_s < self._excess_per_s
        if systematic:
            island, chip = self.lemons.victim(self._uniforms.next())
        else:
            u = self._uniforms.next()
            cumulative, islands = self._cumulative, self.islands
            k = min(bisect.bisect_right(cumulative, u), len(islands) - 1)
            island = islands[k]
            # re-use the position of u inside island k's slice of [0, 1) as the chip index
            low = cumulative[k - 1] if k else 0.0
            chip = min(int((u - low) / (cumulative[k] - low) * island.chips), island.chips - 1)
        repair_s, escalated = self._repairs.next()
        if self.lemons is not None:
            # a repair fixes for good when it escalated to manual, or always without a pipeline
            self.lemons.repaired(self.islands.index(island), chip, escalated or not self._pipeline)
        return island, chip, repair_s, escalated, "systematic" if systematic else self.fault.cause


class FaultProcesses:
    """Builds one SimPy process per fault (never per chip, island or event source)."""

    def __init__(
        self, env: simpy.Environment, topology: Topology, effects: Effects, streams: Streams,
        recorder: Recorder, horizon_s: float, scenario_dir: Path | None = None,
    ):
        self.env, self.topology, self.effects, self.streams = env, topology, effects, streams
        self.recorder, self.horizon_s, self.scenario_dir = recorder, horizon_s, scenario_dir
        self.counter = FaultCounter()

    def start(self, faults: list[Fault]) -> None:
        for index, fault in enumerate(faults):
            where = f"faults[{index}] ({fault.name})"
            rng = self.streams.get(f"fault/{fault.name}")
            if isinstance(fault, ChipFailure):
                islands = self._chip_islands(fault, where, rng)
                if not islands:
                    continue
                if fault.arrivals() is not None:
                    times = schedule_times(fault, self.horizon_s, rng)
                    self.env.process(self._scheduled_chips(fault, islands, times, rng))
                if fault.mtbf is None:
                    continue
                if fault.renews_each_chip:
                    self.env.process(self._renewal_chips(fault, islands, rng))
                else:
                    self.env.process(self._poisson_chips(fault, islands, rng))
            elif isinstance(fault, TraceReplay):
                self.env.process(self._trace(fault, read_trace(fault, self.topology, self.scenario_dir, where)))
            else:
                self._check_targets(fault, where)
                if fault.arrivals() is not None:
                    self.env.process(self._scheduled(fault, schedule_times(fault, self.horizon_s, rng), rng))
                if fault.mtbf is not None:
                    self.env.process(self._stochastic(fault, rng))

    # ------------------------------------------------------------------------------- chip failures

    def _chip_islands(self, fault: ChipFailure, where: str, rng: np.random.Generator) -> list[Island]:
        """The islands a chip-failure fault strikes (a random subset for ``target.mode`` one or some)."""
        return select(fault.target, matching_islands(fault.target, self.topology, where), rng)

    def poisson_chip_arrivals(self, faults: list[ChipFailure]) -> list[PoissonChips]:
        """The arrivals of Poisson chip-failure faults, for a caller that plays them without SimPy
        processes (:mod:`sim.restart_loop`); each draws from its fault's stream exactly as
        :meth:`start` would."""
        sources = []
        for index, fault in enumerate(faults):
            rng = self.streams.get(f"fault/{fault.name}")
            islands = self._chip_islands(fault, f"faults[{index}] ({fault.name})", rng)
            if islands:
                sources.append(PoissonChips(fault, islands, rng))
        return sources

    def _poisson_chips(self, fault: ChipFailure, islands: list[Island], rng: np.random.Generator):
        arrivals = PoissonChips(fault, islands, rng)
        while True:
            yield self.env.timeout(arrivals.gap_s())
            self._chip(fault, *arrivals.strike())

    def _renewal_chips(self, fault: ChipFailure, islands: list[Island], rng: np.random.Generator, batch: int = 4096):
        """Weibull or lognormal chip lifetimes (mean ``mtbf``): each failed chip is renewed."""
        sizes = np.array([i.chips for i in islands])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n_chips = int(offsets[-1])
        if fault.lifetime == "lognormal":
            mu = math.log(fault.mtbf) - fault.sigma**2 / 2  # so that the mean is mtbf

            def lifetimes(n: int) -> np.ndarray:
                return rng.lognormal(mu, fault.sigma, n)
        else:
            scale = fault.mtbf / math.gamma(1 + 1 / fault.shape)

            def lifetimes(n: int) -> np.ndarray:
                return scale * rng.weibull(fault.shape, n)
        if fault.start == "new":  # a fresh cluster: every chip's first lifetime starts at t = 0
            next_fail = lifetimes(n_chips)
        else:
            # a cluster that has run for long: residual lives follow the renewal equilibrium, whose CDF
            # is the regularised lower incomplete gamma P(1/k, (x/eta)^k); inverted by gammaincinv
            next_fail = scale * gammaincinv(1.0 / fault.shape, rng.random(n_chips)) ** (1.0 / fault.shape)
        repairs = RepairDraws(fault.repair.build(), rng, 4096)
        while True:
            k = min(batch, len(next_fail))
            idx = np.argpartition(next_fail, k - 1)[:k] if k < len(next_fail) else np.arange(len(next_fail))
            threshold = float(next_fail[idx].max())
            heap = [(float(next_fail[j]), int(j)) for j in idx]
            heapq.heapify(heap)
            while heap:
                t, j = heapq.heappop(heap)
                if t != next_fail[j]:
                    continue  # stale entry
                yield self.env.timeout(t - self.env.now)
                # the failed chip is replaced by a new one: renewal at the failure time
                renewed = t + float(lifetimes(1)[0])
                next_fail[j] = renewed
                if renewed <= threshold:
                    heapq.heappush(heap, (renewed, j))
                island_k = int(np.searchsorted(offsets, j, side="right")) - 1
                self._chip(fault, islands[island_k], int(j - offsets[island_k]), *repairs.next(), fault.cause)

    def _scheduled_chips(self, fault: ChipFailure, islands: list[Island], times: list[float], rng: np.random.Generator):
        """Injected chip failures: at each time, one chip drawn uniformly over the selected islands."""
        chips = np.array([i.chips for i in islands], dtype=np.float64)
        cumulative = np.cumsum(chips) / chips.sum()
        repairs = RepairDraws(fault.repair.build(), rng, 256)
        for t in times:
            yield self.env.timeout(t - self.env.now)
            k = min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(islands) - 1)
            self._chip(fault, islands[k], int(rng.integers(islands[k].chips)), *repairs.next(), fault.cause)

    def _chip(self, fault: ChipFailure, island: Island, chip: int, repair_s: float, escalated: bool, cause: str) -> None:
        self.count(fault, escalated, cause)
        self.effects.chip_failure(island, chip, fault.blast_radius, repair_s, fault.name)

    def count(self, fault: ChipFailure, escalated: bool, cause: str) -> None:
        """Count one chip-failure arrival (every arrival, whether or not it hit a running group)."""
        self.counter.add(fault.kind, fault.name, cause=cause)
        if escalated:
            self.counter.escalated[fault.name] = self.counter.escalated.get(fault.name, 0) + 1

    # ------------------------------------------------------------------------------- other faults

    def _check_targets(self, fault: FaultBase, where: str) -> None:
        if isinstance(fault, (IslandOutage, RegionOutage, Slowdown)):
            matching_islands(fault.target, self.topology, where)
        elif isinstance(fault, (LinkDegradation, LinkPartition)):
            matching_links(fault.target, self.topology, where)

    def _scheduled(self, fault: FaultBase, times: list[float], rng: np.random.Generator):
        durations = BlockSampler(fault.duration.build(), rng, 256)
        for t in times:
            yield self.env.timeout(t - self.env.now)
            self._inject(fault, durations.next(), rng)

    def _stochastic(self, fault: FaultBase, rng: np.random.Generator):
        """Poisson arrivals at rate (number of matching targets) / mtbf, each on one target."""
        durations = BlockSampler(fault.duration.build(), rng, 256)
        n_targets = max(len(self._targets(fault)), 1)
        gaps = BlockSampler(Exponential(fault.mtbf / n_targets), rng, 256)
        one = fault.target.model_copy(update={"mode": SelectMode.ONE})
        while True:
            yield self.env.timeout(gaps.next())
            self._inject(fault.model_copy(update={"target": one}), durations.next(), rng)

    def _targets(self, fault: FaultBase) -> list:
        where = f"fault {fault.name}"
        if isinstance(fault, RegionOutage):
            regions = fault.target.regions if fault.target.regions is not None else self.topology.regions
            return list(regions)
        if isinstance(fault, (IslandOutage, Slowdown)):
            return matching_islands(fault.target, self.topology, where)
        if isinstance(fault, (LinkDegradation, LinkPartition)):
            return matching_links(fault.target, self.topology, where)
        return ["syncer"]

    def _inject(self, fault: FaultBase, duration_s: float, rng: np.random.Generator) -> None:
        picked = select(fault.target, self._targets(fault), rng)
        if not picked:
            return
        self.counter.add(fault.kind, fault.name, len(picked), fault.cause)
        label = ",".join(str(p) if not isinstance(p, Island) else p.name for p in picked)
        self.recorder.event(self.env.now, f"{fault.kind}_start", fault.name, label, f"for {duration_s:.6g}s")
        self._apply(fault, picked, True)
        end = self.env.timeout(duration_s)
        end.callbacks.append(lambda _e: self._end(fault, picked, label))

    def _end(self, fault: FaultBase, picked: list, label: str) -> None:
        self.recorder.event(self.env.now, f"{fault.kind}_end", fault.name, label, "")
        self._apply(fault, picked, False)

    def _apply(self, fault: FaultBase, picked: list, started: bool) -> None:
        if isinstance(fault, RegionOutage):
            self.effects.outage(self.topology.islands_in(picked), started, fault.kind, fault.name)
            if self.topology.syncer_region in picked:
                self.effects.syncer(started, fault.name)
        elif isinstance(fault, IslandOutage):
            self.effects.outage(picked, started, fault.kind, fault.name)
        elif isinstance(fault, Slowdown):
            self.effects.slowdown(picked, fault.factor, started, fault.name)
        elif isinstance(fault, LinkDegradation):
            self.effects.link(picked, fault.bandwidth, fault.latency, started, fault.name)
        elif isinstance(fault, LinkPartition):
            self.effects.link(picked, 0.0, None, started, fault.name)
        elif isinstance(fault, SyncerOutage):
            self.effects.syncer(started, fault.name)

    # ------------------------------------------------------------------------------- trace replay

    def _trace(self, fault: TraceReplay, rows: list[tuple[float, Island, float, str]]):
        for time_s, island, duration_s, kind in rows:
            if time_s >= self.horizon_s:
                return
            yield self.env.timeout(time_s - self.env.now)
            self.counter.add(kind, fault.name)
            if kind == "island_outage":
                self.recorder.event(self.env.now, "island_outage_start", fault.name, island.name, f"for {duration_s:.6g}s")
                self.effects.outage([island], True, kind, fault.name)
                self.env.timeout(duration_s).callbacks.append(lambda _e, isl=island: self._trace_outage_end(fault, isl))
            else:
                # the trace names the island; which of its chips failed is drawn from the fault's stream
                chip = int(self.streams.get(f"fault/{fault.name}").integers(island.chips))
                self.effects.chip_failure(island, chip, fault.blast_radius, duration_s, fault.name)

    def _trace_outage_end(self, fault: TraceReplay, island: Island) -> None:
        self.recorder.event(self.env.now, "island_outage_end", fault.name, island.name, "")
        self.effects.outage([island], False, "island_outage", fault.name)


MAX_TRACE_BYTES = 16_000_000
"""Largest trace CSV read (about half a million rows)."""


def read_trace(
    fault: TraceReplay, topology: Topology, scenario_dir: Path | None, where: str
) -> list[tuple[float, Island, float, str]]:
    """Rows of ``time,target[,duration][,kind]`` sorted by time; any problem is a one-line ScenarioError.

    ``time`` and ``duration`` are unit strings or seconds (duration defaults to 1 h), ``target`` an
    island name, ``kind`` ``chip_failure`` (default) or ``island_outage``. Read at load (``validate``)
    and again when the run starts. A message names the file, the line and the column, never the
    content it could not parse: a trace may be any file, and its bytes are not echoed.
    """
    from .loading import ScenarioError
    from .units import parse_duration

    path = Path(fault.file)
    if not path.is_absolute() and scenario_dir is not None:
        path = scenario_dir / path
    if not path.is_file():
        raise ScenarioError(f"{where}.file: trace file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_TRACE_BYTES:
        raise ScenarioError(f"{where}.file: {path}: larger than the limit of {MAX_TRACE_BYTES:,} bytes for a trace")
    by_name = {i.name: i for i in topology.islands}
    rows = []
    line = 1
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"time", "target"} <= set(reader.fieldnames):
                raise ScenarioError(f"{where}: {path}: expected a CSV header with columns time,target[,duration][,kind]")
            for line, row in enumerate(reader, start=2):
                rows.append(_trace_row(row, by_name, parse_duration, f"{where}: {path}:{line}"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{where}: {path}: not a UTF-8 text file (a CSV of time,target[,duration][,kind] is expected)") from None
    except csv.Error:
        raise ScenarioError(f"{where}: {path}:{line + 1}: not a readable CSV line (binary data?)") from None
    return sorted(rows, key=lambda r: r[0])


def _trace_row(row: dict, by_name: dict[str, Island], parse_duration, where: str) -> tuple[float, Island, float, str]:
    from .loading import ScenarioError

    for column, default in (("time", None), ("duration", "1h")):
        try:
            value = parse_duration(row.get(column) or default)
        except (ValueError, TypeError):
            raise ScenarioError(f"{where}: column {column}: expected a duration like '30s' or '2h' or seconds") from None
        if value < 0:
            raise ScenarioError(f"{where}: column {column}: must be >= 0")
        if column == "time":
            time_s = value
    if row.get("target") not in by_name:
        raise ScenarioError(f"{where}: column target: not an island of the topology (known: {sorted(by_name)})")
    kind = row.get("kind") or "chip_failure"
    if kind not in ("chip_failure", "island_outage"):
        raise ScenarioError(f"{where}: column kind: expected chip_failure or island_outage")
    return time_s, by_name[row["target"]], value, kind


class _Uniform:
    mean = 0.5

    @staticmethod
    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.random(n)
