"""Muon, declared once for both modes: which weights it trains, its Newton-Schulz iteration
(here in plain Python, scalar mode's rendering) and the scale of its update.

Muon (MomentUm Orthogonalized by Newton-Schulz; Keller Jordan's reference, `KellerJordan/Muon`,
`muon.py`) replaces a hidden matrix's update by an approximately orthogonal matrix with the
same singular vectors. For a weight W (rows x cols) with gradient G, after the gradient has been
clipped to its global norm (over every weight, as `--grad-clip` does for Adam):

    buf <- beta buf + (1 - beta) G          momentum, beta = --muon-momentum (0.95)
    U   <- (1 - beta) G + beta buf          Nesterov's look-ahead
    O   <- newton_schulz(U)                 about U's U Vᵀ, singular values in about [0.7, 1.2]
    W   <- W (1 - lr weight_decay) - lr scale(rows, cols) O

Which weights: the hidden matrices, every 2-D weight inside a block (attention's q, k, v and o,
the MLP's two). The embeddings, positions and head (`ADAMW_MATRICES`: wte, wpe, lm_head) take
AdamW at the same learning rate, with exactly the Adam of `--optimizer adamw`: the rows of an
embedding are looked up one token at a time, and the head's rows are one per class, so neither
is a map between hidden spaces that orthogonalising would suit. With a tied head, wte is both
the embedding and the head: it stays with AdamW. Any other matrix of more than one row and
column (a design file's new block weight) is hidden; a row or a column (a gain, a bias, a
scalar) is not a map between spaces either, and takes AdamW. A design file may say otherwise
for its own weights (`design.Weight.muon`: an embedding table of its own goes to AdamW).

q, k and v are three matrices. Tensor mode stores a layer's attn_wq, attn_wk and attn_wv side
by side and multiplies by them as one (3C, C) matrix `attn_wqkv`; Muon still orthogonalises
each (C, C) matrix on its own, as the reference and modded-nanogpt do, not the fused (3C, C)
one (whose orthogonalisation would tie the three updates together through one shared set of
singular values).

The update scale, the one design choice here: Moonlight's 0.2 sqrt(max(rows, cols)) (Liu et
al. 2025, arXiv 2502.16982), not the reference's max(1, rows / cols)^0.5. An orthogonal
(rows x cols) matrix has an RMS entry of 1 / sqrt(max(rows, cols)), so Moonlight's scale gives
every Muon update an RMS of about 0.2, the RMS an AdamW update typically has: one learning
rate then serves both groups, the AdamW rate of `--optimizer adamw` carries over, and
`--lr-sweep` sweeps one axis. The reference's scale (RMS about 1 / sqrt(cols)) needs a Muon
rate of its own, about 0.02 against Adam's 1e-3 to 1e-2, and with it a second axis to sweep.

Precision: the reference runs Newton-Schulz in bfloat16 on a GPU. Here it runs in the run's
own dtype: Python floats (float64) in scalar mode; in tensor mode the master weights' dtype
(float32 by default and under --dtype bfloat16, float64 for the parity tests).
"""

from __future__ import annotations

import math
from operator import mul

Matrix = list[list[float]]

ADAMW_MATRICES = ("wte", "wpe", "lm_head")  # the embeddings, positions and head: AdamW
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c): the reference's quintic
NS_STEPS = 5
NS_EPS = 1e-7  # in the Frobenius normalisation, as the reference
UPDATE_RMS = 0.2  # Moonlight's: the RMS of a Muon update, about that of an AdamW update


def muon_matrices(
    shapes: dict[str, tuple[int, int]], declared: dict[str, bool] | None = None
) -> list[str]:
    """The names of the matrices Muon trains, in `shapes`' order: the hidden ones, every
    matrix of more than one row and column but the embeddings, positions and head
    (`ADAMW_MATRICES`); a weight in `declared` (a design file's own choice, `design.Weight`)
    goes where it says, True: Muon, False: AdamW."""
    declared = declared or {}
    return [
        name
        for name, (rows, cols) in shapes.items()
        if declared.get(name, name not in ADAMW_MATRICES and rows > 1 and cols > 1)
    ]


def update_scale(rows: int, cols: int) -> float:
    """Moonlight's 0.2 sqrt(max(rows, cols)): a (rows x cols) Muon update's RMS about 0.2."""
    return UPDATE_RMS * math.sqrt(max(rows, cols))


def newton_schulz(G: Matrix) -> Matrix:
    """Five steps of the quintic Newton-Schulz iteration towards the orthogonal factor of G:

    X <- G / (|G|_F + 1e-7), transposed when G is tall (rows > cols), so that X Xᵀ is the
    smaller Gram matrix; then five times  A = X Xᵀ;  B = b A + c A A;  X <- a X + B X;  and
    transposed back. Each step maps every singular value s of X to a s + b s³ + c s⁵, which
    pushes the singular values (at most 1 after the normalisation) towards an interval around
    1 while leaving the singular vectors alone."""
    a, b, c = NS_COEFFICIENTS
    tall = len(G) > len(G[0])
    X = transpose(G) if tall else G
    norm = math.sqrt(math.fsum(x * x for row in X for x in row))
    X = [[x / (norm + NS_EPS) for x in row] for row in X]
    for _ in range(NS_STEPS):
        A = matmul_t(X, X)  # X Xᵀ, symmetric
        AA = matmul_t(A, A)  # A Aᵀ = A A
        B = [[b * p + c * q for p, q in zip(pa, qa)] for pa, qa in zip(A, AA)]
        BX = matmul_t(B, transpose(X))  # B X
        X = [[a * x + y for x, y in zip(xr, yr)] for xr, yr in zip(X, BX)]
    return transpose(X) if tall else X


def matmul_t(P: Matrix, Q: Matrix) -> Matrix:
    """P Qᵀ: entry (i, j) is row i of P dotted with row j of Q."""
    return [[sum(map(mul, p, q)) for q in Q] for p in P]


def transpose(M: Matrix) -> Matrix:
    return [list(col) for col in zip(*M)]
