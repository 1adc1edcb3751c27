"""The Decoupled DiLoCo synchronizer's decision: quorum, grace window and token-weighted membership.

In Decoupled DiLoCo (``reference/diloco.md`` §1) learners never wait. Each one trains on its own and
reports, per fragment p, the counters ``c_steps`` and ``c_tokens`` it has accumulated since it last
received Θ_p. At fragment p's slot the synchronizer runs one *round* (Algorithm 2, §1.4):

1. **Minimum quorum K.** Wait until at least K learners have reported. K = 1 (the default in the paper)
   never stops while one learner is alive; K = M is lockstep (§1.5).
2. **Grace window.** Once the quorum is met, optionally wait a little longer for stragglers. The
   adaptive window is bounded by the slack that the τ-step overlap hides (§1.5, "Eq. 3")::

       ξ_slack = τ·ξ_step − (ξ_quorum + ξ_sync),    ξ_grace ≤ γ·ξ_slack,  0 ≤ γ < 1

   where ξ_step, ξ_quorum and ξ_sync are exponential moving averages (:class:`Ema`) of the step time,
   the time from round open to quorum, and the time a merge takes. Waiting inside that slack costs no
   goodput; the paper gives no γ, EMA constant or hard cap, so all three are parameters here.
3. **Merge** the fragments of the learners present, weighted by ``c_tokens · (c_tokens / c_steps)``
   ("quantity × quality", §1.5), normalised. A learner that is absent or dead weighs 0 and contributes
   at a later round with larger counters (§1.7).

This module holds the decision only, as a **pure function**: :func:`decide` takes the time, a
:class:`SyncView` snapshot and a :class:`SyncConfig`, and returns a :class:`Decision` with a ``reason``
for every branch. Its control flow is :func:`rule`, on counts alone: a driver asks it at every
evaluation, gathers the view and calls :func:`decide` for a round that merges, applies the decision
and wakes up again (on the next report, or at ``wait_until_s``). There is no SimPy here. The shape follows torchft's
``quorum_compute(now, state, opt) -> (members, reason)`` (``STYLE.md`` §1.D, rule 2): time is an
argument, rules run in order, members are sorted by id, so the decision is table-testable and
deterministic whatever order the driver lists learners in.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class GraceMode(Enum):
    """How long the synchronizer waits for stragglers after the quorum is met."""

    ADAPTIVE = "adaptive"  # γ · slack from the EMAs, clamped to [0, grace_max_s]
    FIXED = "fixed"  # grace_fixed_s, capped by grace_max_s
    NONE = "none"  # merge as soon as the quorum is met


class MergeWeighting(Enum):
    """How members' fragments are weighted in the merge."""

    TOKEN_WEIGHTED = "token_weighted"  # tokens² / steps, normalised
    UNIFORM = "uniform"  # equal weights


class Action(Enum):
    """What the driver does next for this fragment round."""

    WAIT = "wait"
    MERGE = "merge"


@dataclass(frozen=True, slots=True)
class LearnerReport:
    """One learner's state for the current fragment round.

    ``steps`` and ``tokens`` are the counters c_steps and c_tokens accumulated since this learner last
    received the fragment; ``reported`` says whether its metadata for this round has arrived.
    """

    learner_id: int
    alive: bool
    reported: bool
    steps: int
    tokens: float

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"learner {self.learner_id}: steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.tokens) and self.tokens >= 0):
            raise ValueError(f"learner {self.learner_id}: tokens must be finite and >= 0, got {self.tokens}")


@dataclass(frozen=True, slots=True)
class SyncView:
    """What the driver knows about one fragment round when it asks for a decision.

    ``quorum_met_s`` is when the round first reached K reporters (None if it has not, or if the driver
    does not track it: the decision then treats "now" as the moment the quorum was met). The three
    ``ema_*_s`` fields are the driver's moving averages ξ_step, ξ_quorum and ξ_sync, in seconds.
    """

    now_s: float
    fragment: int
    round_opened_s: float
    quorum_met_s: float | None
    learners: tuple[LearnerReport, ...]
    ema_step_s: float
    ema_quorum_wait_s: float
    ema_sync_s: float

    def __post_init__(self) -> None:
        ids = [r.learner_id for r in self.learners]
        if len(set(ids)) != len(ids):
            raise ValueError(f"fragment {self.fragment}: duplicate learner ids in view: {sorted(ids)}")
        for name in ("ema_step_s", "ema_quorum_wait_s", "ema_sync_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.now_s < self.round_opened_s:
            raise ValueError(f"now_s {self.now_s} is before round_opened_s {self.round_opened_s}")
        if self.quorum_met_s is not None and not (self.round_opened_s <= self.quorum_met_s <= self.now_s):
            raise ValueError(
                f"quorum_met_s {self.quorum_met_s} must lie in [round_opened_s, now_s] = "
                f"[{self.round_opened_s}, {self.now_s}]"
            )


class TrustedSyncView(SyncView):
    """A :class:`SyncView` built by a driver whose values are valid by construction (the round engine:
    ids from its learner list, EMAs of non-negative durations, times in order), so the checks of
    ``SyncView.__post_init__`` are skipped. Everything else, :func:`decide` included, is the same."""

    __slots__ = ()

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """The synchronizer's knobs (``reference/diloco.md`` §1.5); every one is a scenario parameter.

    ``quorum`` is the minimum K of reporters; ``gamma`` the fraction of slack the adaptive grace may use;
    ``grace_max_s`` a hard cap on any grace window; ``overlap_steps`` is τ, the steps a fragment's
    transfer overlaps with compute.
    """

    quorum: int
    grace_mode: GraceMode
    gamma: float = 0.5
    grace_fixed_s: float = 0.0
    grace_max_s: float = math.inf
    overlap_steps: int = 2
    merge: MergeWeighting = MergeWeighting.TOKEN_WEIGHTED
    round_timeout_s: float = math.inf  # merge a round short of quorum this long after it opened

    def __post_init__(self) -> None:
        if not isinstance(self.grace_mode, GraceMode):
            raise TypeError(f"grace_mode must be a GraceMode, got {self.grace_mode!r}")
        if not isinstance(self.merge, MergeWeighting):
            raise TypeError(f"merge must be a MergeWeighting, got {self.merge!r}")
        # bool is an int subclass; quorum=True is almost surely a mistake, so reject it.
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int):
            raise TypeError(f"quorum must be an int, got {self.quorum!r}")
        if self.quorum < 1:
            raise ValueError(f"quorum must be >= 1, got {self.quorum}")
        if not (0.0 <= self.gamma < 1.0):
            # γ < 1 is what keeps the grace strictly inside the slack (reference §1.5).
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not (math.isfinite(self.grace_fixed_s) and self.grace_fixed_s >= 0):
            raise ValueError(f"grace_fixed_s must be finite and >= 0, got {self.grace_fixed_s}")
        if math.isnan(self.grace_max_s) or self.grace_max_s < 0:
            raise ValueError(f"grace_max_s must be >= 0 (inf allowed), got {self.grace_max_s}")
        if isinstance(self.overlap_steps, bool) or not isinstance(self.overlap_steps, int):
            raise TypeError(f"overlap_steps must be an int, got {self.overlap_steps!r}")
        if self.overlap_steps < 0:
            raise ValueError(f"overlap_steps must be >= 0, got {self.overlap_steps}")
        if math.isnan(self.round_timeout_s) or self.round_timeout_s <= 0:
            raise ValueError(f"round_timeout_s must be > 0 (inf: never), got {self.round_timeout_s}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The synchronizer's answer for one fragment round.

    MERGE: ``members`` (sorted ids) and ``weights`` (aligned, summing to 1) say who is merged and how.
    WAIT: members and weights are empty; ``wait_until_s`` is the time to ask again, or None meaning
    "ask again on the next report or membership change".
    """

    action: Action
    members: tuple[int, ...]
    weights: tuple[float, ...]
    wait_until_s: float | None
    reason: str

    def __post_init__(self) -> None:
        if len(self.members) != len(self.weights):
            raise ValueError(f"{len(self.members)} members but {len(self.weights)} weights")


@dataclass(frozen=True, slots=True)
class Ema:
    """Exponential moving average as an immutable value: ``ema = ema.update(x)``.

    The first sample seeds the average (rather than decaying up from 0), so a fresh EMA does not
    report a step time near zero, which would make the adaptive grace collapse for the first rounds.
    """

    alpha: float
    value: float | None = None

    def __post_init__(self) -> None:
        if not (0.0 < self.alpha <= 1.0):
            raise ValueError(f"EMA alpha must be in (0, 1], got {self.alpha}")

    def update(self, x: float) -> Ema:
        """Return a new Ema that has also seen sample ``x``."""
        return Ema(self.alpha, ema_update(self.value, x, self.alpha))

    def value_or(self, default: float) -> float:
        """The current average, or ``default`` before the first sample."""
        return default if self.value is None else self.value


def ema_update(prev: float | None, x: float, alpha: float) -> float:
    """One EMA step: ``prev + alpha * (x - prev)``; the first sample (``prev is None``) is returned as is."""
    if not math.isfinite(x):
        raise ValueError(f"EMA sample must be finite, got {x}")
    return x if prev is None else prev + alpha * (x - prev)


def grace_window_s(view: SyncView, config: SyncConfig) -> float:
    """Seconds to wait for stragglers after the quorum is met, under ``config.grace_mode``.

    ADAPTIVE is ``clamp(γ·(τ·ξ_step − ξ_quorum − ξ_sync), 0, grace_max_s)``: negative slack (the overlap
    cannot hide the wait) gives no grace at all. FIXED is ``min(grace_fixed_s, grace_max_s)``.
    """
    return grace_s(config, view.ema_step_s, view.ema_quorum_wait_s, view.ema_sync_s)


def grace_s(config: SyncConfig, ema_step_s: float, ema_quorum_wait_s: float, ema_sync_s: float) -> float:
    """:func:`grace_window_s` from the three EMAs themselves (what a driver holds without a view)."""
    if config.grace_mode is GraceMode.NONE:
        return 0.0
    if config.grace_mode is GraceMode.FIXED:
        return min(config.grace_fixed_s, config.grace_max_s)
    slack_s = config.overlap_steps * ema_step_s - ema_quorum_wait_s - ema_sync_s
    return min(max(config.gamma * slack_s, 0.0), config.grace_max_s)


def _has_work(steps: int, tokens: float) -> bool:
    # A learner with no steps or no tokens since it last received the fragment has no new work in it:
    # its outer gradient is ~0, and counting it would only dilute the merge.
    return steps > 0 and tokens > 0


def _raw_weights(steps: Sequence[int], tokens: Sequence[float], mode: MergeWeighting) -> list[float]:
    pairs = list(zip(steps, tokens, strict=True))
    # Normalised weights are scale-free, so divide tokens by the largest among members with work: t² then
    # cannot overflow, and that member's weight stays > 0, so only "nobody has work" gives all zeros.
    t_max = max((t for s, t in pairs if _has_work(s, t)), default=1.0)
    raw = []
    for s, t in pairs:
        if not _has_work(s, t):
            raw.append(0.0)
        elif mode is MergeWeighting.TOKEN_WEIGHTED:
            raw.append((t / t_max) ** 2 / s)  # quantity × quality = tokens · (tokens / steps)
        else:
            raw.append(1.0)
    return raw


def token_weights(steps: Sequence[int], tokens: Sequence[float], mode: MergeWeighting) -> tuple[float, ...]:
    """Normalised merge weights for members with counters ``steps[i]``, ``tokens[i]``.

    TOKEN_WEIGHTED: ``w = tokens² / steps``; UNIFORM: ``w = 1``. Either way a member with 0 steps or
    0 tokens weighs 0. Weights are non-negative and sum to 1; if every raw weight is 0 they fall back to
    uniform. An empty input gives an empty tuple.
    """
    raw = _raw_weights(steps, tokens, mode)
    if not raw:
        return ()
    total = sum(raw)
    if total <= 0:
        return tuple(1.0 / len(raw) for _ in raw)
    return tuple(w / total for w in raw)


_BY_ID = operator.attrgetter("learner_id")


class Rule(Enum):
    """Which rule of :func:`decide` applies (its action follows from the rule)."""

    QUORUM_UNMET = "quorum unmet"  # WAIT
    ROUND_TIMEOUT = "round timeout"  # MERGE
    FAST_PATH = "fast path"  # MERGE
    GRACE_OPEN = "grace window open"  # WAIT
    GRACE_CLOSED = "grace window closed"  # MERGE

    @property
    def merges(self) -> bool:
        return self not in (Rule.QUORUM_UNMET, Rule.GRACE_OPEN)


def rule(now_s: float, alive: int, reported: int, round_opened_s: float, quorum_met_s: float | None,
         grace_window: float, config: SyncConfig) -> tuple[Rule, float | None]:
    """The rule :func:`decide` applies, from counts alone: ``alive`` learners, ``reported`` of them
    alive reporters, and the grace window in seconds. Returns the rule and, for a WAIT, the time to
    ask again (None: on the next report or membership change).

    This is decide's control flow (decide also refuses a view it cannot judge: a time before the view,
    K above the learners in it) and decide adds the members, weights and reason. A driver
    that only needs to know whether to merge (most evaluations wait) calls this without building a view.
    """
    k = config.quorum
    if reported < k:
        timeout_at_s = round_opened_s + config.round_timeout_s
        if reported and now_s >= timeout_at_s:
            return Rule.ROUND_TIMEOUT, None
        return Rule.QUORUM_UNMET, (timeout_at_s if reported and math.isfinite(timeout_at_s) else None)
    if reported == alive:
        return Rule.FAST_PATH, None
    deadline_s = (now_s if quorum_met_s is None else quorum_met_s) + grace_window
    if now_s < deadline_s:
        return Rule.GRACE_OPEN, deadline_s
    return Rule.GRACE_CLOSED, None


def decide(now_s: float, view: SyncView, config: SyncConfig) -> Decision:
    """Decide what the synchronizer does now for the fragment round in ``view``.

    Rules, in order (the reason of each branch names it; :func:`rule` is this control flow on counts):

    1. fewer than K alive learners have reported -> WAIT for the next report ("quorum unmet"), or
       until the round timeout; past ``round_timeout_s`` after the round opened, MERGE whoever has
       reported ("round timeout");
    2. every alive learner has reported -> MERGE now ("fast path");
    3. ``now_s`` is before quorum time + grace window -> WAIT until then ("grace window open");
    4. otherwise -> MERGE the reporters ("grace window closed").

    Only alive reporters count towards K and become members; a dead learner's report is ignored.
    K larger than the number of alive learners is not an error: K is a minimum, so the round waits
    until enough learners are back (with K = M this is lockstep). K larger than the number of learners
    in the view can never be met and raises ValueError, as does ``now_s`` earlier than ``view.now_s``.
    """
    if now_s < view.now_s:
        raise ValueError(f"now_s {now_s} is earlier than the view's now_s {view.now_s}")
    total = len(view.learners)
    if config.quorum > total:
        raise ValueError(f"quorum {config.quorum} exceeds the {total} learners in the view: never reachable")

    # Sorting by id makes the decision independent of the order the driver listed learners in.
    learners = sorted(view.learners, key=_BY_ID)
    alive = [r for r in learners if r.alive]
    reporters = [r for r in alive if r.reported]
    k = config.quorum
    counts = f"[{len(reporters)}/{total} reported, {len(alive)} alive, quorum {k}]"
    head = f"fragment {view.fragment}:"
    grace_window = grace_window_s(view, config)
    which, wait_until = rule(now_s, len(alive), len(reporters), view.round_opened_s, view.quorum_met_s,
                             grace_window, config)
    grace_note = f"grace {config.grace_mode.value} {grace_window:.3f}s"

    if which is Rule.ROUND_TIMEOUT:
        return _merge(reporters, config, f"{head} round timeout after {config.round_timeout_s:.3f}s", counts)
    if which is Rule.QUORUM_UNMET:
        why = (
            f"only {len(alive)} alive < quorum, waiting for learners to return"
            if len(alive) < k
            else "waiting for the next report"
        )
        return Decision(Action.WAIT, (), (), wait_until, f"{head} quorum unmet, {why} {counts}")
    if which is Rule.GRACE_OPEN:
        return Decision(
            Action.WAIT,
            (),
            (),
            wait_until,
            f"{head} quorum met, grace window open until {wait_until:.3f}s ({grace_note}) {counts}",
        )
    if which is Rule.FAST_PATH:
        why = "fast path: all alive learners reported, nobody left to wait for"
    else:
        deadline_s = (now_s if view.quorum_met_s is None else view.quorum_met_s) + grace_window
        why = f"grace window closed at {deadline_s:.3f}s ({grace_note})"
    return _merge(reporters, config, f"{head} merge {len(reporters)}", counts, why)


def _merge(reporters: list[LearnerReport], config: SyncConfig, head: str, counts: str, why: str = "") -> Decision:
    members = tuple(r.learner_id for r in reporters)
    weights = token_weights([r.steps for r in reporters], [r.tokens for r in reporters], config.merge)
    weighting = config.merge.value
    if not any(_has_work(r.steps, r.tokens) for r in reporters):
        weighting += ", all weights zero: uniform fallback"
    return Decision(Action.MERGE, members, weights, None, f"{head} ({weighting}){'; ' + why if why else ''} {counts}")
