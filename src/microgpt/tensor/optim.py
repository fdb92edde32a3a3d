"""Adam on flat buffers: scalar mode's `_adam`, one whole-buffer op per line."""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.config import GRAD_CLIP_EPS, TrainConfig

CHUNK_BYTES = 2**20  # a stack's Adam works on this many bytes of runs' buffers at a time (CPU)


class FlatAdam:
    """Adam's moments for one flat parameter buffer, and the update of scalar mode.

    g <- g * min(1, clip / (|g| + 1e-6)) when clipping, |g| the L2 norm of the flat gradient;
    p <- p * (1 - lr * weight_decay) (AdamW's decoupled decay);
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g²;
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, params: Tensor, grads: Tensor, train: TrainConfig):
        self.params, self.grads = params, grads
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.beta1, self.beta2 = train.beta1, train.beta2
        self.weight_decay, self.grad_clip = train.weight_decay, train.grad_clip
        self.last_grad_norm: Tensor | None = None  # 0-dim, before clipping; only when clipping
        # 0-dim tensors: a Python number as a tensor operand costs a conversion on every call
        like = {"dtype": params.dtype, "device": params.device}
        self._beta1 = torch.tensor(train.beta1, **like)
        self._beta2 = torch.tensor(train.beta2, **like)
        self._eps = torch.tensor(train.eps, **like)

    def update(self, lr: float | list[float], step: int) -> None:
        """Apply update number `step` (1 for the first) at learning rate `lr`, in place. A
        stack's buffers are (S, numel), one run a row, and `lr` is a list of S rates: each run
        clips by its own gradient's norm and steps at its own rate."""
        if not isinstance(lr, list):
            self._update(self.params, self.grads, self.m, self.v, lr, step)
            return
        # a stack, a few runs at a time: every pass of Adam over a chunk that stays in the
        # CPU's cache (on a CPU the whole stack's buffers do not: a 20-run stack of a 54k
        # parameter model measured 7.5 ms a step, most of it Adam over 17 MB)
        rows = self.params.shape[0]
        chunk = rows if self.params.is_cuda else max(1, CHUNK_BYTES // self._run_bytes())
        norms = []
        for a in range(0, rows, chunk):
            b = min(rows, a + chunk)
            buffers = (self.params[a:b], self.grads[a:b], self.m[a:b], self.v[a:b])
            self._update(*buffers, lr[a:b], step)
            norms.append(self.last_grad_norm)
        if self.grad_clip > 0:
            self.last_grad_norm = torch.cat(norms)  # (S, 1)

    def _run_bytes(self) -> int:
        """The bytes of one run's parameters, gradient and moments."""
        return 4 * self.params.shape[-1] * self.params.element_size()

    def _update(
        self, params: Tensor, g: Tensor, m: Tensor, v: Tensor, lr: float | list[float], step: int
    ) -> None:
        """Adam on one model's buffers (lr a float), or on a few runs' rows (lr a list)."""
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
        if isinstance(lr, list):  # the same Python arithmetic per run, then one (S, 1) column
            decay = self._column([1 - r * self.weight_decay for r in lr])
            step_size = self._column([-r / m_correction for r in lr])
        if self.weight_decay > 0:
            params.mul_(decay if isinstance(lr, list) else 1 - lr * self.weight_decay)
        m.mul_(self._beta1).add_(g, alpha=1 - b1)
        v.mul_(self._beta2).addcmul_(g, g, value=1 - b2)
        denom = torch.add(self._eps, v.sqrt(), alpha=v_correction**-0.5)  # sqrt(v_hat) + eps
        if isinstance(lr, list):
            params.addcdiv_(m * step_size, denom)
        else:
            params.addcdiv_(m, denom, value=-lr / m_correction)

    def _column(self, values: list[float]) -> Tensor:
        column = torch.tensor(values, dtype=torch.float64).view(-1, 1)
        return column.to(self.params.device, self.params.dtype)
