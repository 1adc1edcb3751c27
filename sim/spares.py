"""Spare capacity of a lockstep group under ``on_failure: spares``: warm standbys, a spare pool, waits.

Per island, in the order a failure draws on them:

1. **warm standbys** (``topology ... islands[].spares`` units): swapped in after ``spares.swap``;
2. the **spare pool** (``training.spares.pool`` units): a unit is selected and brought up after
   ``spares.selection`` (the host selection time);
3. nothing left: ``spares.when_empty`` says whether the job is rescheduled (``reschedule``: detect +
   reschedule, as under ``restart``) or **waits** (``wait``) until a repair returns a unit, then
   swaps it in. While it waits the failed chips are out of the job (down).

A failed unit is repaired (the fault's repair time) and goes back where its replacement came from;
a returning unit first pays what a waiting job is owed. Idle standbys and pool units are provisioned
chip-time in the ``spare`` bucket. State is counters per island, never objects per unit.
"""

from __future__ import annotations

from enum import Enum


class Tier(str, Enum):
    WARM = "warm"
    POOL = "pool"
    OWED = "owed"  # nothing was free: the job waits for this unit's repair


class SparePools:
    def __init__(self, warm_chips: dict[int, int], pool_chips: dict[int, int], swap_s: float, selection_s: float,
                 wait_when_empty: bool):
        self.free = {Tier.WARM: dict(warm_chips), Tier.POOL: dict(pool_chips)}
        self.owed = dict.fromkeys(warm_chips, 0)
        self.swap_s, self.selection_s, self.wait_when_empty = swap_s, selection_s, wait_when_empty
        self.waits = 0  # failures that found no spare and waited for a repair

    def idle_chips(self) -> int:
        return sum(self.free[Tier.WARM].values()) + sum(self.free[Tier.POOL].values())

    def take(self, island: int, chips: int) -> tuple[Tier, float] | None:
        """Replace ``chips`` failed chips of ``island``: (tier, time to bring the replacement in), or
        None (reschedule). ``Tier.OWED``: nothing free, wait; the time is the swap once a unit is back."""
        for tier, delay_s in ((Tier.WARM, self.swap_s), (Tier.POOL, self.selection_s)):
            if self.free[tier][island] >= chips:
                self.free[tier][island] -= chips
                return tier, delay_s
        if not self.wait_when_empty:
            return None
        self.owed[island] += chips
        self.waits += 1
        return Tier.OWED, self.swap_s

    def give_back(self, island: int, chips: int, tier: Tier) -> bool:
        """A repaired unit returns; True if it paid (part of) what a waiting job was owed."""
        paid = min(self.owed[island], chips)
        self.owed[island] -= paid
        if chips > paid:
            self.free[Tier.POOL if tier is Tier.POOL else Tier.WARM][island] += chips - paid
        return paid > 0

    def waiting(self) -> bool:
        return any(self.owed.values())
