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

import math
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
    shapes = param_shapes(config)
    draws = iter(gauss_draws(rng, sum(rows * cols for rows, cols in shapes.values()), INIT_STD))
    weights = {
        name: [[next(draws) for _ in range(cols)] for _ in range(rows)]
        for name, (rows, cols) in shapes.items()
    }
    if config.init == "zero":
        for name, m in weights.items():
            if name.rpartition(".")[2] in ZEROED:
                weights[name] = [[0.0] * len(row) for row in m]
        if "lm_head" in weights:
            weights["lm_head"] = [[w * SMALL_HEAD for w in row] for row in weights["lm_head"]]
    return weights


def gauss_draws(rng: random.Random, n: int, sigma: float) -> list[float]:
    """`[rng.gauss(0, sigma) for _ in range(n)]`, the same numbers and the same RNG state after,
    at about twice the speed: `random.gauss`'s Box-Muller pairs (CPython's: two `random()`
    draws give cos and sin of one angle, the second kept in `gauss_next`) computed in one loop.
    A study draws a model's weights per run; checked against `random.gauss` once per process
    (`_GAUSS_OK`), which is used instead if it ever draws otherwise."""
    if not _gauss_matches():
        return [rng.gauss(0, sigma) for _ in range(n)]
    return _draw(rng, n, sigma)


def _draw(rng: random.Random, n: int, sigma: float) -> list[float]:
    out: list[float] = []
    if n <= 0:
        return out
    kept, rng.gauss_next = rng.gauss_next, None
    if kept is not None:
        out.append(0.0 + kept * sigma)
        n -= 1
    uniform, append = rng.random, out.append
    for _ in range(n // 2):
        angle = uniform() * _TWO_PI
        radius = _sqrt(-2.0 * _log(1.0 - uniform()))
        append(0.0 + _cos(angle) * radius * sigma)
        append(0.0 + _sin(angle) * radius * sigma)
    if n % 2:
        angle = uniform() * _TWO_PI
        radius = _sqrt(-2.0 * _log(1.0 - uniform()))
        append(0.0 + _cos(angle) * radius * sigma)
        rng.gauss_next = _sin(angle) * radius
    return out


_TWO_PI = 2.0 * math.pi
_cos, _sin, _log, _sqrt = math.cos, math.sin, math.log, math.sqrt
_GAUSS_OK: list[bool] = []  # whether `gauss_draws` draws as random.gauss does (once known)


def _gauss_matches() -> bool:
    if not _GAUSS_OK:
        a, b = random.Random(12345), random.Random(12345)
        want = [a.gauss(0, 0.5) for _ in range(5)]
        got = _draw(b, 5, 0.5)
        _GAUSS_OK.append(got == want and a.getstate() == b.getstate())
    return _GAUSS_OK[0]
