"""Learning-rate sweeps' statistics (`microgpt.ablate.sweep`) against hand computations."""

import math
import statistics

import pytest

from microgpt.ablate.sweep import (
    best_lr,
    capped,
    diverged,
    loss_at_init,
    lr_sensitivity,
    parse_lr_sweep,
    sensitivity,
    split_halves,
)
from microgpt.errors import UserError

NAN, INF = float("nan"), float("inf")

# the grid ---------------------------------------------------------------------------------------


def test_a_range_is_log_spaced_and_inclusive():
    assert parse_lr_sweep("1e-4:1:5") == (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert parse_lr_sweep("1e-3:1e-2:2") == (1e-3, 1e-2)
    lo, mid, hi = parse_lr_sweep("1e-3:1e-2:3")
    assert (lo, hi) == (1e-3, 1e-2) and mid == pytest.approx(math.sqrt(1e-5), rel=1e-12)
    rates = parse_lr_sweep("0.002:0.5:6")
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    assert ratios == pytest.approx([(0.5 / 0.002) ** (1 / 5)] * 5, rel=1e-11)


def test_a_list_is_sorted():
    assert parse_lr_sweep("1e-3,3e-3,1e-2") == (1e-3, 3e-3, 1e-2)
    assert parse_lr_sweep(" 1e-2, 1e-3 ") == (1e-3, 1e-2)


@pytest.mark.parametrize(
    "text",
    [
        "0:1:5",  # a rate <= 0
        "-1e-3,1e-2",
        "1e-3,0",
        "1e-3:1e-2",  # malformed ranges
        "1e-3:1e-2:3:4",
        "1e-3::3",
        "1e-3:1e-2:x",
        "1e-3:1e-2:2.5",
        "1e-3:1e-2:1",  # K < 2
        "1e-2:1e-3:3",  # LO >= HI
        "1e-3:1e-3:3",
        "1e-3,1e-3",  # repeated
        "1e-3,3e-3,0.001",
        "1e-3,x",  # non-numbers
        "1e-3,,1e-2",
        "",
        "nan,1e-2",
        "1e-3,inf",
        "1e-3",  # one rate is no sweep
    ],
)
def test_bad_sweeps_say_what_to_write(text):
    with pytest.raises(UserError) as e:
        parse_lr_sweep(text)
    message = str(e.value)
    assert "\n" not in message and message.startswith("--lr-sweep")
    assert "LO:HI:K" in message


# the loss at initialisation and divergence ------------------------------------------------------


def test_loss_at_init_is_ln_v():
    assert loss_at_init(27) == math.log(27)
    assert loss_at_init(27, z_loss=1e-2) == pytest.approx(math.log(27) + 1e-2 * math.log(27) ** 2)
    with pytest.raises(ValueError):
        loss_at_init(1)


def test_a_non_finite_loss_diverges_at_its_step():
    assert diverged([3.5, 3.2, NAN, 1.0], 3.3) == (True, 3, 3.2)
    assert diverged([3.0, 2.5, 2.4, INF], 3.3) == (True, 4, 2.4)
    assert diverged([NAN], 3.3) == (True, 1, None)
    assert diverged([2.0] * 30 + [-INF], 3.3) == (True, 31, 2.0)


def test_a_last_tenth_above_the_loss_at_init_diverges_at_its_first_step():
    falling = [3.3 - 0.05 * i for i in range(18)]
    # 20 steps: the last tenth is steps 19 and 20
    assert diverged([*falling, 3.4, 3.3], 3.29) == (True, 19, 3.3)  # mean 3.35
    assert diverged([*falling, 3.5, 3.0], 3.29) == (False, None, 3.0)  # mean 3.25: one above
    assert diverged([*falling, 2.5, 2.4], 3.29) == (False, None, 2.4)
    # 25 steps: the last ceil(2.5) = 3, steps 23 to 25
    assert diverged([2.0] * 22 + [3.4, 3.3, 3.0], 3.2) == (True, 23, 3.0)  # mean 3.2333
    assert diverged([2.0] * 22 + [3.3, 3.2, 3.0], 3.2) == (False, None, 3.0)  # mean 3.1667
    # 5 steps: the last one alone; a mean equal to the loss at init is not above it
    assert diverged([1.0, 1.0, 1.0, 1.0, 3.5], 3.4) == (True, 5, 3.5)
    assert diverged([1.0, 1.0, 1.0, 1.0, 3.4], 3.4) == (False, None, 3.4)


# LR sensitivity ---------------------------------------------------------------------------------

# three seeds over a grid of four rates; loss at init 3.0; None, nan and inf mark diverged runs
CURVES = [
    [2.5, 2.0, 2.2, None],  # capped [2.5, 2.0, 2.2, 3.0]: min 2.0, (0.5 + 0 + 0.2 + 1) / 4
    [2.6, 2.1, 3.4, NAN],  # capped [2.6, 2.1, 3.0, 3.0]: min 2.1, (0.5 + 0 + 0.9 + 0.9) / 4
    [2.4, 2.0, 2.1, INF],  # capped [2.4, 2.0, 2.1, 3.0]: min 2.0, (0.4 + 0 + 0.1 + 1) / 4
]
BY_HAND = [0.425, 0.575, 0.375]


def test_capped():
    assert [capped(x, 3.0) for x in (2.5, 3.0, 3.4, None, NAN, INF, -INF)] == [2.5] + [3.0] * 6


def test_lr_sensitivity_of_one_curve_by_hand():
    for curve, want in zip(CURVES, BY_HAND):
        assert lr_sensitivity(curve, 3.0) == pytest.approx(want, rel=1e-12)
    assert lr_sensitivity([2.2, 2.2, 2.2], 3.0) == 0.0  # flat: insensitive
    assert lr_sensitivity([None, 2.0, None], 3.0) == pytest.approx(2 / 3)  # one rate trains
    assert lr_sensitivity([3.5, 4.0, None], 3.0) == 0.0  # none trains: 0, not negative


def test_sensitivity_over_seeds_is_the_mean_and_t_interval():
    est = sensitivity(CURVES, 3.0)
    assert est.per_seed == pytest.approx(BY_HAND, rel=1e-12)
    assert est.mean == pytest.approx(1.375 / 3, rel=1e-12)
    half = 4.302653 * statistics.stdev(BY_HAND) / math.sqrt(3)  # t(0.975, 2) s / sqrt(3)
    assert (est.low, est.high) == pytest.approx((est.mean - half, est.mean + half), rel=1e-6)
    assert est.level == 0.95
    one = sensitivity(CURVES[:1], 3.0)
    assert one.mean == pytest.approx(0.425) and one.low is None and one.high is None


# the best learning rate: selection half and report half ----------------------------------------


def test_split_halves_are_disjoint_seeded_and_fixed():
    for n in (2, 3, 10, 101):
        sel, rep = split_halves(n, seed=4)
        assert len(sel) == n // 2 and len(rep) == n - n // 2
        assert sorted(sel + rep) == list(range(n))
        assert sel == sorted(sel) and rep == sorted(rep)
        assert split_halves(n, seed=4) == (sel, rep)
    assert split_halves(100, 0) != split_halves(100, 1)
    # pinned: a string-seeded random.Random gives these on every platform
    assert split_halves(7, 0) == ([1, 3, 6], [0, 2, 4, 5])
    with pytest.raises(UserError, match="--val-docs"):
        split_halves(1, 0)


LRS = [1e-3, 3e-3, 1e-2]
SELECTION = [  # per seed, per rate
    [2.5, 2.2, 2.3],
    [2.6, 2.3, None],  # diverged at 1e-2: counts as 3.0
    [2.4, 2.1, 2.0],
]  # means over seeds: 2.5, 2.2, (2.3 + 3.0 + 2.0) / 3 = 2.4333
REPORT = [
    [2.55, 2.25, 2.35],
    [2.6, 2.28, NAN],
    [2.45, 2.15, 1.9],
]


def test_best_lr_is_chosen_on_the_selection_half_and_reported_on_the_other():
    best = best_lr(LRS, SELECTION, REPORT, 3.0)
    assert (best.lr, best.index) == (3e-3, 1)
    assert best.selection_means == pytest.approx((2.5, 2.2, 7.3 / 3), rel=1e-12)
    assert best.report == (2.25, 2.28, 2.15)  # per seed, for paired comparisons
    assert best.failed == (False, False, False)
    # without the diverged seed, 1e-2 would have won on seed 2 alone: the mean decides
    assert best_lr(LRS, SELECTION[2:], REPORT[2:], 3.0).lr == 1e-2


def test_best_lr_ties_go_to_the_smaller_rate():
    same = [[2.2, 2.2], [2.4, 2.4]]
    assert best_lr([1e-2, 1e-3], same, same, 3.0).lr == 1e-3
    assert best_lr([1e-3, 1e-2], same, same, 3.0).lr == 1e-3
    # every run failed: every mean is the loss at init, the smallest rate, every figure capped
    failed = [[None, 3.5, NAN], [INF, None, 4.0]]
    best = best_lr(LRS, failed, failed, 3.0)
    assert (best.lr, best.report, best.failed) == (1e-3, (3.0, 3.0), (True, True))


def test_best_lr_caps_a_report_loss_above_the_loss_at_init():
    best = best_lr([1e-3, 1e-2], [[2.0, 2.5]], [[3.2, 2.4]], 3.0)
    assert (best.lr, best.report, best.failed) == (1e-3, (3.0,), (True,))


def test_best_lr_checks_its_shapes():
    with pytest.raises(ValueError):
        best_lr(LRS, SELECTION, REPORT[:2], 3.0)
    with pytest.raises(ValueError):
        best_lr(LRS, [[2.0, 2.1]], [[2.0, 2.1]], 3.0)
