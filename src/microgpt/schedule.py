"""The learning-rate schedule: one pure function of the step and the `TrainConfig`.

For a 0-based step s of S = `steps`, with peak lr = `learning_rate`, floor `min_lr` and
W = `warmup_steps`:

    warm-up (s < W):  lr * (s + 1) / W          (step 0 already trains, at lr / W; step W - 1
                                                 reaches lr; nanoGPT's (s + 1) / (W + 1) never does)
    then, with progress p = (s - W) / (S - W) in [0, 1):
      linear:    min_lr + (lr - min_lr) * (1 - p)
      cosine:    min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * p))
      constant:  lr

Both decays would reach min_lr at s = S, one step after the last. With W = 0 and min_lr = 0,
linear is the reference's `lr * (1 - s / S)`, float for float: 0.0 + x and lr - 0.0 are exact.
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
    progress = (step - warmup) / (tc.steps - warmup)
    if tc.lr_schedule == "cosine":
        return tc.min_lr + 0.5 * (lr - tc.min_lr) * (1 + math.cos(math.pi * progress))
    return tc.min_lr + (lr - tc.min_lr) * (1 - progress)  # linear
