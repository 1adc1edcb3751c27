"""The training's links as directional channels on the fair-share network (:mod:`sim.network`).

Links are full duplex: each topology link ``a~b`` is two channels, ``a~b>b`` (towards b) and
``a~b>a``, each with the link's bandwidth, shared max-min fairly by the transfers crossing it in that
direction. A transfer between two regions crosses the one WAN link between them; one inside a region
crosses that region's data-centre network ``dcn:r`` (one channel: it is orders of magnitude faster
than the WAN). Degradations and partitions of a link apply to both of its channels and re-time the
transfers in flight.

Every byte the outer protocol moves goes through :meth:`Channels.send`, so per-link bytes and
utilisation (bits carried / capacity offered, never above 1 by construction of the fair shares) are
measured, not assumed. Utilisation is sampled per channel every 1/200 of the run into the
``link_utilisation`` series (0 for a window in which a channel that has carried traffic carried none).
"""

from __future__ import annotations

from typing import Any

import simpy

from ..context import RunContext
from ..network import Network


class Channels:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.network = Network(ctx.env)
        self._of_link: dict[str, list[str]] = {}
        for link, (bandwidth, latency) in ctx.links.nominal.items():
            names = [link] if link.startswith("dcn:") else [f"{link}>{end}" for end in link.split("~")]
            self._of_link[link] = names
            for name in names:
                self.network.add_link(name, bandwidth, latency)
        self._route: dict[tuple[str, str], str] = {}
        self._sampled = {name: (0.0, 0.0) for names in self._of_link.values() for name in names}
        self.peak_utilisation: dict[str, float] = dict.fromkeys(self._sampled, 0.0)
        ctx.links.listeners.append(self._link_changed)
        ctx.env.process(self._sample())

    def channel(self, src_region: str, dst_region: str) -> str:
        """The channel a transfer from ``src_region`` to ``dst_region`` crosses."""
        key = (src_region, dst_region)
        if key not in self._route:
            if src_region == dst_region:
                self._route[key] = f"dcn:{src_region}"
            else:
                link, _ = self.ctx.topology.link_between(src_region, dst_region)
                self._route[key] = f"{link}>{dst_region}"
        return self._route[key]

    def send(self, src_region: str, dst_region: str, nbytes: float, tag: Any = None) -> simpy.Event:
        return self.network.transfer(self.channel(src_region, dst_region), nbytes, tag=tag)

    def cancel(self, transfer: simpy.Event) -> None:
        self.network.cancel(transfer)

    def capacity_bps(self, src_region: str, dst_region: str) -> float:
        return self.network.stats(self.channel(src_region, dst_region)).capacity_bps

    def _link_changed(self, link: str, bandwidth_bps: float, latency_s: float) -> None:
        for name in self._of_link[link]:
            self.network.set_capacity(name, bandwidth_bps)
            self.network.set_latency(name, latency_s)

    def _sample(self):
        env, every_s = self.ctx.env, self.ctx.scenario.duration / 200.0
        while True:
            yield env.timeout(every_s)
            self.record_window()

    def record_window(self) -> None:
        """Utilisation of each channel over the window since the last sample, from its first carried
        byte on: a window in which it carried nothing (idle, or cut by a partition, which offers no
        capacity) is a 0, so a plot does not hold the last busy value across it."""
        now = self.ctx.env.now
        for name, (bits_before, offered_before) in self._sampled.items():
            stats = self.network.stats(name)
            bits, offered = stats.bytes_delivered * 8.0, stats.offered_bits
            self._sampled[name] = (bits, offered)
            if bits <= 0:
                continue  # it never carried anything: not a channel of this run's traffic
            value = (bits - bits_before) / (offered - offered_before) if bits > bits_before else 0.0
            self.peak_utilisation[name] = max(self.peak_utilisation[name], value)
            self.ctx.recorder.point(now, "link_utilisation", name, value)

    def link_bytes(self) -> dict[str, float]:
        """Bytes carried per topology link (both directions), for links that carried any."""
        out = {}
        for link, names in self._of_link.items():
            total = sum(self.network.stats(name).bytes_delivered for name in names)
            if total > 0:
                out[link] = total
        return out

    def utilisation(self) -> dict[str, float]:
        """Whole-run utilisation per channel that carried anything (bits / capacity offered)."""
        out = {}
        for names in self._of_link.values():
            for name in names:
                stats = self.network.stats(name)
                if stats.bytes_delivered > 0:
                    out[name] = stats.utilisation
        return out
