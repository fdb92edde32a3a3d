"""Muon on flat buffers: scalar mode's `_muon`, batched over the runs of a stack and over the
matrices of one shape.

What Muon is, which matrices it trains and why its update is scaled as it is: `microgpt.muon`.
Here the work is shaped for a GPU or a CPU's BLAS. Every hidden matrix is gathered from the flat
gradient into one (S * K, rows, cols) batch per shape, K the matrices of that shape in one run
(a tall one transposed by the gather itself, so that the MLP's (4C, C) `mlp_fc1` joins its
(C, 4C) `mlp_fc2`): at the reference's sizes two batches, each one bmm chain of fifteen
products, whatever the number of layers and runs. q, k and v stay three matrices of the (C, C)
batch, never the fused (3C, C) `attn_wqkv` that the model multiplies by. The embeddings and the
head keep `FlatAdam`, on the spans of the buffer they occupy.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from microgpt.config import GRAD_CLIP_EPS, TrainConfig
from microgpt.muon import NS_COEFFICIENTS, NS_EPS, NS_STEPS, muon_matrices, update_scale
from microgpt.tensor.optim import FlatAdam
from microgpt.tensor.params import FlatLayout


def newton_schulz(G: Tensor) -> Tensor:
    """`microgpt.muon.newton_schulz` of every matrix of a (..., rows, cols) batch at once:
    X = G / (|G|_F + eps), transposed when tall; five times A = X Xᵀ, B = b A + c A A,
    X = a X + B X; transposed back. In G's dtype."""
    a, b, c = NS_COEFFICIENTS
    tall = G.size(-2) > G.size(-1)
    X = G.mT if tall else G
    rows, cols = X.shape[-2:]
    X = X.reshape(-1, rows, cols)  # one batch axis: baddbmm is 3-D
    X = X / (torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) + NS_EPS)
    for _ in range(NS_STEPS):
        A = torch.bmm(X, X.mT)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A A
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X
    X = X.view(*G.shape[:-2], rows, cols)
    return X.mT if tall else X


class FlatMuon:
    """Muon's momentum for the hidden matrices of a flat parameter buffer (a solo model's
    (numel,) or a stack's (S, numel), laid out by `layout`), AdamW's moments for the rest, and
    one update of them all, as scalar mode's `_muon`:

    g <- g * min(1, clip / (|g| + 1e-6)) when clipping, |g| the norm of a run's whole gradient;
    p <- p * (1 - lr * weight_decay), every weight (AdamW's decoupled decay, both groups);
    AdamW on the embeddings and head: exactly `FlatAdam`, whose moments `m` and `v` are views of
    full-layout buffers here (0 over Muon's matrices), as a `FlatAdam`'s are;
    Muon on each hidden matrix W: buf <- beta buf + (1 - beta) g; U <- (1 - beta) g + beta buf;
    W <- W - lr * 0.2 sqrt(max(rows, cols)) * newton_schulz(U).

    `momentum` is a full-layout buffer too, 0 outside Muon's matrices, so that a stack's run is
    a row of every buffer (`momentum[s]`, `m[s]`, `v[s]`) as with `FlatAdam`."""

    def __init__(
        self,
        layout: FlatLayout,
        params: Tensor,
        grads: Tensor,
        train: TrainConfig,
        muon: dict[str, bool] | None = None,
    ):
        """`muon`: the matrices whose group a design file declares (`muon_matrices`)."""
        self.layout, self.params, self.grads = layout, params, grads
        self.beta = train.muon_momentum
        self.weight_decay, self.grad_clip = train.weight_decay, train.grad_clip
        self.last_grad_norm: Tensor | None = None  # before clipping; (S, 1) in a stack
        self.momentum = torch.zeros_like(params)
        self.m = torch.zeros_like(params)  # AdamW's moments, over the whole layout
        self.v = torch.zeros_like(params)
        self.names = muon_matrices(layout.shapes, muon)
        # AdamW: one FlatAdam per run of adjacent non-Muon matrices (at the reference: wte, wpe
        # and lm_head, the first three), without the clip and the decay, which `update` applies
        # to the whole buffer first in FlatAdam's own order and arithmetic
        adam_train = replace(train, grad_clip=0.0, weight_decay=0.0)
        self.adams = []
        for start, end in _spans(layout, [n for n in layout.shapes if n not in self.names]):
            adam = FlatAdam(params[..., start:end], grads[..., start:end], adam_train)
            adam.m, adam.v = self.m[..., start:end], self.v[..., start:end]
            self.adams.append(adam)
        self.muon_spans = _spans(layout, self.names)
        # Muon: the hidden matrices grouped by shape, tall ones transposed: for each group, its
        # (rows, cols), the positions in the flat buffer of its K matrices' entries (each
        # matrix's in the order of its oriented rows) and the update's scale
        groups: dict[tuple[int, int], list[Tensor]] = {}
        for name in self.names:
            rows, cols = layout.shapes[name]
            start = layout.offsets[name]
            index = torch.arange(start, start + rows * cols).view(rows, cols)
            if rows > cols:
                index, rows, cols = index.T, cols, rows
            groups.setdefault((rows, cols), []).append(index.reshape(-1))
        self.groups = [
            (shape, torch.cat(parts).to(params.device), update_scale(*shape))
            for shape, parts in groups.items()
        ]

    def state(self) -> dict[str, Tensor]:
        """Adam's moments and Muon's momentum, by the names a checkpoint stores them under, each
        laid out as the weights (`momentum` 0 outside Muon's matrices, `adam_m`, `adam_v` 0
        over them)."""
        return {"adam_m": self.m, "adam_v": self.v, "momentum": self.momentum}

    def saved_matrices(self, key: str) -> list[str] | None:
        """The matrices a checkpoint keeps of state `key`: of the momentum, Muon's alone."""
        return self.names if key == "momentum" else None

    def update(self, lrs: list[float], step: int) -> None:
        """Apply update number `step` (1 for the first), in place, run s at learning rate
        `lrs[s]`: one rate for a solo model's (numel,) buffers, S for a stack's (S, numel),
        where each run clips by its own gradient's norm and steps at its own rate."""
        stacked = self.params.dim() == 2
        g = self.grads
        if self.grad_clip > 0:
            norm = torch.linalg.vector_norm(g, dim=-1, keepdim=stacked)  # (S, 1) or 0-dim
            self.last_grad_norm = norm
            g.mul_(torch.clamp(self.grad_clip / (norm + GRAD_CLIP_EPS), max=1.0))
        if self.weight_decay > 0:
            if stacked:
                self.params.mul_(self._column([1 - r * self.weight_decay for r in lrs]))
            else:
                self.params.mul_(1 - lrs[0] * self.weight_decay)
        for adam in self.adams:
            adam.update(lrs, step)
        beta = self.beta
        look_ahead = torch.empty_like(g)  # U, over Muon's spans
        for start, end in self.muon_spans:
            buf, grad = self.momentum[..., start:end], g[..., start:end]
            buf.mul_(beta).add_(grad, alpha=1 - beta)
            torch.mul(grad, 1 - beta, out=look_ahead[..., start:end])
            look_ahead[..., start:end].add_(buf, alpha=beta)
        for (rows, cols), index, scale in self.groups:
            U = look_ahead.index_select(-1, index)  # (*S, K * rows * cols)
            O = newton_schulz(U.view(-1, rows, cols)).view(U.shape)
            if stacked:
                O.mul_(self._column([-r * scale for r in lrs]))
            else:
                O.mul_(-lrs[0] * scale)
            self.params.index_add_(-1, index, O)

    def _column(self, values: list[float]) -> Tensor:
        column = torch.tensor(values, dtype=torch.float64).view(-1, 1)
        return column.to(self.params.device, self.params.dtype)


def _spans(layout: FlatLayout, names: list[str]) -> list[tuple[int, int]]:
    """The [start, end) ranges of the flat buffer that `names` cover, adjacent ones merged."""
    spans: list[tuple[int, int]] = []
    for name in names:
        rows, cols = layout.shapes[name]
        start = layout.offsets[name]
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], start + rows * cols)
        else:
            spans.append((start, start + rows * cols))
    return spans
