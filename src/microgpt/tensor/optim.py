"""Adam on flat buffers: scalar mode's `_adam`, one whole-buffer op per line for a solo model,
torch's fused kernel over a stack's rows (one pass: a stack's buffers leave the CPU's cache).

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
        self.eps = train.eps
        self._fused_buffers: tuple | None = None  # a stack's, made on its first update

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
        else:
            self._update_stack(lrs, step)

    def _update_stack(self, lrs: list[float], step: int) -> None:
        """A stack's update: each run's clip here, then torch's fused AdamW kernel, one pass
        over the weights, gradient and moments (the multi-kernel `_update` makes about ten,
        each over the whole stack: docs/performance.md), one call per distinct learning rate
        with the rows of the runs at that rate. Its arithmetic is `_update`'s but for the
        rounding of the moment's interpolation and of the bias corrections (float64: within
        1e-16 relative a step)."""
        g = self.grads
        if self.grad_clip > 0:
            norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)  # (S, 1)
            self.last_grad_norm = norm
            g.mul_(torch.clamp(self.grad_clip / (norm + GRAD_CLIP_EPS), max=1.0))
        if self._fused_buffers is None:
            self._fused_buffers = self._fused_layout()
        whole, rows, step_count = self._fused_buffers
        step_count.fill_(step)
        if whole is not None and lrs.count(lrs[0]) == len(lrs):  # one rate: one call
            self._fused(whole, lrs[0])
            return
        runs_at: dict[float, list[int]] = {}
        for s, lr in enumerate(lrs):
            runs_at.setdefault(lr, []).append(s)
        for lr, runs in runs_at.items():
            self._fused([[buffer[s] for s in runs] for buffer in rows], lr)

    def _fused_layout(self) -> tuple:
        """What the fused kernel is given: the four buffers whole (if contiguous, else None),
        each buffer's rows (a run's, contiguous), and the step count as a tensor. Made when
        first needed: `FlatMuon` sets `m` and `v` after construction."""
        buffers = (self.params, self.grads, self.m, self.v)
        whole = [[b] for b in buffers] if all(b.is_contiguous() for b in buffers) else None
        rows = [list(b.unbind(0)) for b in buffers]
        step_count = torch.zeros((), dtype=torch.float32, device=self.params.device)
        return whole, rows, step_count

    def _fused(self, buffers: list[list[Tensor]], lr: float) -> None:
        params, grads, m, v = buffers
        step_count = self._fused_buffers[2]
        torch._fused_adamw_(
            params, grads, m, v, [], [step_count] * len(params), lr=lr, beta1=self.beta1,
            beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
            maximize=False,
        )  # fmt: skip

    def _update(
        self, params: Tensor, g: Tensor, m: Tensor, v: Tensor, lrs: list[float], step: int
    ) -> None:
        """Adam on one model's (numel,) buffers at the rate `lrs[0]`, in scalar mode's order:
        the step size folded into `addcdiv_`'s value."""
        b1, b2 = self.beta1, self.beta2
        if self.grad_clip > 0:
            norm = torch.linalg.vector_norm(g)
            self.last_grad_norm = norm
            # clamped rather than tested: `if` on a tensor would wait for the device
            g.mul_(torch.clamp(self.grad_clip / (norm + GRAD_CLIP_EPS), max=1.0))
        m_correction, v_correction = 1 - b1**step, 1 - b2**step
        (lr,) = lrs
        if self.weight_decay > 0:
            params.mul_(1 - lr * self.weight_decay)
        m.mul_(self._beta1).add_(g, alpha=1 - b1)
        v.mul_(self._beta2).addcmul_(g, g, value=1 - b2)
        denom = torch.add(self._eps, v.sqrt(), alpha=v_correction**-0.5)  # sqrt(v_hat) + eps
        params.addcdiv_(m, denom, value=-lr / m_correction)
