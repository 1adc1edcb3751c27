"""Probability distributions for repair times, outage durations and lifetimes.

Each distribution knows its analytic ``mean`` (so tests can check sampled means against it, and so the
checkpoint interval rules can use the mean time to repair) and draws vectorised blocks from a numpy
``Generator`` owned by the caller. Parameters are in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Constant:
    value_s: float

    @property
    def mean(self) -> float:
        return self.value_s

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value_s)


@dataclass(frozen=True, slots=True)
class Exponential:
    mean_s: float

    @property
    def mean(self) -> float:
        return self.mean_s

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_s, n)


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal with the given median (= e^mu) and sigma of the underlying normal."""

    median_s: float
    sigma: float

    @property
    def mean(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median_s), self.sigma, n)


@dataclass(frozen=True, slots=True)
class Weibull:
    """Weibull with scale eta and shape k: mean = eta * Gamma(1 + 1/k)."""

    scale_s: float
    shape: float

    @classmethod
    def from_mean(cls, mean_s: float, shape: float) -> Weibull:
        return cls(mean_s / math.gamma(1 + 1 / shape), shape)

    @property
    def mean(self) -> float:
        return self.scale_s * math.gamma(1 + 1 / self.shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.scale_s * rng.weibull(self.shape, n)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A repair pipeline: an automatic repair, which succeeds with probability ``success``; otherwise
    the unit escalates to a manual repair that starts when the automatic one ends."""

    auto: Constant | Exponential | LogNormal | Weibull
    success: float
    manual: Constant | Exponential | LogNormal | Weibull

    @property
    def mean(self) -> float:
        return self.auto.mean + (1.0 - self.success) * self.manual.mean

    def sample_stages(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(repair times, escalated to manual) for ``n`` repairs."""
        auto = self.auto.sample(rng, n)
        escalated = rng.random(n) >= self.success
        manual = self.manual.sample(rng, n)
        return auto + np.where(escalated, manual, 0.0), escalated

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.sample_stages(rng, n)[0]


Distribution = Constant | Exponential | LogNormal | Weibull | Pipeline


class RepairDraws:
    """Repair times in blocks, with whether each repair escalated to a manual one (a repair that is
    not a pipeline is one successful repair: never escalated)."""

    __slots__ = ("_block", "_dist", "_esc", "_pos", "_rng", "_times")

    def __init__(self, dist: Distribution, rng: np.random.Generator, block: int = 1024):
        self._dist, self._rng, self._block = dist, rng, block
        self._times, self._esc = np.empty(0), np.empty(0, dtype=bool)
        self._pos = 0

    def next(self) -> tuple[float, bool]:
        if self._pos >= len(self._times):
            if isinstance(self._dist, Pipeline):
                self._times, self._esc = self._dist.sample_stages(self._rng, self._block)
            else:
                self._times = self._dist.sample(self._rng, self._block)
                self._esc = np.zeros(self._block, dtype=bool)
            self._pos = 0
        k = self._pos
        self._pos += 1
        return float(self._times[k]), bool(self._esc[k])


class BlockSampler:
    """Draws from a distribution in blocks, so a stream of events costs one numpy call per block.

    Draw order is fixed by the block size, so results are reproducible for a given stream.
    """

    __slots__ = ("_block", "_buf", "_dist", "_pos", "_rng")

    def __init__(self, dist: Distribution, rng: np.random.Generator, block: int = 1024):
        self._dist, self._rng, self._block = dist, rng, block
        self._buf = np.empty(0)
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._buf):
            self._buf = self._dist.sample(self._rng, self._block)
            self._pos = 0
        value = float(self._buf[self._pos])
        self._pos += 1
        return value
