"""Named random streams: one seed, many independent generators, no global state.

Every stochastic process in a run asks for its own stream by a stable name (``"fault/chips"``,
``"surrogate/data"``). The stream is derived from the run's seed and the name only, so adding a process,
or creating processes in another order, never shifts the draws of any other process.
"""

from __future__ import annotations

import hashlib

import numpy as np


class Streams:
    """Factory of independent ``numpy.random.Generator`` objects keyed by name."""

    def __init__(self, seed: int):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self._issued: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        """Return the generator for ``name``; the same name always returns the same object."""
        gen = self._issued.get(name)
        if gen is None:
            # A hash of the name (not Python's salted hash()) keeps streams stable across processes.
            digest = hashlib.sha256(name.encode()).digest()
            key = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
            gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, *key])))
            self._issued[name] = gen
        return gen
