"""Adam on flat buffers: scalar mode's `_adam`, one whole-buffer op per line.

An optimizer here is made from a net's layout, the flat weights and gradient it updates (one
run's (numel,), or a stack's (S, numel), one run a row) and the TrainConfig (`make_optimizer`,
the one place that picks it); it steps with `update(lrs, step)`, `lrs` a column of one learning
rate per run, and `state()` names the buffers a checkpoint keeps and a stack selects runs of.
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.config import GRAD_CLIP_EPS, TrainConfig
from microgpt.tensor.params import FlatLayout

CHUNK_BYTES = 2**20  # a stack's Adam works on this many bytes of runs' buffers at a time (CPU)


def make_optimizer(
    layout: FlatLayout,
    params: Tensor,
    grads: Tensor,
    train: TrainConfig,
    muon: dict[str, bool] | None = None,
):
    """The optimizer of `train` over `params` and `grads` (laid out by `layout`): Adam(W), or
    Muon on the hidden matrices with Adam(W) on the rest (`muon.FlatMuon`); `muon`: the
    matrices whose group a design file declares (`microgpt.muon.muon_matrices`)."""
    if train.optimizer == "muon":
        from microgpt.tensor.muon import FlatMuon

        return FlatMuon(layout, params, grads, train, muon)
    return FlatAdam(params, grads, train)


class FlatAdam:
    """Adam's moments for flat parameter buffers, and the update of scalar mode.

    g <- g * min(1, clip / (|g| + 1e-6)) when clipping, |g| the L2 norm of the run's gradient;
    p <- p * (1 - lr * weight_decay) (AdamW's decoupled decay);
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g²;
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, params: Tensor, grads: Tensor, train: TrainConfig):
        self.params, self.grads = params, grads
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.beta1, self.beta2 = train.beta1, train.beta2
        self.weight_decay, self.grad_clip = train.weight_decay, train.grad_clip
        self.last_grad_norm: Tensor | None = None  # before clipping, per run; only when clipping
        # 0-dim tensors: a Python number as a tensor operand costs a conversion on every call
        like = {"dtype": params.dtype, "device": params.device}
        self._beta1 = torch.tensor(train.beta1, **like)
        self._beta2 = torch.tensor(train.beta2, **like)
        self._eps = torch.tensor(train.eps, **like)

    def state(self) -> dict[str, Tensor]:
        """The moments, by the names a checkpoint stores them under; laid out as the weights."""
        return {"adam_m": self.m, "adam_v": self.v}

    def saved_matrices(self, key: str) -> list[str] | None:
        """The matrices a checkpoint keeps of state `key` (None: every one)."""
        return None

    def update(self, lrs: list[float], step: int) -> None:
        """Apply update number `step` (1 for the first), in place, run s at learning rate
        `lrs[s]`: one rate for a solo model's (numel,) buffers, S for a stack's (S, numel),
        where each run clips by its own gradient's norm and steps at its own rate."""
        if self.params.dim() == 1:
            self._update(self.params, self.grads, self.m, self.v, lrs, step)
            return
        # a stack, a few runs at a time: every pass of Adam over a chunk that stays in the
        # CPU's cache (on a CPU the whole stack's buffers do not; docs/performance.md)
        rows = self.params.shape[0]
        chunk = rows if self.params.is_cuda else max(1, CHUNK_BYTES // self._run_bytes())
        norms = []
        for a in range(0, rows, chunk):
            b = min(rows, a + chunk)
            buffers = (self.params[a:b], self.grads[a:b], self.m[a:b], self.v[a:b])
            self._update(*buffers, lrs[a:b], step)
            norms.append(self.last_grad_norm)
        if self.grad_clip > 0:
            self.last_grad_norm = torch.cat(norms)  # (S, 1)

    def _run_bytes(self) -> int:
        """The bytes of one run's parameters, gradient and moments."""
        return 4 * self.params.shape[-1] * self.params.element_size()

    def _update(
        self, params: Tensor, g: Tensor, m: Tensor, v: Tensor, lrs: list[float], step: int
    ) -> None:
        """Adam on one model's (numel,) buffers, or on a few runs' (rows, numel); `lrs` one rate
        a run. The two round differently, and each keeps its own order: one model folds its
        step size into `addcdiv_`'s value (scalar mode's order), a stack multiplies by a column
        of per-run step sizes."""
        b1, b2 = self.beta1, self.beta2
        if self.grad_clip > 0:
            if g.dim() == 1:
                norm = torch.linalg.vector_norm(g)
            else:
                norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)  # (S, 1)
            self.last_grad_norm = norm
            # clamped rather than tested: `if` on a tensor would wait for the device
            g.mul_(torch.clamp(self.grad_clip / (norm + GRAD_CLIP_EPS), max=1.0))
        m_correction, v_correction = 1 - b1**step, 1 - b2**step
        if params.dim() == 1:
            (lr,) = lrs
            decay = 1 - lr * self.weight_decay
        else:  # the same Python arithmetic per run, then one (S, 1) column
            decay = self._column([1 - r * self.weight_decay for r in lrs])
            step_size = self._column([-r / m_correction for r in lrs])
        if self.weight_decay > 0:
            params.mul_(decay)
        m.mul_(self._beta1).add_(g, alpha=1 - b1)
        v.mul_(self._beta2).addcmul_(g, g, value=1 - b2)
        denom = torch.add(self._eps, v.sqrt(), alpha=v_correction**-0.5)  # sqrt(v_hat) + eps
        if params.dim() == 1:
            params.addcdiv_(m, denom, value=-lr / m_correction)
        else:
            params.addcdiv_(m * step_size, denom)

    def _column(self, values: list[float]) -> Tensor:
        column = torch.tensor(values, dtype=torch.float64).view(-1, 1)
        return column.to(self.params.device, self.params.dtype)
