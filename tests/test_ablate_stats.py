"""The ablation's statistics: t quantiles, sample spread and the paired interval."""

import math
import statistics

import pytest

from microgpt.ablate.stats import mean, paired_interval, sample_std, t_quantile, t_two_sided

# two-sided 95% critical values of Student's t, from any printed table
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_tends_to_the_normal_one():
    assert t_quantile(0.95, 2000) == pytest.approx(1.95996, abs=2e-3)
    assert t_quantile(0.99, 3) == pytest.approx(5.841, abs=5e-4)


def _t_density_integral(t: float, df: int, n: int = 4000) -> float:
    """P(|T| <= t) by Simpson's rule on the density: an independent check of the series."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def f(x):
        return c * (1 + x * x / df) ** (-(df + 1) / 2)

    h = 2 * t / n
    total = f(-t) + f(t) + sum((4 if i % 2 else 2) * f(-t + i * h) for i in range(1, n))
    return total * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 6, 7, 15])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_t_two_sided_agrees_with_the_density(t, df):
    assert t_two_sided(t, df) == pytest.approx(_t_density_integral(t, df), abs=1e-9)


def test_sample_std_uses_n_minus_1():
    xs = [2.5, 2.4, 2.61, 2.55]
    assert sample_std(xs) == pytest.approx(statistics.stdev(xs), rel=1e-12)
    assert mean(xs) == pytest.approx(statistics.fmean(xs), rel=1e-12)
    assert sample_std([1.0]) is None


def test_paired_interval_by_hand():
    ref = [2.40, 2.35, 2.38, 2.42]
    other = [2.45, 2.37, 2.44, 2.46]
    diffs = [b - a for a, b in zip(ref, other)]
    p = paired_interval(ref, other)
    half = 3.182446 * statistics.stdev(diffs) / 2  # t(0.975, 3) * s / sqrt(4)
    assert p.n == 4 and p.df == 3
    assert p.mean_diff == pytest.approx(statistics.fmean(diffs))
    assert (p.low, p.high) == pytest.approx((p.mean_diff - half, p.mean_diff + half), rel=1e-6)
    assert p.low > 0 and p.verdict.startswith("higher than the reference")


def test_paired_interval_verdicts():
    noisy = paired_interval([1.0, 2.0, 3.0], [1.1, 1.8, 3.05])
    assert noisy.low < 0 < noisy.high and noisy.verdict.startswith("within seed noise")
    lower = paired_interval([1.0, 2.0, 3.0], [0.9, 1.91, 2.89])
    assert lower.high < 0 and lower.verdict.startswith("lower than the reference")
    one = paired_interval([1.0], [1.2])
    assert one.low is None and one.high is None and "no interval" in one.verdict
    with pytest.raises(ValueError):
        paired_interval([1.0, 2.0], [1.0])
