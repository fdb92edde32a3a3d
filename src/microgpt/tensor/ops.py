"""The model's fused operations, each a forward and its hand-written backward.

Tensor mode runs without autograd: at these sizes a training step is a hundred tiny kernels, and
autograd's bookkeeping around each would cost more than the arithmetic. Each op here is the
tensor form of one function of scalar mode (`microgpt.scalar.model`): the forward returns what
the backward needs, and the backward maps the output's gradient to the inputs' gradients.
`tests/test_tensor_ops.py` checks every backward against autograd and finite differences.

Constants that would otherwise be Python numbers passed as a tensor operand (eps) come in as
0-dim tensors: torch turns a Python number into a tensor on every call, which costs as much as
the op itself at these sizes. Scale factors go through `alpha=` / `value=` arguments instead.

Shapes: N positions, C channels; attention works on H heads x R rows of W positions with D
channels each.
"""

from __future__ import annotations

import torch
from torch import Tensor

RMS_EPS = 1e-5


# rmsnorm: y = x / sqrt(mean(x²) + eps) ------------------------------------------------------------


def rmsnorm(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C) -> y (N, C) and rstd = 1 / sqrt(mean(x²) + eps) (N, 1); eps is 0-dim."""
    squares = x.square().sum(-1, keepdim=True)  # (N, 1)
    rstd = torch.add(eps, squares, alpha=1 / x.shape[-1]).rsqrt_()
    return x * rstd, rstd


def rmsnorm_backward(dy: Tensor, y: Tensor, rstd: Tensor, dx: Tensor | None = None) -> Tensor:
    """The gradient of x from dy: rstd * (dy - y * mean(dy * y)); added into `dx` if given."""
    dot = (dy * y).sum(-1, keepdim=True)  # (N, 1)
    centered = torch.addcmul(dy, y, dot, value=-1 / y.shape[-1])
    return centered.mul_(rstd) if dx is None else dx.addcmul_(centered, rstd)


# causal self-attention within documents -----------------------------------------------------------


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ / sqrt(D) + mask) v, and the attention weights.

    q, k, v: (H * R, W, D), head-major: sequence h * R + r is head h of row r. mask: (R, W, W),
    shared by every head: 0 where query i may see key j and -inf where it may not (a later
    position, or another document of the same row), so those weights are exactly 0.
    Returns y (H * R, W, D) and att (H * R, W, W)."""
    scores = torch.bmm(q, k.mT).view(-1, *mask.shape)  # (H, R, W, W)
    att = torch.softmax(torch.add(mask, scores, alpha=q.shape[-1] ** -0.5), dim=-1)
    att = att.view(q.shape[0], *mask.shape[1:])  # (H * R, W, W)
    return torch.bmm(att, v), att


def attention_backward(
    dy: Tensor, q: Tensor, k: Tensor, v: Tensor, att: Tensor, out: Tensor
) -> Tensor:
    """Gradients of q, k, v from dy (all (H * R, W, D)), written into out[0], out[1], out[2]."""
    datt = torch.bmm(dy, v.mT)  # (H * R, W, W)
    torch.bmm(att.mT, dy, out=out[2])
    # softmax backward: dscores = att * (datt - sum_j att_j datt_j); masked pairs stay 0
    dscores = datt.mul_(att)
    dscores.addcmul_(att, dscores.sum(-1, keepdim=True), value=-1)
    # dq = dscores k / sqrt(D), dk = dscoresᵀ q / sqrt(D); baddbmm with beta=0 ignores its input
    scale = q.shape[-1] ** -0.5
    torch.baddbmm(q, dscores, k, beta=0, alpha=scale, out=out[0])
    torch.baddbmm(k, dscores.mT, q, beta=0, alpha=scale, out=out[1])
    return out


# cross-entropy, weighted per position -------------------------------------------------------------


def cross_entropy(logits: Tensor, targets: Tensor, neg_weights: Tensor) -> Tensor:
    """sum_i weights_i * -log softmax(logits_i)[targets_i], as a (1, 1) tensor.

    logits (N, V); targets (N, 1); neg_weights (N, 1) = -weights: 1 / (documents x document
    length) at real positions and 0 at padding, so the sum is the mean over documents of each
    document's mean loss."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(1, targets).mT @ neg_weights


def cross_entropy_with_grad(
    logits: Tensor, targets: Tensor, weights: Tensor, neg_weights: Tensor
) -> tuple[Tensor, Tensor]:
    """The loss and d loss / d logits = weights_i * (softmax(logits_i) - onehot(targets_i))."""
    logp = torch.log_softmax(logits, dim=-1)
    loss = logp.gather(1, targets).mT @ neg_weights  # (1, 1)
    dlogits = logp.exp_().mul_(weights)  # (N, V)
    return loss, dlogits.scatter_add_(1, targets, neg_weights)


# ReLU ---------------------------------------------------------------------------------------------


def relu_backward(dy: Tensor, y: Tensor) -> Tensor:
    """dy where the ReLU's output y is positive, else 0 (scalar mode: local grad [x > 0])."""
    return torch.ops.aten.threshold_backward(dy, y, 0)


# dropout (tensor mode only) -----------------------------------------------------------------------


def dropout(x: Tensor, p: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
    """y = x * scale, scale = mask / (1 - p) with mask_i ~ Bernoulli(1 - p) drawn from
    `generator`; returns y and scale (shaped as x) for the backward. p = 0 returns x itself
    and None, and draws nothing."""
    if p == 0:
        return x, None
    scale = torch.empty_like(x).bernoulli_(1 - p, generator=generator).div_(1 - p)
    return x * scale, scale


def dropout_backward(dy: Tensor, scale: Tensor | None) -> Tensor:
    """dx = dy * scale (the same mask and 1 / (1 - p)); dy itself when p = 0."""
    return dy if scale is None else dy * scale
