"""Seed statistics, as pure functions: mean, sample standard deviation, and the paired
t-interval of a difference between two designs run on the same seeds.

Student's t quantiles are computed, not tabulated: for an integer number of degrees of freedom
the two-sided probability P(|T| <= t) has a closed form (a finite trigonometric series), and a
bisection inverts it. No SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sample_std(xs: list[float]) -> float | None:
    """The standard deviation with n - 1 in the denominator; None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (a positive integer) degrees of freedom."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:  # 2/pi * (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...))
        series, term = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            series += term
        tail = math.sin(theta) * math.cos(theta) * series if df > 1 else 0.0
        return 2 / math.pi * (theta + tail)
    series, term = 1.0, 1.0  # sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...)
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        series += term
    return math.sin(theta) * series


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = `level`: the half-width multiplier of a `level` interval
    (0.95 gives 12.706 for 1 df, 2.776 for 4, 2.042 for 30, 1.960 in the limit)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < level:
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_two_sided(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Paired:
    """The mean of `b - a` over pairs, and its t-interval (None with a single pair)."""

    n: int
    mean_diff: float
    low: float | None
    high: float | None
    level: float

    @property
    def df(self) -> int:
        return self.n - 1

    @property
    def verdict(self) -> str:
        """Plain words, claiming no more than the interval supports."""
        if self.low is None or self.high is None:
            return "one seed: no interval, no claim"
        if self.low <= 0 <= self.high:
            return "within seed noise (contains 0)"
        side = "lower" if self.high < 0 else "higher"
        return f"{side} than the reference (excludes 0)"


def paired_interval(a: list[float], b: list[float], level: float = 0.95) -> Paired:
    """Pairs (a[i], b[i]) share a seed; the interval is mean(d) ± t * std(d) / sqrt(n)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired samples must be non-empty and of equal length")
    diffs = [y - x for x, y in zip(a, b)]
    m = mean(diffs)
    std = sample_std(diffs)
    if std is None:
        return Paired(1, m, None, None, level)
    half = t_quantile(level, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return Paired(len(diffs), m, m - half, m + half, level)
