"""Fluid WAN model (sim/network.py) against hand-computed schedules, plus conservation properties."""

from __future__ import annotations

import math

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.network import CapacityChange, Network, TransferRecord, water_fill

GB = 1e9  # bytes
GBPS = 1e9  # bits per second


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def make(capacity_bps=2 * GBPS, latency_s=0.0, name="a~b"):
    env = simpy.Environment()
    net = Network(env)
    net.add_link(name, capacity_bps, latency_s)
    return env, net


def start_at(env, net, t, nbytes, link="a~b", **kw):
    """Start a transfer at time ``t``; returns a list that receives its record when it completes."""
    out = []

    def proc():
        yield env.timeout(t)
        out.append((yield net.transfer(link, nbytes, **kw)))

    env.process(proc())
    return out


def at(env, t, fn):
    """Call ``fn()`` at time ``t`` (a chaos action)."""

    def proc():
        yield env.timeout(t)
        fn()

    env.process(proc())


def test_one_flow():
    """1 GB over 2 Gbit/s with 30 ms latency arrives at 4.03 s; the last byte left at 4 s."""
    env, net = make(2 * GBPS, 0.030)
    ev = net.transfer("a~b", 1 * GB, tag="grad")
    env.run()
    rec = ev.value
    assert isinstance(rec, TransferRecord)
    assert (rec.start, rec.sent, rec.end) == (0.0, approx(4.0), approx(4.03))
    assert rec.nbytes == 1 * GB and rec.tag == "grad" and rec.link == "a~b"


def test_two_equal_flows_share_the_link():
    """Two 1 GB flows started together each get 1 Gbit/s of 2 Gbit/s and both finish at 8 s."""
    env, net = make(2 * GBPS, 0.0)
    a, b = net.transfer("a~b", GB), net.transfer("a~b", GB)
    env.run()
    assert a.value.end == approx(8.0) and b.value.end == approx(8.0)


def test_staggered_flows_piecewise_schedule():
    """A (3 GB at 0 s) and B (1 GB at 1 s) on 1 GB/s: A alone, then halves to 3 s (B done), A done at 4 s."""
    env, net = make(8 * GBPS, 0.010)
    a = start_at(env, net, 0.0, 3 * GB)
    b = start_at(env, net, 1.0, 1 * GB)
    env.run()
    # 0-1 s: A alone moves 1 GB. 1-3 s: 0.5 GB/s each, B's 1 GB done at 3 s, A has 1 GB left.
    # 3-4 s: A alone again. Each arrives 10 ms after its last byte.
    assert b[0].sent == approx(3.0) and b[0].end == approx(3.01)
    assert a[0].sent == approx(4.0) and a[0].end == approx(4.01)


def test_capacity_change_retimes_flow_in_flight():
    """1 GB at 2 Gbit/s; at 1 s the link drops to 1 Gbit/s (6 Gbit left: 6 s), at 4 s rises to 4 Gbit/s."""
    env, net = make(2 * GBPS, 0.0)
    ev = net.transfer("a~b", GB)
    at(env, 1.0, lambda: net.set_capacity("a~b", 1 * GBPS))
    at(env, 4.0, lambda: net.set_capacity("a~b", 4 * GBPS))
    env.run()
    # 0-1 s: 2 Gbit. 1-4 s: 3 Gbit. 3 Gbit left at 4 Gbit/s: 0.75 s.
    assert ev.value.end == approx(4.75)
    assert net.stats("a~b").capacity_changes == (
        CapacityChange(0.0, 2 * GBPS), CapacityChange(1.0, 1 * GBPS), CapacityChange(4.0, 4 * GBPS))


def test_partition_stalls_exactly_its_duration():
    """A partition from 1 s to 3.5 s stalls a transfer in flight; a flow started during it waits for it."""
    env, net = make(2 * GBPS, 0.030)
    ev = net.transfer("a~b", GB)
    late = start_at(env, net, 2.0, 0.25 * GB)  # starts while partitioned
    at(env, 1.0, lambda: net.set_capacity("a~b", 0.0))
    at(env, 3.5, lambda: net.set_capacity("a~b", 2 * GBPS))
    env.run()
    # After healing, 6 Gbit (A) and 2 Gbit (late) share 2 Gbit/s: late done at 3.5 + 2 = 5.5 s,
    # A then has 4 Gbit left alone: 2 s more, at 7.5 s. Without the late flow A would finish at 6.5 s.
    assert late[0].sent == approx(5.5)
    assert ev.value.sent == approx(7.5) and ev.value.end == approx(7.53)
    stats = net.stats("a~b")
    assert stats.stalled_time_s == approx(2.5) and stats.busy_time_s == approx(5.0)


def test_partition_alone_shifts_completion_by_its_length():
    """The same transfer with no other traffic arrives 4.03 s + 2.5 s of partition = 6.53 s."""
    env, net = make(2 * GBPS, 0.030)
    ev = net.transfer("a~b", GB)
    at(env, 1.0, lambda: net.set_capacity("a~b", 0.0))
    at(env, 3.5, lambda: net.set_capacity("a~b", 2 * GBPS))
    env.run()
    assert ev.value.end == approx(6.53)


def test_many_flows_finish_in_order_at_processor_sharing_times():
    """n flows of 1..n GB started together on 1 GB/s finish in size order at t_k = sum_{j<=k} (n - j + 1)."""
    n = 50
    env, net = make(8 * GBPS, 0.0)
    events = [net.transfer("a~b", k * GB, tag=k) for k in range(1, n + 1)]
    done = []
    for ev in events:
        ev.callbacks.append(lambda e: done.append(e.value.tag))
    env.run()
    assert done == list(range(1, n + 1))
    expected = 0.0
    for k, ev in enumerate(events, start=1):
        expected += n - k + 1  # between completions k-1 and k, n-k+1 flows share the link
        assert ev.value.end == approx(expected)


def test_event_count_does_not_grow_with_bytes():
    """A 1 TB transfer costs the same number of SimPy events as a 1 kB one (no per-byte polling)."""

    def events_for(nbytes):
        env, net = make(2 * GBPS, 0.030)
        net.transfer("a~b", nbytes)
        net.transfer("a~b", nbytes / 3)
        count = 0
        while env.peek() < math.inf:
            env.step()
            count += 1
        return count

    assert events_for(1e12) == events_for(1e3)


def test_zero_bytes_take_just_the_latency():
    """A zero-byte transfer arrives after the latency (even partitioned), at once with zero latency."""
    env, net = make(0.0, 0.030)  # partitioned: nothing to send, so nothing to wait for
    ev = net.transfer("a~b", 0)
    env.run()
    assert (ev.value.sent, ev.value.end) == (0.0, approx(0.030))
    env, net = make(2 * GBPS, 0.0)
    ev = net.transfer("a~b", 0)
    assert ev.triggered and ev.value.end == 0.0


def test_water_fill_max_min():
    """Water-filling gives capped flows their cap and splits the rest equally; an all-capped link idles."""
    assert water_fill(10.0, [1.0, 2.0, math.inf, math.inf]) == [1.0, 2.0, 3.5, 3.5]
    assert water_fill(10.0, [math.inf, 4.0, 3.0]) == [3.5, 3.5, 3.0]  # 4 > 3.5: not binding
    assert water_fill(10.0, [1.0, 2.0]) == [1.0, 2.0]
    assert water_fill(0.0, [1.0, math.inf]) == [0.0, 0.0]
    assert water_fill(9.0, [math.inf] * 3) == [3.0, 3.0, 3.0]


def test_per_flow_cap_water_filling_in_time():
    """On 10 Gbit/s, A capped at 2 Gbit/s (1 GB) ends at 4 s; B (5 GB) gets 8, then 10 Gbit/s: 4.8 s."""
    env, net = make(10 * GBPS, 0.0)
    a = net.transfer("a~b", 1 * GB, max_rate_bps=2 * GBPS)
    b = net.transfer("a~b", 5 * GB)
    env.run()
    assert a.value.end == approx(4.0) and b.value.end == approx(4.8)


def test_lone_capped_flow_leaves_capacity_unused():
    """A flow capped at 1 Gbit/s on a 4 Gbit/s link takes 8 s for 1 GB; utilisation is 1/4."""
    env, net = make(4 * GBPS, 0.0)
    ev = net.transfer("a~b", GB, max_rate_bps=1 * GBPS)
    env.run()
    assert ev.value.end == approx(8.0)
    assert net.stats("a~b").utilisation == approx(0.25)


def test_bytes_and_utilisation_accounting():
    """Bytes delivered add up; busy time counts moving time; utilisation = bits / (capacity x time)."""
    env, net = make(2 * GBPS, 0.030)
    start_at(env, net, 0.0, 0.5 * GB)
    start_at(env, net, 0.0, 0.5 * GB)  # both done at 4 s
    start_at(env, net, 6.0, 0.25 * GB)  # alone 6 s to 7 s
    env.run(until=10.0)
    s = net.stats("a~b")
    assert s.bytes_delivered == approx(1.25 * GB)
    assert s.transfers_completed == 3 and s.in_flight == 0
    assert s.busy_time_s == approx(5.0) and s.elapsed_s == 10.0 and s.busy_fraction == approx(0.5)
    assert s.utilisation == approx(10e9 / (2 * GBPS * 10.0))


def test_stats_include_progress_since_last_event():
    """Mid-transfer, stats count the bits moved so far without disturbing the schedule."""
    env, net = make(2 * GBPS, 0.0)
    ev = net.transfer("a~b", GB)
    env.run(until=1.0)
    assert net.stats("a~b").bytes_delivered == approx(0.25 * GB)
    env.run()
    assert ev.value.end == approx(4.0)


def test_latency_in_force_when_last_byte_leaves_applies():
    """Latency is added once, after the last byte, at the value in force then (set_latency mid-flight)."""
    env, net = make(2 * GBPS, 0.030)
    ev = net.transfer("a~b", GB)
    at(env, 1.0, lambda: net.set_latency("a~b", 0.100))
    env.run()
    assert ev.value.end == approx(4.1)


def test_cancel_frees_the_share():
    """Cancelling one of two equal flows at 2 s gives the other the full link; its event never fires."""
    env, net = make(2 * GBPS, 0.0)
    a, b = net.transfer("a~b", GB), net.transfer("a~b", GB)
    sent = []
    at(env, 2.0, lambda: sent.append(net.cancel(b)))
    env.run()
    # 0-2 s at 1 Gbit/s each: 0.25 GB sent. A's 6 Gbit left at 2 Gbit/s: 3 s more.
    assert sent == [approx(0.25 * GB)]
    assert a.value.end == approx(5.0) and not b.triggered
    assert net.stats("a~b").bytes_delivered == approx(1.25 * GB)


def test_cancel_in_the_latency_phase_silences_the_arrival():
    """A transfer cancelled after its last byte left (in its latency phase) has sent every byte, and
    nothing waiting on it hears it arrive; one cancelled after it arrived reports its bytes too."""
    env, net = make(2 * GBPS, 0.5)
    a, b = net.transfer("a~b", GB), net.transfer("a~b", GB)  # both leave at 8 s, arrive at 8.5 s
    heard, sent = [], []
    b.callbacks.append(lambda e: heard.append(e.value.end))
    a.callbacks.append(lambda e: heard.append(("a", e.value.end)))
    at(env, 8.2, lambda: sent.append(net.cancel(b)))
    at(env, 9.0, lambda: sent.append(net.cancel(a)))
    env.run()
    assert heard == [("a", approx(8.5))] and sent == [GB, GB]
    assert net.stats("a~b").transfers_completed == 2 and net.stats("a~b").bytes_delivered == approx(2 * GB)


def test_links_are_independent():
    """Traffic on one link does not slow another."""
    env, net = make(2 * GBPS, 0.0, name="x")
    net.add_link("y", 2 * GBPS, 0.0)
    a, b, c = net.transfer("x", GB), net.transfer("x", GB), net.transfer("y", GB)
    env.run()
    assert (a.value.end, b.value.end, c.value.end) == (approx(8.0), approx(8.0), approx(4.0))


def test_bad_input_is_rejected():
    """Unknown links, duplicate links, negative sizes and rates, NaN and a zero cap raise clear errors."""
    _env, net = make()
    with pytest.raises(KeyError, match="unknown link 'nope'"):
        net.transfer("nope", 1)
    with pytest.raises(ValueError, match="already exists"):
        net.add_link("a~b", 1.0, 0.0)
    with pytest.raises(ValueError, match="nbytes"):
        net.transfer("a~b", -1)
    with pytest.raises(ValueError, match="capacity_bps"):
        net.set_capacity("a~b", float("nan"))
    with pytest.raises(ValueError, match="latency_s"):
        net.set_latency("a~b", -0.1)
    with pytest.raises(ValueError, match="max_rate_bps"):
        net.transfer("a~b", 1, max_rate_bps=0)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.floats(1e3, 1e10), min_size=1, max_size=12),
    changes=st.lists(st.tuples(st.floats(0.0, 50.0), st.sampled_from([0.0, 0.5e9, 1e9, 3e9, 1e10])),
                     max_size=6),
)
def test_work_conservation_under_capacity_changes(sizes, changes):
    """Flows started together all finish, bytes add up, and the last one ends when the capacity integral
    equals the total bits (a fair-share link is work-conserving), whatever the capacity changes."""
    env, net = make(2 * GBPS, 0.0)
    events = [net.transfer("a~b", s) for s in sizes]
    timeline = sorted(changes)
    for t, c in timeline:
        at(env, t, lambda c=c: net.set_capacity("a~b", c))
    at(env, 60.0, lambda: net.set_capacity("a~b", 2 * GBPS))  # never leave it partitioned for good
    env.run()
    assert all(ev.ok for ev in events)
    assert net.stats("a~b").bytes_delivered == pytest.approx(sum(sizes), rel=1e-9)
    # Integrate the piecewise-constant capacity until it covers the total bits: the finish time.
    points = [(0.0, 2 * GBPS), *timeline, (60.0, 2 * GBPS)]
    need, finish = 8 * sum(sizes), None
    for (t0, c), (t1, _) in zip(points, [*points[1:], (math.inf, 0.0)]):
        if c > 0 and need <= c * (t1 - t0):
            finish = t0 + need / c
            break
        need -= c * (t1 - t0)
    assert max(ev.value.end for ev in events) == pytest.approx(finish, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    starts=st.lists(st.tuples(st.floats(0, 20), st.floats(0, 5 * GB)), min_size=1, max_size=8),
    changes=st.lists(st.tuples(st.floats(0, 20), st.sampled_from([0.0, 0.5 * GBPS, 2 * GBPS])), max_size=3),
    cancel=st.integers(0, 8),
)
def test_uncapped_flows_share_equally_exactly_as_water_filling_does(starts, changes, cancel):
    """Without rate caps a link gives every flow capacity / n instead of calling water_fill; the same
    transfers with a cap no share reaches (so water_fill runs and binds none) end at bit-identical
    times, through capacity changes, partitions and a cancellation."""

    def play(cap):
        env, net = make(2 * GBPS, 0.01)
        outs = [start_at(env, net, t, nbytes, max_rate_bps=cap) for t, nbytes in starts]
        for t, bw in changes:
            at(env, t, lambda bw=bw: net.set_capacity("a~b", bw))
        at(env, 10.0, lambda: [net.cancel(e) for e in list(net._flow_of_event)[:cancel]])
        at(env, 40.0, lambda: net.set_capacity("a~b", 2 * GBPS))
        env.run(until=200.0)
        return [out[0] if out else None for out in outs], net.stats("a~b")

    fast, slow = play(None), play(1e300)
    assert fast == slow
