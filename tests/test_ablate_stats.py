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
    assert p.low > 0 and p.significant and p.verdict == "higher"


def test_paired_interval_verdicts():
    noisy = paired_interval([1.0, 2.0, 3.0], [1.1, 1.8, 3.05])
    assert noisy.low < 0 < noisy.high and noisy.verdict == "within seed noise"
    assert noisy.p > 0.05 and not noisy.significant
    lower = paired_interval([1.0, 2.0, 3.0], [0.9, 1.91, 2.89])
    assert lower.high < 0 and lower.verdict == "lower" and lower.p < 0.05
    one = paired_interval([1.0], [1.2])
    assert one.low is None and one.high is None and "no interval" in one.verdict
    with pytest.raises(ValueError):
        paired_interval([1.0, 2.0], [1.0])


def test_holm_adjusts_p_values_decisions_and_levels():
    from microgpt.ablate.stats import holm, mean_interval

    family = [
        mean_interval([0.10, 0.12, 0.11, 0.13]),  # clearly nonzero
        mean_interval([0.01, -0.02, 0.015, 0.0]),  # noise
        mean_interval([0.05, 0.06, 0.04, 0.055]),
    ]
    adjusted = holm(family, 0.05)
    order = sorted(range(3), key=lambda i: family[i].p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * family[i].p))
        assert adjusted[i].p == pytest.approx(running)
        assert adjusted[i].level == pytest.approx(1 - 0.05 / (3 - rank))
        if rank < 2:  # tested at a stricter level than 95%: a wider interval
            assert adjusted[i].low < family[i].low and adjusted[i].high > family[i].high
        else:  # the last step tests at 95%
            assert (adjusted[i].low, adjusted[i].high) == (family[i].low, family[i].high)
        assert adjusted[i].mean_diff == family[i].mean_diff
    assert [a.significant for a in adjusted] == [True, False, True]
    assert adjusted[1].verdict == "within seed noise"


def test_holm_step_down_stops_at_the_first_failure():
    from microgpt.ablate.stats import Paired, holm

    def fake(p):
        return Paired(5, 1.0, 0.5, 1.5, 0.95, p, p < 0.05, 0.3)

    # 0.01 <= 0.05/3 rejects; 0.04 > 0.05/2 stops; 0.045 <= 0.05/1 would pass alone, but fails
    out = holm([fake(0.01), fake(0.04), fake(0.045)])
    assert [o.significant for o in out] == [True, False, False]
    assert [o.p for o in out] == pytest.approx([0.03, 0.08, 0.08])


def test_p_value_of_the_mean_difference():
    from microgpt.ablate.stats import mean_interval

    diffs = [0.3, 0.1, 0.2, 0.4, 0.25]
    p = mean_interval(diffs)
    m, sd = statistics.mean(diffs), statistics.stdev(diffs)
    t = m / (sd / math.sqrt(5))
    # P(|T| > t) for 4 df: the interval at level 1 - p just touches 0
    from microgpt.ablate.stats import t_quantile

    assert t_quantile(1 - p.p, 4) == pytest.approx(t, rel=1e-6)
