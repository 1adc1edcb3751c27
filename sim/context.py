"""What every part of one replication shares: the clock, the scenario, the topology, the streams.

Also :class:`LinkState`, the current capacity of each WAN/DCN link as faults degrade, partition and
restore it. Overlapping faults on one link compose: the lowest bandwidth and the highest latency in
force apply. Listeners (the network model, groups whose step time depends on the WAN) are told of
every change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import simpy

from .recorder import Recorder
from .rng import Streams
from .scenario import Scenario
from .topology import Topology


class LinkState:
    def __init__(self, topology: Topology):
        self.nominal: dict[str, tuple[float, float]] = {
            name: (spec.bandwidth, spec.latency) for name, spec in topology.links.items()
        }
        self.nominal.update(
            {f"dcn:{r}": (topology.intra_region.bandwidth, topology.intra_region.latency) for r in topology.regions}
        )
        self._active: dict[str, list[tuple[str, float | None, float | None]]] = {name: [] for name in self.nominal}
        self.listeners: list[Callable[[str, float, float], None]] = []

    def current(self, link: str) -> tuple[float, float]:
        """(bandwidth_bps, latency_s) of ``link`` now."""
        bandwidth, latency = self.nominal[link]
        for _fault, bw, lat in self._active[link]:
            if bw is not None:
                bandwidth = min(bandwidth, bw)
            if lat is not None:
                latency = max(latency, lat)
        return bandwidth, latency

    def apply(self, link: str, fault: str, bandwidth_bps: float | None, latency_s: float | None, started: bool) -> None:
        entry = (fault, bandwidth_bps, latency_s)
        if started:
            self._active[link].append(entry)
        else:
            self._active[link].remove(entry)
        bandwidth, latency = self.current(link)
        for listener in self.listeners:
            listener(link, bandwidth, latency)

    def ring_allreduce_s(self, regions: list[str], nbytes: float) -> float:
        """Time of a ring all-reduce of ``nbytes`` per member over the WAN ring through ``regions``.

        Each member sends and receives ``2 (M-1)/M * nbytes``; the ring moves at its slowest link and
        pays ``2 (M-1)`` latencies. Infinite while any ring link is partitioned.
        """
        m = len(regions)
        if m <= 1:
            return 0.0
        ring = [("~".join(sorted((regions[k], regions[(k + 1) % m])))) for k in range(m)]
        if m == 2:
            ring = ring[:1]
        bandwidth = min(self.current(link)[0] for link in ring)
        latency = max(self.current(link)[1] for link in ring)
        if bandwidth <= 0:
            return math.inf
        return 2 * (m - 1) / m * nbytes * 8 / bandwidth + 2 * (m - 1) * latency


@dataclass
class RunContext:
    env: simpy.Environment
    scenario: Scenario
    topology: Topology
    streams: Streams
    recorder: Recorder
    links: LinkState
    scenario_dir: Path | None = None
    extras: dict = field(default_factory=dict)

    @property
    def horizon_s(self) -> float:
        return self.scenario.duration
