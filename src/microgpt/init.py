"""The seeded initial weights, as plain Python floats, shared by both modes.

Every weight is one `rng.gauss(0, 0.08)` draw, row by row, in the reference's order. With a tied
head there is no `lm_head` matrix, and with RoPE no `wpe`: their draws are skipped, so the later
matrices move up in the stream. Names match between scalar and tensor mode.

`--init zero` (the one read of `ModelConfig.init`) starts the blocks as the identity and the
head small, as modded-nanogpt and nanochat do: every weight is drawn as above, so the stream and
every other weight are the reference's for the same seed; then each layer's `attn_wo` and
`mlp_fc2` are set to 0, and `lm_head` is multiplied by 1/80, its standard deviation 0.08 / 80 =
0.001 (nanochat's). A tied head is `wte`, which keeps its draws: shrinking it would shrink the
inputs too.
"""

from __future__ import annotations

import random

from microgpt.config import ModelConfig

INIT_STD = 0.08
SMALL_HEAD = 1 / 80  # --init zero: lm_head's scale, to std 0.001
ZEROED = ("attn_wo", "mlp_fc2")  # --init zero: the blocks' output projections

Matrix = list[list[float]]


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """Every weight matrix as `name: (rows, cols)`, in draw order (`ModelConfig.param_shapes`)."""
    return config.param_shapes()


def init_weights(config: ModelConfig, rng: random.Random) -> dict[str, Matrix]:
    weights = {
        name: [[rng.gauss(0, INIT_STD) for _ in range(cols)] for _ in range(rows)]
        for name, (rows, cols) in param_shapes(config).items()
    }
    if config.init == "zero":
        for name, m in weights.items():
            if name.rpartition(".")[2] in ZEROED:
                weights[name] = [[0.0] * len(row) for row in m]
        if "lm_head" in weights:
            weights["lm_head"] = [[w * SMALL_HEAD for w in row] for row in weights["lm_head"]]
    return weights
