"""Topology: regions hold islands; islands are slices of chips; links join regions.

An *island* is a slice of N chips of one type in one region that runs SPMD in lockstep inside itself.
In the DiLoCo family one island is one learner; under lockstep policies all islands form one job.
Hosts and cubes are failure domains inside an island: they are never objects, only index ranges
(chip ``c`` is on host ``c // chips_per_host`` and cube ``c // chips_per_cube``), so an island of a
million chips costs what an island of ten does.

Links are named ``a~b`` (region names sorted); islands of the same region talk over the
data-centre network (``intra_region``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .hardware import catalog
from .scenario import BlastRadius, ChipSpec, LinkSpec, Scenario


@dataclass(eq=False)
class Island:
    """One slice of chips; mutable availability state is kept by the owning learner group."""

    index: int
    name: str
    region: str
    chip_type: str
    chip: ChipSpec
    chips: int
    spare_units: int = 0
    spec_name: str = ""  # the name in the scenario; copies of an island with count > 1 share it
    outages: int = field(default=0, repr=False)  # overlapping island/region outages in force
    slowdown: float = field(default=1.0, repr=False)  # step-time multiplier from stragglers

    @property
    def peak_flops(self) -> float:
        return self.chips * self.chip.peak_flops

    def unit_chips(self, radius: BlastRadius) -> int:
        """Chips in one failure domain of the given radius (never more than the island)."""
        size = {
            BlastRadius.CHIP: 1,
            BlastRadius.HOST: self.chip.chips_per_host,
            BlastRadius.CUBE: self.chip.chips_per_cube,
            BlastRadius.ISLAND: self.chips,
        }[radius]
        return min(size, self.chips)

    def units(self, radius: BlastRadius) -> int:
        """Number of failure domains of that radius (the last one may be partial)."""
        size = self.unit_chips(radius)
        return -(-self.chips // size)

    def chips_in_unit(self, radius: BlastRadius, unit: int) -> int:
        size = self.unit_chips(radius)
        return min(size, self.chips - unit * size)


def link_name(a: str, b: str) -> str:
    return "~".join(sorted((a, b)))


@dataclass
class Topology:
    islands: list[Island]
    regions: list[str]
    links: dict[str, LinkSpec]
    intra_region: LinkSpec
    syncer_region: str

    @property
    def total_chips(self) -> int:
        return sum(i.chips for i in self.islands)

    def link_between(self, region_a: str, region_b: str) -> tuple[str, LinkSpec]:
        if region_a == region_b:
            return f"dcn:{region_a}", self.intra_region
        name = link_name(region_a, region_b)
        return name, self.links[name]

    def islands_in(self, regions: list[str]) -> list[Island]:
        return [i for i in self.islands if i.region in regions]


def build_topology(scenario: Scenario) -> Topology:
    """Expand ``count`` copies, resolve chip types, and build the full mesh of WAN links."""
    chips = catalog(scenario.chips)
    spec = scenario.topology
    islands: list[Island] = []
    for region in spec.regions:
        for island in region.islands:
            names = [island.name] if island.count == 1 else [f"{island.name}-{k}" for k in range(island.count)]
            for name in names:
                islands.append(
                    Island(len(islands), name, region.name, island.chip, chips[island.chip], island.chips,
                           island.spares, island.name)
                )
    regions = [r.name for r in spec.regions]
    links = {link_name(a, b): spec.default_link for k, a in enumerate(regions) for b in regions[k + 1 :]}
    for override in spec.links:
        links[link_name(*override.between)] = LinkSpec(bandwidth=override.bandwidth, latency=override.latency)
    return Topology(islands, regions, links, spec.intra_region, spec.syncer.region or regions[0])
