"""The round engine: every outer round of the DiLoCo family, played as SimPy events.

Chaos (failures, repairs, pauses, link changes, synchronizer outages) reaches the learners as phase
changes of their groups; between them the engine plays the protocol: learners' step clocks
(:mod:`.clock`), their reports, the overlap bound and applies (:mod:`.engine`), rounds of a central
synchronizer (:mod:`.synchronizer`) or lockstep all-reduces (:mod:`.allreduce`), and every transfer
on shared, directional channels (:mod:`.channels`). One event per report, round and transfer, never
one per chip; the decision of each synchronizer round is :func:`sim.syncer.decide` on its real view.
"""

from .allreduce import AllReduceRounds
from .synchronizer import SynchronizerRounds

__all__ = ["AllReduceRounds", "SynchronizerRounds"]
