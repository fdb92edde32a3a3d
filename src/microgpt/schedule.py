"""The learning-rate schedule: one pure function of the step and the `TrainConfig`.

For a 0-based step s of S = `steps`, with peak lr = `learning_rate`, floor `min_lr` and
W = `warmup_steps`:

    warm-up (s < W):  lr * (s + 1) / W          (step 0 already trains, at lr / W; step W - 1
                                                 reaches lr; nanoGPT's (s + 1) / (W + 1) never does)
    then, from the decay's first step s0 on, with progress p = (s - s0) / (S - s0) in [0, 1):
      linear:    min_lr + (lr - min_lr) * (1 - p)                    s0 = W
      cosine:    min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * p))    s0 = W
      constant:  lr
      wsd:       lr before s0, then linear's formula, from s0 = max(W, S - D), where
                 D = floor(f * S + 1/2), f = `decay_fraction`: the last f of all S steps, to
                 the nearest step (halves up), and never into the warm-up

Every decay would reach min_lr at s = S, one step after the last; its first step s0 still has
lr (p = 0 up to the rounding of min_lr + (lr - min_lr)). With W = 0 and min_lr = 0, linear is
the reference's `lr * (1 - s / S)`, float for float: 0.0 + x and lr - 0.0 are exact.

wsd (warmup-stable-decay, Hu et al. 2024, MiniCPM) counts its decay in all S steps, as
modded-nanogpt's cooldown fraction does, so that a longer warm-up does not move the decay; a
warm-up that runs into the last D steps shortens the decay instead (it starts at W). Its decay
is linear, as modded-nanogpt's: with f = 1 (or W >= S - D) it is `linear` step for step, the
same expression on the same s0, float for float. Hägele et al. 2024 (arXiv 2405.18392) found a
1 - sqrt(p) cooldown slightly better than linear; it is not offered here.
"""

from __future__ import annotations

import math

from microgpt.config import TrainConfig


def lr_at(step: int, tc: TrainConfig) -> float:
    """The learning rate of 0-based step `step`."""
    lr, warmup = tc.learning_rate, tc.warmup_steps
    if step < warmup:
        return lr * (step + 1) / warmup
    if tc.lr_schedule == "constant":
        return lr
    start = warmup
    if tc.lr_schedule == "wsd":
        start = max(warmup, tc.steps - decay_steps(tc))
        if step < start:
            return lr
    progress = (step - start) / (tc.steps - start)
    if tc.lr_schedule == "cosine":
        return tc.min_lr + 0.5 * (lr - tc.min_lr) * (1 + math.cos(math.pi * progress))
    return tc.min_lr + (lr - tc.min_lr) * (1 - progress)  # linear, and wsd's decay


def decay_steps(tc: TrainConfig) -> int:
    """D, the length of wsd's decay before the warm-up may shorten it: `decay_fraction` of the
    steps, to the nearest step, halves up."""
    return math.floor(tc.decay_fraction * tc.steps + 0.5)


def warmup_warning(warmup_steps: int, steps: int) -> str | None:
    """The warning for a warm-up longer than the run (allowed: a recipe run with a small
    --steps has one), or None. Its rate never reaches the peak, and no schedule decays."""
    if warmup_steps <= steps:
        return None
    return (
        f"--warmup-steps {warmup_steps} is longer than the run ({steps} steps): the learning "
        f"rate rises to only {steps}/{warmup_steps} of its peak and never decays"
    )
