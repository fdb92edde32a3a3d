"""Learning-rate sweeps, as pure functions: the grid, divergence, LR sensitivity and the best LR.

A design compared at one learning rate is compared at a rate that may suit another design better.
A sweep trains each design at every rate of a grid (`parse_lr_sweep`) and every seed, and then:

- a run whose training loss becomes non-finite, or whose mean over the last tenth of training is
  above the loss at initialisation, has failed (`diverged`);
- the design's LR sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale
  Transformer training instabilities", arXiv 2309.14322) is, per seed, the mean over the grid of
  the final loss capped at the loss at initialisation, minus the lowest of them; then its mean
  and t-interval over seeds (`sensitivity`);
- the design's best rate is chosen on one half of the held-out documents and reported on the
  other (`split_halves`, `best_lr`), so that the reported figure is not the minimum of several
  noisy ones, which would favour the designs swept on the finer grid or the noisier curve.

The loss at initialisation is `loss_at_init(vocab_size)`, ln V (see there for why).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from microgpt.ablate.stats import mean, mean_interval
from microgpt.errors import UserError

# The threshold past which the report calls a run's attention logits grown (its largest logit
# q·k / sqrt(D) before the softmax, `TensorGPT.diagnostics`, over the run's samples). At a logit
# of 100 the softmax gives a key all of the weight against any key scored more than 17 below it
# (e^-17 is under float32's epsilon): attention has collapsed onto single keys, the
# near-one-hot, near-zero-entropy attention that Wortsman et al. (after Dehghani et al. 2023)
# tie to divergence. Runs at their best rate stay far below it (3 to 9 in docs/ablate.md's
# worked sweep, n_embd 16 to 64), and a QK-normed model cannot reach it at all: with q and k
# RMS-normed per head (no gain), |q·k| / sqrt(D) <= sqrt(D) (2 at n_embd 16, 4 heads).
ATTENTION_LOGIT_LIMIT = 100.0
FLAG = "--lr-sweep"
HOW = "write LO:HI:K (K log-spaced rates from LO to HI, e.g. 1e-4:1:5) or a list such as 1e-3,3e-3"
SIGNIFICANT = 12  # digits a log-spaced rate keeps (see parse_lr_sweep)


# the grid ---------------------------------------------------------------------------------------


def parse_lr_sweep(text: str) -> tuple[float, ...]:
    """The learning rates of `LO:HI:K` or `V1,V2,...`, ascending.

    `LO:HI:K`: K >= 2 rates log-spaced from LO to HI inclusive, LO < HI, LO > 0:
    10 ** (log10 LO + k (log10 HI - log10 LO) / (K - 1)) for k = 0 .. K - 1, kept to 12
    significant digits so that the grid (and a study's settings hash) is the same whatever the
    platform's `pow` rounds in its last bit; LO and HI are kept exactly as written. So `1e-4:1:5`
    is 1e-4, 1e-3, 1e-2, 1e-1, 1. `V1,V2,...`: two or more distinct positive rates, sorted.

    Raises UserError (one line, saying what to write) for a rate <= 0, a non-number, a malformed
    range, K < 2, LO >= HI, or a repeated rate."""
    where = f"{FLAG} {text.strip()!r}"
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise UserError(f"{where} is not a range: {HOW}")
        lo, hi = (_rate(where, p) for p in parts[:2])
        try:
            k = int(parts[2])
        except ValueError:
            raise UserError(f"{where}: K must be an integer of 2 or more: {HOW}") from None
        if k < 2:
            raise UserError(f"{where}: K must be 2 or more, got {k}: {HOW}")
        if lo >= hi:
            raise UserError(f"{where}: LO must be below HI: {HOW}")
        a, step = math.log10(lo), (math.log10(hi) - math.log10(lo)) / (k - 1)
        inner = [float(f"{10 ** (a + i * step):.{SIGNIFICANT}g}") for i in range(1, k - 1)]
        rates = [lo, *inner, hi]
    else:
        rates = [_rate(where, p) for p in text.split(",")]
        if len(rates) < 2:
            raise UserError(f"{where} is one rate: {HOW}")
    if len(set(rates)) != len(rates):
        raise UserError(f"{where} repeats a rate: {HOW}")
    return tuple(sorted(rates))


def _rate(where: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {text.strip()!r} is not a number: {HOW}") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{where}: a learning rate must be positive, got {text.strip()!r}: {HOW}")
    return value


# the loss at initialisation and divergence ------------------------------------------------------


def loss_at_init(vocab_size: int, z_loss: float = 0.0) -> float:
    """ln V, the loss of predicting every token uniformly (all logits equal), plus with z_loss
    c the z term of all-zero logits, c (ln V)²: the training loss of a --z-loss c run at zero
    logits. Compare held-out losses (which leave the z term out) with `loss_at_init(V)`.

    Wortsman et al. compare with each run's loss at initialisation. ln V stands in for it:
    - it is what an initialisation of small weights starts from: the logits are near 0, so the
      first step's loss is ln V plus about half their variance (the reference: 3.366 against
      ln 27 = 3.296). By Jensen's inequality the expected loss at initialisation is never below
      ln V, so the cap is, if anything, the stricter one: a run that ends no better than
      uniform guessing has failed;
    - it is one number for every design, rate and seed of a study: a run's own first-step loss
      depends on its design (a tied head, a norm, a wider model start elsewhere) and on its first
      batch, which would give each design of a comparison its own cap; and with --z-loss the
      first step's reported loss includes the z term, which the held-out losses do not."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be 2 or more, got {vocab_size}")
    ln_v = math.log(vocab_size)
    return ln_v + z_loss * ln_v * ln_v if z_loss else ln_v


class Divergence(NamedTuple):
    diverged: bool
    step: int | None  # 1-based: the first non-finite step, or the first of the last tenth
    last_finite_loss: float | None  # the last finite training loss (None: there is none)


def diverged(losses: Sequence[float], loss_at_init: float) -> Divergence:
    """Whether a run's training losses (step 1 first) mark it as diverged, the rule of a sweep:

    1. a non-finite loss at any step: diverged at the first such step, and the last finite loss
       is the one before it (None if it is the first step);
    2. else, the last tenth of the steps (the last ceil(n / 10), at least one) has a mean above
       `loss_at_init`: diverged at the first step of that tenth, the last finite loss the last.

    The mean rather than every value: a batch-1 training loss swings by more than the gap
    between a failed run and ln V, so a run that learned nothing has a few steps below it (and
    "every value above" would almost never fire), while a good run's tail has a few above it.
    Not diverged: (False, None, the last loss)."""
    if not losses:
        raise ValueError("no losses: a run has at least one step")
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            return Divergence(True, i + 1, losses[i - 1] if i else None)
    start = len(losses) - math.ceil(len(losses) / 10)
    if mean(losses[start:]) > loss_at_init:
        return Divergence(True, start + 1, losses[-1])
    return Divergence(False, None, losses[-1])


# LR sensitivity ---------------------------------------------------------------------------------


def capped(loss: float | None, loss_at_init: float) -> float:
    """min(loss, loss_at_init); a diverged run (None, or a non-finite loss) counts as
    loss_at_init."""
    if loss is None or not math.isfinite(loss):
        return loss_at_init
    return min(loss, loss_at_init)


def lr_sensitivity(losses: Sequence[float | None], loss_at_init: float) -> float:
    """One curve's LR sensitivity: mean_k min(L(lr_k), L0) - min_k min(L(lr_k), L0), L(lr_k) the
    final loss at the k-th rate of the grid (None: diverged, counts as L0) and L0 `loss_at_init`.

    0 when every rate gives the same loss; L0 - min L when only one rate trains at all. The
    minimum is over the capped losses too: it is Wortsman et al.'s min_k L(lr_k) unless every
    rate ends above L0, where theirs would be negative and this is 0."""
    if not losses:
        raise ValueError("no losses: a grid has at least one rate")
    caps = [capped(loss, loss_at_init) for loss in losses]
    best = min(caps)
    return mean([c - best for c in caps])  # each term >= 0, so the mean is too


@dataclass(frozen=True)
class Estimate:
    """A per-seed figure's mean over seeds and its t-interval (None with one seed)."""

    per_seed: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None
    level: float  # the interval's confidence level


def estimate(per_seed: Sequence[float], level: float = 0.95) -> Estimate:
    """The mean and t-interval over seeds (`stats.mean_interval`)."""
    m = mean_interval(list(per_seed), level)
    return Estimate(tuple(per_seed), m.mean_diff, m.low, m.high, level)


def sensitivity(
    losses: Sequence[Sequence[float | None]], loss_at_init: float, level: float = 0.95
) -> Estimate:
    """LR sensitivity per seed (`losses[s][k]`: seed s, the k-th rate), then its mean and
    t-interval over seeds."""
    return estimate([lr_sensitivity(curve, loss_at_init) for curve in losses], level)


# the best learning rate, chosen on one half of the held-out documents and reported on the other --


def split_halves(n_docs: int, seed: int) -> tuple[list[int], list[int]]:
    """Two disjoint lists of indices into the held-out documents that together cover
    range(n_docs), each ascending: the selection half (floor(n_docs / 2) of them) and the report
    half (the rest).

    A shuffle of range(n_docs) by `random.Random(f"split_halves:{seed}")`: a string seed goes
    through SHA-512, not `hash()`, so the halves are the same on every platform, Python version
    (3.2 on) and PYTHONHASHSEED, and they do not share a stream with the seed's data order."""
    if n_docs < 2:
        raise UserError(
            f"splitting {n_docs} held-out document(s) into a selection and a report half needs "
            "2 or more: raise --val-docs or --val-fraction"
        )
    order = list(range(n_docs))
    random.Random(f"split_halves:{seed}").shuffle(order)
    half = n_docs // 2
    return sorted(order[:half]), sorted(order[half:])


@dataclass(frozen=True)
class BestLR:
    """One design's best rate on the selection half and its figures on the report half."""

    lr: float
    index: int  # of lr in the grid
    selection_means: tuple[float, ...]  # per rate: the mean over seeds of the capped selection loss
    report: tuple[float, ...]  # per seed: the capped report-half loss at lr
    failed: tuple[bool, ...]  # per seed: the report-half loss at lr was capped (None, non-finite,
    # or above loss_at_init)


def best_lr(
    lrs: Sequence[float],
    selection: Sequence[Sequence[float | None]],
    report: Sequence[Sequence[float | None]],
    loss_at_init: float,
) -> BestLR:
    """The rate of `lrs` with the lowest mean over seeds of the selection-half loss, and each
    seed's report-half loss there (`selection[s][k]`, `report[s][k]`: seed s, rate lrs[k]).

    Every loss counts as `capped` (a diverged run as loss_at_init, a loss above it as
    loss_at_init), so that a rate where a seed failed is compared, not skipped, and every seed has
    a number to pair with another design's. Ties (equal means): the smaller rate. The report
    figures are per seed, so two designs' best-rate figures are paired by seed
    (`stats.paired_interval`)."""
    n = len(lrs)
    if n == 0 or not selection or len(selection) != len(report):
        raise ValueError("give a rate or more, and selection and report losses for each seed")
    if any(len(row) != n for row in (*selection, *report)):
        raise ValueError("each seed needs one selection and one report loss per rate")
    means = tuple(mean([capped(row[k], loss_at_init) for row in selection]) for k in range(n))
    k = min(range(n), key=lambda i: (means[i], lrs[i]))
    figures = tuple(capped(row[k], loss_at_init) for row in report)
    failed = tuple(
        row[k] is None or not math.isfinite(row[k]) or row[k] > loss_at_init for row in report
    )
    return BestLR(lrs[k], k, means, figures, failed)
