"""All weights in one flat buffer, each matrix a view into it.

One buffer (and one of the same layout for the gradient and for each Adam moment) lets Adam
update every parameter with a handful of whole-buffer ops, and lets the backward write each
weight gradient straight into place. The layout is `microgpt.init.param_shapes` order, so
`attn_wq`, `attn_wk` and `attn_wv` of a layer are adjacent: together they are one (3C, C)
matrix, `layer{i}.attn_wqkv`, and q, k, v come from a single matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.config import ModelConfig
from microgpt.errors import UserError
from microgpt.init import Matrix, param_shapes


class FlatLayout:
    """Where each named matrix lives in a flat buffer of `numel` numbers."""

    def __init__(self, config: ModelConfig):
        self.shapes = param_shapes(config)
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, (rows, cols) in self.shapes.items():
            self.offsets[name] = offset
            offset += rows * cols
        self.numel = offset
        self.n_layer = config.n_layer

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Every matrix of `flat` as a (rows, cols) view, plus each layer's `attn_wqkv`; of a
        stack's (S, numel) buffer, (S, rows, cols) views."""
        out = {}
        for name, (rows, cols) in self.shapes.items():
            start = self.offsets[name]
            out[name] = flat[..., start : start + rows * cols].unflatten(-1, (rows, cols))
        for i in range(self.n_layer):
            start = self.offsets[f"layer{i}.attn_wq"]
            rows, cols = self.shapes[f"layer{i}.attn_wq"]
            qkv = flat[..., start : start + 3 * rows * cols]
            out[f"layer{i}.attn_wqkv"] = qkv.unflatten(-1, (3 * rows, cols))
        return out

    def to_lists(self, flat: Tensor) -> dict[str, Matrix]:
        """`name: rows of Python floats`, the checkpoint interchange format."""
        views = self.views(flat.detach().to("cpu", torch.float64))
        return {name: views[name].tolist() for name in self.shapes}

    def from_lists(self, matrices: dict[str, Matrix], flat: Tensor, what: str) -> None:
        """Copy `name: rows` into `flat`, checking that every matrix is there with its shape."""
        host = torch.empty(self.numel, dtype=torch.float64)
        views = self.views(host)
        for name, (rows, cols) in self.shapes.items():
            m = matrices.get(name)
            if m is None:
                raise UserError(f"{what} has no matrix {name!r}: it was made for another model")
            if len(m) != rows or any(len(r) != cols for r in m):
                raise UserError(
                    f"{what}: {name} should be {rows}x{cols}: it was made for another model"
                )
            views[name].copy_(torch.tensor(m, dtype=torch.float64))
        if not bool(torch.isfinite(host).all()):
            raise UserError(f"{what} holds NaN or infinite values: the checkpoint is damaged")
        flat.copy_(host)
