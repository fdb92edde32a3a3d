"""All weights in one flat buffer, each matrix a view into it.

One buffer (and one of the same layout for the gradient and for each optimizer moment) lets the
optimizer update every parameter with a handful of whole-buffer ops, and lets the backward write
each weight gradient straight into place. A layout is whatever `name: (rows, cols)` a net gives,
in that order; the built-in net's (`net.GPTNet`) is `microgpt.init.param_shapes` order, so
`attn_wq`, `attn_wk` and `attn_wv` of a layer are adjacent: together they are one (3C, C)
matrix, `layer{i}.attn_wqkv` (a `fused` view), and q, k, v come from a single matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.errors import UserError
from microgpt.init import Matrix


class FlatLayout:
    """Where each named matrix lives in a flat buffer of `numel` numbers: `shapes` in order, and
    `fused` (name: the adjacent matrices it covers, with the same columns) their rows as one."""

    def __init__(
        self, shapes: dict[str, tuple[int, int]], fused: dict[str, tuple[str, ...]] | None = None
    ):
        self.shapes = dict(shapes)
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, (rows, cols) in self.shapes.items():
            self.offsets[name] = offset
            offset += rows * cols
        self.numel = offset
        self.fused: dict[str, tuple[int, int, int]] = {}  # name -> (offset, rows, cols)
        for name, parts in (fused or {}).items():
            cols = self.shapes[parts[0]][1]
            for a, b in zip(parts, parts[1:]):
                if self.shapes[b][1] != cols or self.offsets[b] != self.offsets[a] + (
                    self.shapes[a][0] * cols
                ):
                    raise ValueError(f"{name}: {a} and {b} are not adjacent, alike matrices")
            rows = sum(self.shapes[p][0] for p in parts)
            self.fused[name] = (self.offsets[parts[0]], rows, cols)

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Every matrix of `flat` as a (rows, cols) view, and every fused one; of a stack's
        (S, numel) buffer, (S, rows, cols) views."""
        out = {}
        for name, (rows, cols) in self.shapes.items():
            start = self.offsets[name]
            out[name] = flat[..., start : start + rows * cols].unflatten(-1, (rows, cols))
        for name, (start, rows, cols) in self.fused.items():
            out[name] = flat[..., start : start + rows * cols].unflatten(-1, (rows, cols))
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
