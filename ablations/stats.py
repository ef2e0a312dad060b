"""Statistics over seeds: mean, sample standard deviation and Student-t 95% intervals.

``summary([80, 82, 84])`` is ``n=3, mean=82, std=2`` and the interval ``82 ± t(0.975, 2) *
2 / sqrt(3) = 82 ± 4.968``. ``paired(a, b)`` summarizes the same-seed differences ``a[s] -
b[s]`` over the seeds both have. One value has no spread: ``std`` and the interval are
``None`` (shown as the value alone, never "± 0.00").
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CONVERGED_POINTS", "CONVERGED_WINDOW", "LEVEL", "Summary", "converged", "paired"]
__all__ += ["summary", "t_quantile"]

LEVEL = 0.95
"""Confidence level of every interval in the report."""

CONVERGED_WINDOW = 3
CONVERGED_POINTS = 1.0
"""A run has converged when the mean validation top-1 of its last :data:`CONVERGED_WINDOW`
epochs is within :data:`CONVERGED_POINTS` points of its best epoch's."""


@lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy, installed
    with scikit-learn)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Summary:
    """``n`` values: their mean, sample std (``ddof=1``) and ``LEVEL`` Student-t interval;
    ``std``, ``half``, ``low`` and ``high`` are ``None`` for a single value."""

    n: int
    mean: float
    std: float | None = None
    half: float | None = None

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the interval lies strictly on one side of 0 (``None``: no interval)."""
        if self.half is None:
            return None
        return self.low > 0 or self.high < 0


def summary(values: Iterable[float]) -> Summary | None:
    """Mean, sample std and the ``LEVEL`` t interval of ``values`` (``None`` when empty)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + LEVEL / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, half)


def paired(values: Mapping[Hashable, float], base: Mapping[Hashable, float]) -> Summary | None:
    """Summary of ``values[s] - base[s]`` over the seeds ``s`` in both (``None``: no pair)."""
    seeds = [s for s in values if s in base]
    return summary(values[s] - base[s] for s in seeds)


def converged(top1_by_epoch: Sequence[float]) -> bool | None:
    """Whether a run whose validation top-1 (%) per epoch is ``top1_by_epoch`` converged:
    the mean of the last :data:`CONVERGED_WINDOW` epochs is at least the best epoch's minus
    :data:`CONVERGED_POINTS` (``None``: fewer epochs than the window).
    ``converged([90, 95, 94.5, 95, 94.8])`` is ``True`` (94.77 >= 94)."""
    if len(top1_by_epoch) < CONVERGED_WINDOW:
        return None
    last = math.fsum(top1_by_epoch[-CONVERGED_WINDOW:]) / CONVERGED_WINDOW
    return last >= max(top1_by_epoch) - CONVERGED_POINTS
