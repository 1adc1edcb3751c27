"""Table-driven tests of the synchronizer's pure decision (sim/syncer.py); no SimPy involved."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sim.syncer import (
    Action,
    Decision,
    Ema,
    GraceMode,
    LearnerReport,
    MergeWeighting,
    SyncConfig,
    SyncView,
    decide,
    ema_update,
    grace_window_s,
    rule,
    token_weights,
)

A, F, N = GraceMode.ADAPTIVE, GraceMode.FIXED, GraceMode.NONE
TW, UNI = MergeWeighting.TOKEN_WEIGHTED, MergeWeighting.UNIFORM


def rep(i: int, alive: bool = True, reported: bool = True, steps: int = 1, tokens: float = 100.0):
    return LearnerReport(i, alive, reported, steps, tokens)


def view(learners, now_s=10.0, quorum_met_s=None, step_s=1.0, quorum_wait_s=0.0, sync_s=0.0, opened_s=0.0):
    return SyncView(now_s, 3, opened_s, quorum_met_s, tuple(learners), step_s, quorum_wait_s, sync_s)


def reported(n_reported: int, n_total: int, dead: tuple[int, ...] = ()):
    """Learners 0..n_total-1; the first n_reported report; ids in ``dead`` are dead (and silent)."""
    return [rep(i, alive=i not in dead, reported=i < n_reported and i not in dead) for i in range(n_total)]


# ---- decide: one row per branch and edge ---------------------------------------------------------------


def case(name, learners, config, expect, says, now_s=10.0, quorum_met_s=None, emas=(1.0, 0.0, 0.0)):
    """One decide() row: inputs, expected (action, members, wait_until_s), phrases the reason must hold."""
    v = view(learners, now_s, quorum_met_s, step_s=emas[0], quorum_wait_s=emas[1], sync_s=emas[2])
    return pytest.param(now_s, v, config, expect, says, id=name)


WAIT_FOR_REPORT = (Action.WAIT, (), None)


def merge(*members):
    return (Action.MERGE, members, None)


def wait_until(t_s):
    return (Action.WAIT, (), t_s)


DECIDE_ROWS = [
    case("quorum-unmet", reported(1, 8), SyncConfig(2, N), WAIT_FOR_REPORT,
         ["quorum unmet", "waiting for the next report", "[1/8 reported, 8 alive, quorum 2]"]),
    case("quorum-above-alive-waits-for-return", reported(2, 4, dead=(2, 3)), SyncConfig(3, N), WAIT_FOR_REPORT,
         ["quorum unmet", "only 2 alive < quorum", "[2/4 reported, 2 alive, quorum 3]"]),
    case("dead-reporter-not-counted", [rep(0), rep(1, alive=False), rep(2, reported=False)], SyncConfig(2, N),
         WAIT_FOR_REPORT, ["quorum unmet", "[1/3 reported, 2 alive, quorum 2]"]),
    case("fast-path-all-reported", reported(3, 3), SyncConfig(1, F, grace_fixed_s=100.0), merge(0, 1, 2),
         ["fast path", "all alive learners reported", "[3/3 reported, 3 alive"], quorum_met_s=5.0),
    case("fast-path-ignores-dead", reported(2, 3, dead=(2,)), SyncConfig(1, F, grace_fixed_s=100.0), merge(0, 1),
         ["fast path", "[2/3 reported, 2 alive, quorum 1]"], quorum_met_s=5.0),
    case("fixed-grace-open", reported(2, 4), SyncConfig(1, F, grace_fixed_s=5.0), wait_until(15.0),
         ["quorum met", "grace window open until 15.000s", "fixed"], now_s=12.0, quorum_met_s=10.0),
    case("fixed-grace-closes-exactly-at-deadline", reported(2, 4), SyncConfig(1, F, grace_fixed_s=5.0),
         merge(0, 1), ["grace window closed at 15.000s", "[2/4 reported, 4 alive, quorum 1]"],
         now_s=15.0, quorum_met_s=10.0),
    case("fixed-grace-capped-by-max", reported(2, 4), SyncConfig(1, F, grace_fixed_s=5.0, grace_max_s=1.0),
         merge(0, 1), ["grace window closed at 11.000s", "grace fixed 1.000s"], now_s=12.0, quorum_met_s=10.0),
    case("no-grace-merges-at-quorum", reported(1, 4), SyncConfig(1, N), merge(0),
         ["grace window closed at 10.000s", "grace none 0.000s"], quorum_met_s=10.0),
    # slack = 2*10 - 2 - 4 = 14 s; grace = 0.5 * 14 = 7 s
    case("adaptive-grace-open", reported(2, 4), SyncConfig(1, A, gamma=0.5, overlap_steps=2), wait_until(107.0),
         ["grace window open until 107.000s", "grace adaptive 7.000s"], 103.0, 100.0, (10.0, 2.0, 4.0)),
    case("adaptive-grace-closed", reported(2, 4), SyncConfig(1, A, gamma=0.5, overlap_steps=2), merge(0, 1),
         ["grace window closed at 107.000s"], 107.0, 100.0, (10.0, 2.0, 4.0)),
    # slack = 2*1 - 3 - 1 < 0: the overlap hides no waiting, so there is no grace
    case("adaptive-negative-slack-no-grace", reported(2, 4), SyncConfig(1, A, gamma=0.9), merge(0, 1),
         ["grace window closed at 100.000s", "grace adaptive 0.000s"], 100.0, 100.0, (1.0, 3.0, 1.0)),
    case("quorum-time-unknown-counts-from-now", reported(2, 4), SyncConfig(1, F, grace_fixed_s=2.0),
         wait_until(12.0), ["grace window open until 12.000s"]),
    case("lockstep-waits-for-all", reported(3, 4), SyncConfig(4, N), WAIT_FOR_REPORT,
         ["quorum unmet", "[3/4 reported, 4 alive, quorum 4]"]),
    case("lockstep-merges-all", reported(4, 4), SyncConfig(4, F, grace_fixed_s=50.0), merge(0, 1, 2, 3),
         ["fast path", "[4/4 reported, 4 alive, quorum 4]"], quorum_met_s=10.0),
    case("lockstep-blocks-on-dead-learner", reported(3, 4, dead=(3,)), SyncConfig(4, N), WAIT_FOR_REPORT,
         ["quorum unmet", "only 3 alive < quorum"]),
    case("all-zero-weights-uniform-fallback", [rep(0, steps=0), rep(1, tokens=0.0)], SyncConfig(1, N),
         merge(0, 1), ["all weights zero: uniform fallback"]),
    # the round opened at 0 s: with a 30 s timeout it waits for quorum until 30 s, then merges who is there
    case("quorum-unmet-waits-until-timeout", reported(1, 4), SyncConfig(2, N, round_timeout_s=30.0),
         wait_until(30.0), ["quorum unmet", "[1/4 reported, 4 alive, quorum 2]"]),
    case("timeout-merges-short-of-quorum", reported(1, 4), SyncConfig(2, N, round_timeout_s=30.0), merge(0),
         ["round timeout after 30.000s", "[1/4 reported, 4 alive, quorum 2]"], now_s=30.0),
    case("timeout-needs-a-reporter", reported(0, 4), SyncConfig(2, N, round_timeout_s=30.0), WAIT_FOR_REPORT,
         ["quorum unmet"], now_s=40.0),
]  # fmt: skip


@pytest.mark.parametrize("now_s, v, config, expect, says", DECIDE_ROWS)
def test_decide_table(now_s, v, config, expect, says):
    """Each rule of decide() gives the expected action, members, wake time and reason."""
    d = decide(now_s, v, config)
    assert (d.action, d.members, d.wait_until_s) == expect
    for phrase in says:
        assert phrase in d.reason
    assert d.reason.startswith("fragment 3:")
    if d.action is Action.WAIT:
        assert d.weights == ()
    else:
        assert len(d.weights) == len(d.members) and math.isclose(sum(d.weights), 1.0)


def test_wait_then_merge_has_different_reasons():
    """The two grace branches are told apart by their reason text."""
    cfg = SyncConfig(1, F, grace_fixed_s=5.0)
    ls = reported(1, 2)
    assert "open" in decide(11.0, view(ls, now_s=11.0, quorum_met_s=10.0), cfg).reason
    assert "closed" in decide(15.0, view(ls, now_s=15.0, quorum_met_s=10.0), cfg).reason


# ---- members and weights in decisions ------------------------------------------------------------------


def test_token_weighted_merge_by_hand():
    """Equal tokens over 1 vs 2 steps weigh 2/3 vs 1/3 (tokens² / steps = 10000 vs 5000)."""
    ls = [rep(7, steps=2, tokens=100.0), rep(4, steps=1, tokens=100.0), rep(9, alive=False, reported=False)]
    d = decide(10.0, view(ls), SyncConfig(1, N))
    assert d.members == (4, 7)
    assert d.weights == pytest.approx((2 / 3, 1 / 3))
    assert 9 not in d.members


def test_uniform_merge_ignores_counters():
    """UNIFORM gives every member with work the same weight, whatever its token count."""
    ls = [rep(0, steps=1, tokens=10.0), rep(1, steps=5, tokens=1e6), rep(2, steps=3, tokens=7.0)]
    d = decide(10.0, view(ls), SyncConfig(1, N, merge=UNI))
    assert d.weights == pytest.approx((1 / 3,) * 3)


def reference_action(now_s, alive, reported, opened_s, met_s, grace_s, config):
    """The four rules of decide() written out once more, by hand, as a second computation: (merge?,
    wake time)."""
    if reported < config.quorum:
        timeout_at_s = opened_s + config.round_timeout_s
        if reported > 0 and now_s >= timeout_at_s:
            return True, None
        return False, timeout_at_s if reported > 0 and timeout_at_s < math.inf else None
    if reported == alive:
        return True, None
    deadline_s = (now_s if met_s is None else met_s) + grace_s
    return (False, deadline_s) if now_s < deadline_s else (True, None)


@given(
    flags=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6),
    k=st.integers(1, 6),
    mode=st.sampled_from([A, F, N]),
    opened_s=st.floats(0.0, 50.0),
    since_open_s=st.floats(0.0, 50.0),
    met_fraction=st.one_of(st.none(), st.floats(0.0, 1.0)),
    emas=st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 10.0), st.floats(0.0, 10.0)),
    timeout_s=st.sampled_from([math.inf, 5.0, 20.0]),
)
def test_rule_from_counts_gives_decides_action_and_wake_time(flags, k, mode, opened_s, since_open_s, met_fraction,
                                                              emas, timeout_s):
    """decide() on a full view, and rule() on counts alone (the round engine asks it at every evaluation
    and builds a view only for a round that merges), both give the action and wake time of the rules
    written out by hand."""
    assume(k <= len(flags))
    now_s = opened_s + since_open_s
    met_s = None if met_fraction is None else min(opened_s + met_fraction * since_open_s, now_s)
    config = SyncConfig(k, mode, grace_fixed_s=3.0, grace_max_s=8.0, round_timeout_s=timeout_s)
    learners = [rep(i, alive=a, reported=r) for i, (a, r) in enumerate(flags)]
    v = SyncView(now_s, 0, opened_s, met_s, tuple(learners), *emas)
    alive, reported = sum(a for a, _ in flags), sum(a and r for a, r in flags)
    expected = reference_action(now_s, alive, reported, opened_s, met_s, grace_window_s(v, config), config)
    d = decide(now_s, v, config)
    which, wait_until_s = rule(now_s, alive, reported, opened_s, met_s, grace_window_s(v, config), config)
    assert (d.action is Action.MERGE, d.wait_until_s) == expected
    assert (which.merges, wait_until_s) == expected
    assert which.value in d.reason


@given(st.data())
def test_decision_independent_of_input_order(data):
    """Shuffling the learners in the view never changes the decision."""
    n = data.draw(st.integers(1, 8))
    ls = [
        rep(
            i * 3,
            alive=data.draw(st.booleans()),
            reported=data.draw(st.booleans()),
            steps=data.draw(st.integers(0, 5)),
            tokens=float(data.draw(st.integers(0, 500))),
        )
        for i in range(n)
    ]
    k = data.draw(st.integers(1, n))
    cfg = SyncConfig(k, F, grace_fixed_s=data.draw(st.sampled_from([0.0, 1.0, 5.0])))
    shuffled = data.draw(st.permutations(ls))
    a = decide(12.0, view(ls, now_s=12.0, quorum_met_s=10.0), cfg)
    b = decide(12.0, view(shuffled, now_s=12.0, quorum_met_s=10.0), cfg)
    assert a == b
    assert list(a.members) == sorted(a.members)


# ---- token_weights --------------------------------------------------------------------------------------

WEIGHT_ROWS = [
    pytest.param([1, 2], [100.0, 100.0], TW, (2 / 3, 1 / 3), id="hand-2/3-1/3"),
    pytest.param([1, 1], [100.0, 300.0], TW, (0.1, 0.9), id="quadratic-in-tokens"),
    pytest.param([4, 4, 4], [50.0, 50.0, 50.0], TW, (1 / 3, 1 / 3, 1 / 3), id="ties-equal"),
    pytest.param([0, 2], [100.0, 100.0], TW, (0.0, 1.0), id="zero-steps-weighs-0"),
    pytest.param([3, 2], [0.0, 100.0], TW, (0.0, 1.0), id="zero-tokens-weighs-0"),
    pytest.param([0, 1], [10.0, 0.0], TW, (0.5, 0.5), id="all-zero-uniform-fallback"),
    pytest.param([1, 9], [5.0, 1e9], UNI, (0.5, 0.5), id="uniform"),
    pytest.param([0, 9], [5.0, 1e9], UNI, (0.0, 1.0), id="uniform-zero-steps-weighs-0"),
    pytest.param([0, 1], [0.0, 1e-231], TW, (0.0, 1.0), id="tiny-tokens-no-underflow"),
    pytest.param([1, 2], [1e200, 1e200], TW, (2 / 3, 1 / 3), id="huge-tokens-no-overflow"),
    pytest.param([], [], TW, (), id="empty"),
]


@pytest.mark.parametrize("steps, tokens, mode, expected", WEIGHT_ROWS)
def test_token_weights_table(steps, tokens, mode, expected):
    """token_weights matches hand-computed weights, including zero and fallback cases."""
    assert token_weights(steps, tokens, mode) == pytest.approx(expected)


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(0, 1e12, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from(list(MergeWeighting)),
)
def test_token_weights_nonnegative_sum_to_one(counters, mode):
    """Weights are non-negative, sum to 1, and are 0 for a member without steps or tokens."""
    steps = [s for s, _ in counters]
    tokens = [t for _, t in counters]
    w = token_weights(steps, tokens, mode)
    assert len(w) == len(counters)
    assert all(x >= 0 for x in w)
    assert math.isclose(sum(w), 1.0, rel_tol=1e-9)
    if any(s > 0 and t > 0 for s, t in counters):  # otherwise the uniform fallback applies
        assert all(x == 0 for x, (s, t) in zip(w, counters) if s == 0 or t == 0)


def test_token_weights_length_mismatch_raises():
    """Counters of different lengths are a caller bug, not a silent truncation."""
    with pytest.raises(ValueError):
        token_weights([1, 2], [1.0], TW)


# ---- grace window ---------------------------------------------------------------------------------------

# id, config, (step, quorum_wait, sync) EMAs, expected grace seconds
GRACE_ROWS = [
    pytest.param(SyncConfig(1, N, grace_fixed_s=9.0), (10, 0, 0), 0.0, id="none"),
    pytest.param(SyncConfig(1, F, grace_fixed_s=3.0), (10, 0, 0), 3.0, id="fixed"),
    pytest.param(SyncConfig(1, F, grace_fixed_s=3.0, grace_max_s=2.0), (10, 0, 0), 2.0, id="fixed-capped"),
    pytest.param(SyncConfig(1, A, gamma=0.5, overlap_steps=2), (10, 2, 4), 7.0, id="adaptive"),
    pytest.param(
        SyncConfig(1, A, gamma=0.5, overlap_steps=2, grace_max_s=3.0), (10, 2, 4), 3.0, id="adaptive-capped"
    ),
    pytest.param(SyncConfig(1, A, gamma=0.9, overlap_steps=1), (1, 2, 0), 0.0, id="adaptive-negative-slack"),
    pytest.param(SyncConfig(1, A, gamma=0.0), (10, 0, 0), 0.0, id="adaptive-gamma-zero"),
    pytest.param(SyncConfig(1, A, overlap_steps=0), (10, 0, 0), 0.0, id="adaptive-no-overlap"),
]


@pytest.mark.parametrize("config, emas, expected_s", GRACE_ROWS)
def test_grace_window_table(config, emas, expected_s):
    """grace_window_s follows its mode and its caps."""
    v = view(reported(1, 2), step_s=emas[0], quorum_wait_s=emas[1], sync_s=emas[2])
    assert grace_window_s(v, config) == pytest.approx(expected_s)


_secs = st.floats(0, 1e5, allow_nan=False, allow_infinity=False)


@given(
    step_s=_secs,
    quorum_wait_s=_secs,
    sync_s=_secs,
    gamma=st.floats(0, 1, exclude_max=True),
    tau=st.integers(0, 10),
    grace_max_s=st.one_of(st.just(math.inf), _secs),
    fixed_s=_secs,
)
def test_grace_never_beyond_slack_bound_or_cap(
    step_s, quorum_wait_s, sync_s, gamma, tau, grace_max_s, fixed_s
):
    """Adaptive grace is within [0, γ·max(slack, 0)] and grace_max_s; fixed grace within grace_max_s."""
    v = view(reported(1, 2), step_s=step_s, quorum_wait_s=quorum_wait_s, sync_s=sync_s)
    adaptive = grace_window_s(v, SyncConfig(1, A, gamma=gamma, overlap_steps=tau, grace_max_s=grace_max_s))
    slack_s = tau * step_s - quorum_wait_s - sync_s
    assert 0.0 <= adaptive <= max(gamma * slack_s, 0.0) + 1e-9
    assert adaptive <= grace_max_s
    assert adaptive <= max(slack_s, 0.0)  # γ < 1: the grace never eats more than the slack
    fixed = grace_window_s(v, SyncConfig(1, F, grace_fixed_s=fixed_s, grace_max_s=grace_max_s))
    assert 0.0 <= fixed <= min(fixed_s, grace_max_s)


# ---- Ema ------------------------------------------------------------------------------------------------


def test_ema_first_sample_seeds_then_decays():
    """The first sample is the average; later samples move it by alpha of the gap."""
    e0 = Ema(0.25)
    e1 = e0.update(8.0)
    e2 = e1.update(4.0)
    assert (e0.value, e1.value, e2.value) == (None, 8.0, 7.0)
    assert e0.value_or(3.0) == 3.0 and e2.value_or(3.0) == 7.0
    assert ema_update(None, 5.0, 0.5) == 5.0 and ema_update(10.0, 0.0, 0.5) == 5.0


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, math.nan], ids=["zero", "negative", "above-1", "nan"])
def test_ema_bad_alpha_raises(alpha):
    """alpha outside (0, 1] is rejected."""
    with pytest.raises(ValueError, match="alpha"):
        Ema(alpha)


def test_ema_rejects_non_finite_sample():
    """A NaN or infinite sample would poison the average forever."""
    with pytest.raises(ValueError, match="finite"):
        Ema(0.5).update(math.inf)


# ---- validation -----------------------------------------------------------------------------------------

BAD_CONFIGS = [
    pytest.param({"quorum": 0, "grace_mode": N}, ValueError, "quorum", id="quorum-zero"),
    pytest.param({"quorum": True, "grace_mode": N}, TypeError, "quorum", id="quorum-bool"),
    pytest.param({"quorum": 1.5, "grace_mode": N}, TypeError, "quorum", id="quorum-float"),
    pytest.param({"quorum": 1, "grace_mode": A, "gamma": 1.0}, ValueError, "gamma", id="gamma-one"),
    pytest.param({"quorum": 1, "grace_mode": A, "gamma": -0.1}, ValueError, "gamma", id="gamma-negative"),
    pytest.param(
        {"quorum": 1, "grace_mode": F, "grace_fixed_s": -1.0}, ValueError, "grace_fixed_s", id="fixed-neg"
    ),
    pytest.param(
        {"quorum": 1, "grace_mode": F, "grace_fixed_s": math.inf}, ValueError, "grace_fixed_s", id="fixed-inf"
    ),
    pytest.param(
        {"quorum": 1, "grace_mode": A, "grace_max_s": -1.0}, ValueError, "grace_max_s", id="max-negative"
    ),
    pytest.param(
        {"quorum": 1, "grace_mode": A, "grace_max_s": math.nan}, ValueError, "grace_max_s", id="max-nan"
    ),
    pytest.param(
        {"quorum": 1, "grace_mode": A, "overlap_steps": -1}, ValueError, "overlap_steps", id="tau-negative"
    ),
    pytest.param({"quorum": 1, "grace_mode": "adaptive"}, TypeError, "GraceMode", id="mode-string"),
    pytest.param(
        {"quorum": 1, "grace_mode": A, "merge": "uniform"}, TypeError, "MergeWeighting", id="merge-string"
    ),
]


@pytest.mark.parametrize("kwargs, error, phrase", BAD_CONFIGS)
def test_bad_config_raises(kwargs, error, phrase):
    """Invalid synchronizer settings fail at construction with the field named."""
    with pytest.raises(error, match=phrase):
        SyncConfig(**kwargs)


BAD_VIEWS = [
    pytest.param(lambda: view([rep(1), rep(1)]), "duplicate learner ids", id="duplicate-ids"),
    pytest.param(lambda: view(reported(1, 2), step_s=-1.0), "ema_step_s", id="negative-ema"),
    pytest.param(lambda: view(reported(1, 2), sync_s=math.nan), "ema_sync_s", id="nan-ema"),
    pytest.param(
        lambda: view(reported(1, 2), now_s=1.0, opened_s=2.0), "before round_opened_s", id="time-order"
    ),
    pytest.param(
        lambda: view(reported(1, 2), now_s=5.0, quorum_met_s=6.0), "quorum_met_s", id="quorum-future"
    ),
    pytest.param(lambda: rep(0, steps=-1), "steps", id="negative-steps"),
    pytest.param(lambda: rep(0, tokens=math.nan), "tokens", id="nan-tokens"),
    pytest.param(
        lambda: Decision(Action.MERGE, (1, 2), (1.0,), None, "x"), "weights", id="misaligned-decision"
    ),
]


@pytest.mark.parametrize("build, phrase", BAD_VIEWS)
def test_bad_view_raises(build, phrase):
    """Inconsistent views, reports and decisions are rejected with a clear message."""
    with pytest.raises(ValueError, match=phrase):
        build()


def test_decide_rejects_time_before_view():
    """Asking about a moment before the view was taken is a driver bug (e.g. swapped arguments)."""
    with pytest.raises(ValueError, match="earlier than the view"):
        decide(5.0, view(reported(1, 2), now_s=10.0), SyncConfig(1, N))


@pytest.mark.parametrize("n_learners, k", [(3, 4), (0, 1)], ids=["k-above-m", "no-learners"])
def test_decide_rejects_unreachable_quorum(n_learners, k):
    """K above the number of learners can never be met, so it is a config error, not an endless wait."""
    with pytest.raises(ValueError, match="never reachable"):
        decide(10.0, view(reported(n_learners, n_learners)), SyncConfig(k, N))
