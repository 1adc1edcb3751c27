"""WAN transfers as a fluid model on SimPy: fair sharing, latency, degradation and partitions.

A *link* joins two regions and has a capacity (bits per second) and a one-way latency (seconds). A
*transfer* moves ``nbytes`` bytes over one link. Bits are a fluid: at every instant each transfer in
flight on a link moves at its rate, and the rates are the max-min fair allocation of the link's current
capacity (water-filling). Each flow uses a single link, so max-min means equal shares, unless a flow
has its own rate cap (``max_rate_bps``, e.g. a NIC limit): capped flows get their cap when it is below
the equal share, and the capacity they leave is shared among the others.

Timing of one transfer::

    start ──[bits pass at the flow's fair share; stalls while capacity is 0]──> sent ──[latency]──> end

Latency is added **once, after the last byte has left** (the propagation delay of the last bit), using
the latency in force at that instant. While a transfer is in its latency phase it no longer takes
capacity. A zero-byte transfer takes just the latency. The transfer's SimPy event succeeds at ``end``
with a :class:`TransferRecord`.

Changing a link's capacity (degradation, partition, repair) re-times every transfer in flight: the
bits each flow moved up to the change are booked at the old rates, then rates are recomputed.
Capacity 0 is a partition: transfers stall, and resume where they stopped when capacity returns.

Cost follows events, never bytes or time: a link holds at most one live wake-up (a SimPy timeout at
its next completion). Every start, completion and capacity change books progress, recomputes rates
and schedules a fresh wake-up; older wake-ups are recognised as stale by a generation counter and do
nothing when they fire (SimPy cannot cancel a timeout). Consequence: ``env.run()`` without ``until``
may end a little after the last real completion; runs are bounded by ``until`` anyway.

Accounting per link (see :class:`LinkStats`): bytes delivered (fluid, includes partial progress),
busy time (some flow is moving bits), stalled time (flows in flight but nothing moves: a partition),
utilisation = bits delivered / integral of capacity over time (capacity the link offered and the
transfers used; partitions offer nothing and so do not count against it), and the list of capacity
changes for plots.

Units: seconds, bits per second for rates and capacities, bytes for sizes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import simpy

# A flow whose remaining bits fall below this fraction of its size is complete. Float updates of
# ``remaining -= rate * dt`` leave residues of ~1e-16 relative per update; without a threshold such a
# residue would schedule a spurious wake-up femtoseconds later (or, at rate 0, never finish).
_REMAINING_REL_TOL = 1e-12


@dataclass(frozen=True)
class TransferRecord:
    """What a finished transfer reports: times in seconds, size in bytes."""

    link: str
    nbytes: float
    start: float  # when transfer() was called
    sent: float  # when the last byte left the link
    end: float  # sent + latency: when the event succeeded
    tag: Any = None


@dataclass(frozen=True)
class CapacityChange:
    """One point of a link's capacity timeline (the first is the capacity at creation)."""

    time_s: float
    capacity_bps: float


@dataclass(frozen=True)
class LinkStats:
    """A link's accounting as of ``env.now``.

    ``utilisation`` is bits delivered over the integral of capacity since the link was added (0 when
    the link never offered capacity); ``busy_fraction`` is busy time over elapsed time.
    """

    name: str
    capacity_bps: float
    latency_s: float
    in_flight: int
    transfers_completed: int
    bytes_delivered: float
    busy_time_s: float
    stalled_time_s: float
    elapsed_s: float
    utilisation: float
    busy_fraction: float
    capacity_changes: tuple[CapacityChange, ...]
    offered_bits: float = 0.0  # integral of capacity over time: what the link could have carried


class _Flow:
    """A transfer still sending bits."""

    __slots__ = (
        "cancelled",
        "cap_bps",
        "event",
        "link",
        "nbytes",
        "rate_bps",
        "remaining_bits",
        "start",
        "tag",
    )

    def __init__(self, event, link, nbytes, cap_bps, start, tag):
        self.event = event
        self.link = link
        self.nbytes = nbytes
        self.remaining_bits = 8.0 * nbytes
        self.cap_bps = cap_bps
        self.rate_bps = 0.0
        self.start = start
        self.tag = tag
        self.cancelled = False


class _Link:
    """A link's state: its flows in flight, one wake-up generation, and its running accounting."""

    __slots__ = (
        "busy_time_s",
        "capacity_bps",
        "capacity_time_bits",
        "capped",
        "changes",
        "completed",
        "created_at",
        "delivered_bits",
        "flows",
        "generation",
        "last_update",
        "latency_s",
        "name",
        "stalled_time_s",
    )

    def __init__(self, name, capacity_bps, latency_s, now):
        self.name = name
        self.capacity_bps = capacity_bps
        self.latency_s = latency_s
        self.flows: list[_Flow] = []  # in start order, so simultaneous completions succeed in that order
        self.capped = 0  # flows in ``flows`` with a finite rate cap (none: every flow gets an equal share)
        self.last_update = now
        self.generation = 0
        self.created_at = now
        self.delivered_bits = 0.0
        self.busy_time_s = 0.0
        self.stalled_time_s = 0.0
        self.capacity_time_bits = 0.0  # integral of capacity over time: the utilisation denominator
        self.completed = 0
        self.changes = [CapacityChange(now, capacity_bps)]


def water_fill(capacity_bps: float, caps_bps: list[float]) -> list[float]:
    """Max-min fair rates of flows sharing one link of ``capacity_bps``, each capped at its ``caps_bps``.

    Flows are visited by increasing cap: a flow whose cap is below the equal share of what is left gets
    its cap; from the first flow that can use a full share on, all remaining flows get the same share
    (assigned once, so equal flows get bit-identical rates and finish together).
    """
    rates = [0.0] * len(caps_bps)
    order = sorted(range(len(caps_bps)), key=caps_bps.__getitem__)
    left = capacity_bps
    for pos, i in enumerate(order):
        share = left / (len(order) - pos)
        if caps_bps[i] >= share:
            for j in order[pos:]:
                rates[j] = share
            break
        rates[i] = caps_bps[i]
        left -= caps_bps[i]
    return rates


def _check_number(what: str, value: float, *, positive: bool = False, allow_inf: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or value < 0 or (positive and value == 0):
        kind = "> 0" if positive else ">= 0"
        raise ValueError(f"{what} must be a finite number {kind}, got {value!r}")
    return value


class Network:
    """A set of named WAN links and the transfers on them, driven by one SimPy environment."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._links: dict[str, _Link] = {}
        self._flow_of_event: dict[simpy.Event, _Flow] = {}  # transfers whose event has not fired yet

    # ---- topology and chaos -------------------------------------------------------------------

    def add_link(self, name: str, capacity_bps: float, latency_s: float) -> None:
        """Add a link; ``capacity_bps`` may be 0 (born partitioned)."""
        if name in self._links:
            raise ValueError(f"link {name!r} already exists")
        self._links[name] = _Link(
            name, _check_number("capacity_bps", capacity_bps), _check_number("latency_s", latency_s),
            self.env.now,
        )

    def set_capacity(self, link: str, capacity_bps: float) -> None:
        """Change a link's capacity now; transfers in flight are re-timed (0 = partition: they stall)."""
        capacity_bps = _check_number("capacity_bps", capacity_bps)
        lk = self._link(link)
        self._advance(lk)  # book progress at the old rates first
        lk.capacity_bps = capacity_bps
        lk.changes.append(CapacityChange(self.env.now, capacity_bps))
        self._reschedule(lk)

    def set_latency(self, link: str, latency_s: float) -> None:
        """Change a link's latency; it applies to transfers whose last byte leaves from now on."""
        self._link(link).latency_s = _check_number("latency_s", latency_s)

    # ---- transfers --------------------------------------------------------------------------

    def transfer(self, link: str, nbytes: float, tag: Any = None, max_rate_bps: float | None = None
                 ) -> simpy.Event:
        """Start sending ``nbytes`` over ``link``; the event succeeds with a :class:`TransferRecord`.

        ``max_rate_bps`` caps this flow's rate (e.g. a NIC limit); max-min sharing gives the capacity
        it cannot use to the other flows.
        """
        lk = self._link(link)
        nbytes = _check_number("nbytes", nbytes)
        cap = math.inf if max_rate_bps is None else _check_number("max_rate_bps", max_rate_bps,
                                                                  positive=True, allow_inf=True)
        event = self.env.event()
        flow = _Flow(event, lk, nbytes, cap, self.env.now, tag)
        self._flow_of_event[event] = flow
        if nbytes == 0:
            self._deliver(flow)
            return event
        self._advance(lk)
        lk.flows.append(flow)
        if cap < math.inf:
            lk.capped += 1
        self._reschedule(lk)
        return event

    def cancel(self, transfer_event: simpy.Event) -> float:
        """Abort a transfer (its sender failed, say): it frees its share and its event never fires.

        Returns the bytes it had sent (all of them if it was already in its latency phase, or done).
        """
        if transfer_event.triggered:
            return transfer_event.value.nbytes if transfer_event.ok else 0.0
        flow = self._flow_of_event.pop(transfer_event, None)
        if flow is None:
            raise ValueError("not a transfer of this network")
        flow.cancelled = True
        lk = flow.link
        if flow in lk.flows:
            self._advance(lk)
            lk.flows.remove(flow)
            if flow.cap_bps < math.inf:
                lk.capped -= 1
            self._reschedule(lk)
        return flow.nbytes - flow.remaining_bits / 8.0

    # ---- accounting -------------------------------------------------------------------------

    @property
    def link_names(self) -> list[str]:
        return list(self._links)

    def in_flight(self, link: str) -> int:
        """Transfers on ``link`` still sending bits (not counting those in their latency phase)."""
        return len(self._link(link).flows)

    def stats(self, link: str) -> LinkStats:
        """Accounting of ``link`` as of ``env.now`` (progress since the last event is included)."""
        lk = self._link(link)
        dt = self.env.now - lk.last_update
        moving = sum(min(f.remaining_bits, f.rate_bps * dt) for f in lk.flows)
        rate = sum(f.rate_bps for f in lk.flows)
        delivered = lk.delivered_bits + moving
        busy = lk.busy_time_s + (dt if rate > 0 else 0.0)
        stalled = lk.stalled_time_s + (dt if lk.flows and rate == 0 else 0.0)
        offered = lk.capacity_time_bits + lk.capacity_bps * dt
        elapsed = self.env.now - lk.created_at
        return LinkStats(
            name=lk.name, capacity_bps=lk.capacity_bps, latency_s=lk.latency_s, in_flight=len(lk.flows),
            transfers_completed=lk.completed, bytes_delivered=delivered / 8.0, busy_time_s=busy,
            stalled_time_s=stalled, elapsed_s=elapsed,
            utilisation=delivered / offered if offered > 0 else 0.0,
            busy_fraction=busy / elapsed if elapsed > 0 else 0.0,
            capacity_changes=tuple(lk.changes), offered_bits=offered,
        )

    # ---- the fluid engine -------------------------------------------------------------------

    def _link(self, name: str) -> _Link:
        try:
            return self._links[name]
        except KeyError:
            raise KeyError(f"unknown link {name!r}; known: {sorted(self._links)}") from None

    def _advance(self, lk: _Link) -> None:
        """Book what every flow on ``lk`` moved since the last update, at the rates then in force."""
        now = self.env.now
        dt = now - lk.last_update
        if dt <= 0:
            return
        rate = 0.0
        for f in lk.flows:
            moved = min(f.remaining_bits, f.rate_bps * dt)
            f.remaining_bits -= moved
            lk.delivered_bits += moved
            rate += f.rate_bps
        if rate > 0:
            lk.busy_time_s += dt
        elif lk.flows:
            lk.stalled_time_s += dt
        lk.capacity_time_bits += lk.capacity_bps * dt
        lk.last_update = now

    def _reschedule(self, lk: _Link) -> None:
        """Recompute fair rates and set the single wake-up at the next completion (if any)."""
        lk.generation += 1  # any wake-up scheduled before this one is now stale
        flows = lk.flows
        if not flows:
            return
        due, delay = None, math.inf
        if lk.capped:
            rates = water_fill(lk.capacity_bps, [f.cap_bps for f in flows])
        else:
            # no caps: water_fill gives every flow capacity / n (computed once, as it does)
            rates = itertools.repeat(lk.capacity_bps / len(flows))
        for f, r in zip(flows, rates):
            f.rate_bps = r
            if r > 0:
                d = f.remaining_bits / r
                if d < delay:
                    due, delay = f, d
        if due is None:
            return  # partitioned: nothing moves until set_capacity() brings capacity back
        self.env.timeout(delay, (lk, lk.generation, due)).callbacks.append(self._wake)

    def _wake(self, event: simpy.Event) -> None:
        """A link's wake-up, timed for the flow ``due`` to finish (the event's value: link, generation, due)."""
        lk, generation, due = event.value
        if generation != lk.generation:
            return  # superseded by a later start, completion or capacity change
        self._advance(lk)
        still = []
        for f in lk.flows:
            # ``due`` is the flow this wake-up was timed for: it finishes now even if a float residue
            # remains, which guarantees progress; others finishing at the same instant go with it.
            if f is due or f.remaining_bits <= _REMAINING_REL_TOL * 8.0 * f.nbytes:
                lk.delivered_bits += f.remaining_bits  # the residue, so bytes add up exactly
                f.remaining_bits = 0.0
                if f.cap_bps < math.inf:
                    lk.capped -= 1
                self._deliver(f)
            else:
                still.append(f)
        lk.flows = still
        self._reschedule(lk)

    def _deliver(self, flow: _Flow) -> None:
        """The last byte has left: count it, then succeed the event after the link's latency."""
        lk = flow.link
        lk.completed += 1
        if lk.latency_s > 0:
            self.env.timeout(lk.latency_s, (flow, self.env.now)).callbacks.append(self._arrived)
        else:
            self._succeed(flow, self.env.now)

    def _arrived(self, event: simpy.Event) -> None:
        """The latency after a flow's last byte has passed (the event's value: flow, time it was sent)."""
        self._succeed(*event.value)

    def _succeed(self, flow: _Flow, sent: float) -> None:
        if flow.cancelled:
            return
        self._flow_of_event.pop(flow.event, None)
        flow.event.succeed(TransferRecord(flow.link.name, flow.nbytes, flow.start, sent, self.env.now, flow.tag))
