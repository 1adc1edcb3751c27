"""Training strategies under test. Each is one small module and one entry in :data:`POLICIES`.

A policy builds the learner groups for a run (one group for lockstep policies, one per island for the
DiLoCo family), gives them their step model (compute time and exposed communication per step) and
adds whatever processes it needs (the synchronizer, outer rounds).
"""

from __future__ import annotations

from ..scenario import Policy
from .diloco import DecoupledDiLoCo, DiLoCo, StreamingDiLoCo
from .lockstep import ElasticDP, SyncDP

POLICIES: dict[Policy, type] = {
    Policy.SYNC_DP: SyncDP,
    Policy.ELASTIC_DP: ElasticDP,
    Policy.DILOCO: DiLoCo,
    Policy.STREAMING_DILOCO: StreamingDiLoCo,
    Policy.DECOUPLED_DILOCO: DecoupledDiLoCo,
}
