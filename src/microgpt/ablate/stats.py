"""Seed statistics, as pure functions: mean, sample standard deviation, the paired t-interval
of a difference between two designs run on the same seeds, and Holm's adjustment when a report
makes several such comparisons.

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
    """The mean of per-seed differences, its t-interval and two-sided p-value (None with a
    single pair). With several comparisons, `holm` adjusts `level`, `p` and `significant`."""

    n: int
    mean_diff: float
    low: float | None
    high: float | None
    level: float  # the interval's confidence level
    p: float | None = None  # two-sided p-value of "mean difference = 0" (Holm-adjusted after holm)
    significant: bool | None = None  # p < alpha (after holm: Holm's step-down decision)
    std: float | None = None  # sample std of the differences

    @property
    def df(self) -> int:
        return self.n - 1

    @property
    def verdict(self) -> str:
        """Plain words, claiming no more than the numbers support."""
        if self.low is None or self.high is None:
            return "one seed: no interval, no claim"
        if not self.significant:
            return "within seed noise"
        return "lower" if self.mean_diff < 0 else "higher"


def paired_interval(a: list[float], b: list[float], level: float = 0.95) -> Paired:
    """Pairs (a[i], b[i]) share a seed; the interval is mean(d) ± t * std(d) / sqrt(n)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired samples must be non-empty and of equal length")
    return mean_interval([y - x for x, y in zip(a, b)], level)


def mean_interval(diffs: list[float], level: float = 0.95) -> Paired:
    """The t-interval and p-value of the mean of per-seed differences (or effects)."""
    m = mean(diffs)
    std = sample_std(diffs)
    if std is None:
        return Paired(1, m, None, None, level)
    n, df = len(diffs), len(diffs) - 1
    se = std / math.sqrt(n)
    half = t_quantile(level, df) * se
    p = 0.0 if se == 0 else 1 - t_two_sided(abs(m) / se, df)
    if se == 0 and m == 0:
        p = 1.0
    return Paired(n, m, m - half, m + half, level, p, p < 1 - level, std)


def holm(comparisons: list[Paired], alpha: float = 0.05) -> list[Paired]:
    """Holm's step-down adjustment of a family of comparisons, in the given order.

    Sorted by p-value, the i-th smallest (from 0) is tested at alpha / (m - i), and once one
    fails, every later one fails too. Each comparison's p-value becomes Holm's adjusted p-value
    (the running maximum of (m - i) p, capped at 1), its decision Holm's, and its interval the
    t-interval at the level its test used, 1 - alpha / (m - i). Comparisons without an interval
    (one seed) are left out of the family and returned as they are."""
    tested = [i for i, c in enumerate(comparisons) if c.p is not None]
    m = len(tested)
    out = list(comparisons)
    running, rejecting = 0.0, True
    for rank, i in enumerate(sorted(tested, key=lambda i: comparisons[i].p)):
        c = comparisons[i]
        factor = m - rank
        running = max(running, min(1.0, factor * c.p))
        rejecting = rejecting and c.p <= alpha / factor
        level = 1 - alpha / factor
        half = t_quantile(level, c.df) * c.std / math.sqrt(c.n)
        out[i] = Paired(
            c.n,
            c.mean_diff,
            c.mean_diff - half,
            c.mean_diff + half,
            level,
            running,
            rejecting,
            c.std,
        )
    return out
