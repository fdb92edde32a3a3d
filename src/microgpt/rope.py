"""Rotary position embeddings (RoPE): the angle tables both modes share, in Python floats.

Convention ("rotate pairs of halves", as GPT-NeoX and llama): a head's D channels form D/2
pairs (x[i], x[i + D/2]), i = 0 .. D/2 - 1, and the pair at position `pos` is rotated by the
angle theta = pos * base**(-2i / D):

    y[i]       = x[i] cos(theta) - x[i + D/2] sin(theta)
    y[i + D/2] = x[i] sin(theta) + x[i + D/2] cos(theta)

Queries and keys are both rotated, so q·k depends on the positions only through their
difference. The backward is the rotation by -theta. `pos` is the position inside the token's
own document. There is no weight: a RoPE model has no `wpe`.
"""

from __future__ import annotations

import math

ROPE_BASE = 10000.0


def rope_tables(head_dim: int, block_size: int) -> tuple[list[list[float]], list[list[float]]]:
    """cos(theta) and sin(theta), each (block_size, head_dim / 2): row pos, column i."""
    half = head_dim // 2
    inv_freq = [ROPE_BASE ** (-2 * i / head_dim) for i in range(half)]
    angles = [[pos * f for f in inv_freq] for pos in range(block_size)]
    return [[math.cos(a) for a in row] for row in angles], [
        [math.sin(a) for a in row] for row in angles
    ]
