"""DiLoCo, Streaming DiLoCo and Decoupled DiLoCo (reference/diloco.md), each played round by round.

``diloco``            Each learner runs H inner steps, then a blocking outer all-reduce of the
                      pseudo-gradients of all live learners around the WAN ring. Rounds are lockstep:
                      every learner waits for the slowest, and a learner that goes down blocks the
                      round until ``training.round_timeout`` drops it.
``streaming_diloco``  The same lockstep membership, but P fragments sync on staggered offsets,
                      overlapped with tau steps of compute and optionally quantised (``bits``).
``decoupled_diloco``  Learners never wait for each other; a central synchronizer (in
                      ``syncer.region``) plays fragment rounds with a minimum quorum K, a grace window
                      and token-weighted merging (:mod:`sim.rounds.synchronizer`).
"""

from __future__ import annotations

from ..rounds import AllReduceRounds, SynchronizerRounds
from .outer import OuterPolicy


class DiLoCo(OuterPolicy):
    engine_class = AllReduceRounds


class StreamingDiLoCo(OuterPolicy):
    engine_class = AllReduceRounds


class DecoupledDiLoCo(OuterPolicy):
    engine_class = SynchronizerRounds
