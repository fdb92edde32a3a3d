"""The seeded initial weights, as plain Python floats, shared by both modes.

Every weight is one `rng.gauss(0, 0.08)` draw, row by row, in the reference's order. With a tied
head there is no `lm_head` matrix, and with RoPE no `wpe`: their draws are skipped, so the later
matrices move up in the stream. Names match between scalar and tensor mode.
"""

from __future__ import annotations

import random

from microgpt.config import ModelConfig

INIT_STD = 0.08

Matrix = list[list[float]]


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """Every weight matrix as `name: (rows, cols)`, in draw order (`ModelConfig.param_shapes`)."""
    return config.param_shapes()


def init_weights(config: ModelConfig, rng: random.Random) -> dict[str, Matrix]:
    return {
        name: [[rng.gauss(0, INIT_STD) for _ in range(cols)] for _ in range(rows)]
        for name, (rows, cols) in param_shapes(config).items()
    }
