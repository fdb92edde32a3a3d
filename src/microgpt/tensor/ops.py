"""The model's fused operations, each a forward and its hand-written backward.

Tensor mode runs without autograd: at these sizes a training step is a hundred tiny kernels, and
autograd's bookkeeping around each would cost more than the arithmetic (docs/performance.md).
Each op here is the tensor form of one function of scalar mode (`microgpt.scalar.model`): the
forward returns what the backward needs, and the backward maps the output's gradient to the
inputs' gradients. `tests/test_tensor_ops.py` checks every backward against autograd and finite
differences.

Constants that would otherwise be Python numbers passed as a tensor operand (eps) come in as
0-dim tensors: torch turns a Python number into a tensor on every call, which costs as much as
the op itself at these sizes. Scale factors go through `alpha=` / `value=` arguments instead.

Shapes: N positions, C channels; attention works on H heads x R rows of W positions with D
channels each. In a stack of S runs (`net.py`, `stack.py`) tensors have a leading S axis,
(S, N, C), and attention's sequences are H x S x R; every op here is written over the last axes,
so it serves both. The MLP's activations are (forward, backward) pairs by name (`ACTIVATIONS`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.rope import rope_tables as rope_angles

RMS_EPS = 1e-5


# rmsnorm: y = x / sqrt(mean(x²) + eps) ------------------------------------------------------------


def rmsnorm(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """(..., C) -> y (..., C) and rstd = 1 / sqrt(mean(x²) + eps) (..., 1), over the last
    dimension: a position's C channels, or with qk-norm a head's D channels. eps is 0-dim."""
    squares = x.square().sum(-1, keepdim=True)  # (..., 1)
    rstd = torch.add(eps, squares, alpha=1 / x.shape[-1]).rsqrt_()
    return x * rstd, rstd


def rmsnorm_backward(dy: Tensor, y: Tensor, rstd: Tensor, dx: Tensor | None = None) -> Tensor:
    """The gradient of x from dy: rstd * (dy - y * mean(dy * y)); added into `dx` if given."""
    dot = (dy * y).sum(-1, keepdim=True)  # (..., 1)
    centered = torch.addcmul(dy, y, dot, value=-1 / y.shape[-1])
    return centered.mul_(rstd) if dx is None else dx.addcmul_(centered, rstd)


# causal self-attention within documents -----------------------------------------------------------


FEW_SCORES = 512  # up to this many attention scores, torch's softmax beats `softmax_rows`


def softmax_rows(x: Tensor, keep: Tensor) -> Tensor:
    """softmax over the last axis, where `keep` (broadcast to x) is 1 and x is finite, and
    exactly 0 where `keep` is 0 and x is -inf: exp(x - max) / sum in five whole-tensor kernels.

    A stack's attention has many short rows (W < 16) and many masked entries, where torch's fused
    CPU softmax is slow unless W is a multiple of the vector width, and exp of -inf (or of
    anything that underflows) takes a slow path (docs/performance.md). So exp never sees an
    argument below -80 (exp(-80) = 1.8e-35, a normal number in every dtype used), and the kept
    mask zeroes the masked entries. A weight below e^-80 becomes
    e^-80: a change far below the float32 rounding of the weights that matter."""
    e = torch.sub(x, x.amax(-1, keepdim=True)).clamp_(min=-80.0).exp_().mul_(keep)
    return e.div_(e.sum(-1, keepdim=True))


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    p: float = 0.0,
    generator=None,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """dropout(softmax(q kᵀ / sqrt(D) + mask)) v, the attention weights before the dropout, and
    the dropout's scale (None when p = 0: no dropout).

    q, k, v: (H * R, W, D), head-major: sequence h * R + r is head h of row r (in a stack, R
    counts the rows of every run, S * R). mask: (R, W, W), shared by every head: 0 where query i
    may see key j and -inf where it may not (a later position, or another document of the same
    row), so those weights are exactly 0. `keep` (a stack's batch): 1 - (mask == -inf), for
    `softmax_rows` in place of torch's softmax (but for a small stack's few scores).
    Returns y (H * R, W, D), att and att_scale (H * R, W, W)."""
    scores = torch.bmm(q, k.mT).view(-1, *mask.shape)  # (H, R, W, W)
    scores = torch.add(mask, scores, alpha=q.shape[-1] ** -0.5)
    if keep is None or scores.numel() <= FEW_SCORES:
        att = torch.softmax(scores, dim=-1)
    else:
        att = softmax_rows(scores, keep)
    att = att.view(q.shape[0], *mask.shape[1:])  # (H * R, W, W)
    att_dropped, att_scale = dropout(att, p, generator, heads=True)
    return torch.bmm(att_dropped, v), att, att_scale


def max_attention_logit(q: Tensor, k: Tensor, mask: Tensor, real: Tensor | None = None) -> Tensor:
    """The largest logit q·k / sqrt(D) any query gives a key it may see (0-dim): the diagnostic
    of attention-logit growth (Wortsman et al. 2023). q, k and mask as `attention` takes them
    (`AttentionActs` keeps q and k as attention used them). `real` (N,) bool, N = R * W: the
    queries that count (a packed batch's real positions, `Batch.weights > 0`); None: every
    query, a padding position (token 0 at position 0, which sees itself only) too."""
    scores = torch.add(mask, torch.bmm(q, k.mT).view(-1, *mask.shape), alpha=q.shape[-1] ** -0.5)
    per_query = scores.amax(-1)  # (H, R, W)
    if real is None:
        return per_query.amax()
    return per_query.view(per_query.shape[0], -1)[:, real].amax()


def attention_backward(
    dy: Tensor, q: Tensor, k: Tensor, v: Tensor, att: Tensor, out: Tensor, att_scale=None
) -> Tensor:
    """Gradients of q, k, v from dy (all (H * R, W, D)), written into out[0], out[1], out[2];
    `att_scale` is the forward's dropout scale (None: no dropout)."""
    datt = torch.bmm(dy, v.mT)  # (H * R, W, W), the gradient of the weights after dropout
    if att_scale is None:
        torch.bmm(att.mT, dy, out=out[2])
    else:
        torch.bmm((att * att_scale).mT, dy, out=out[2])  # dv = dropped weightsᵀ dy
        datt.mul_(att_scale)  # back through the dropout to the softmax's output
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
    document's mean loss. In a stack, (S, N, ...) in and one loss per run, (S, 1, 1), out."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, targets).mT @ neg_weights


def cross_entropy_with_grad(
    logits: Tensor, targets: Tensor, weights: Tensor, neg_weights: Tensor, z_loss: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The loss and d loss / d logits = weights_i * (softmax(logits_i) - onehot(targets_i)).

    With `z_loss` = c > 0 the loss adds sum_i weights_i * c * (log Z_i)², Z_i the softmax's
    normaliser (log Z_i = logsumexp(logits_i)), and its gradient
    weights_i * 2 c log Z_i * softmax(logits_i); c = 0 does none of that work."""
    logp = torch.log_softmax(logits, dim=-1)
    loss = logp.gather(-1, targets).mT @ neg_weights  # (1, 1)
    scale = weights  # (N, 1): each softmax's factor in the gradient
    if z_loss:
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, 1)
        loss = loss.add(log_z.square().mT @ weights, alpha=z_loss)
        scale = torch.addcmul(weights, weights, log_z, value=2 * z_loss)  # w (1 + 2 c log Z)
    dlogits = logp.exp_().mul_(scale)  # (N, V)
    return loss, dlogits.scatter_add_(-1, targets, neg_weights)


# logit soft-capping (Gemma 2): y = cap * tanh(z / cap) ------------------------------------------


def softcap(z: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """cap * tanh(z / cap), elementwise (scalar mode's `softcap`): every logit within (-cap,
    cap), close to z where |z| << cap. Returns y and t = tanh(z / cap), what the backward needs."""
    t = torch.mul(z, 1 / cap).tanh_()
    return t * cap, t


def softcap_backward(dy: Tensor, t: Tensor) -> Tensor:
    """dz = dy (1 - t²) = dy - dy t t, t = tanh(z / cap)."""
    return torch.addcmul(dy, dy * t, t, value=-1)


# the MLP's activations: forward(x) -> (y, saved), backward(dy, saved) -> dx -----------------------


def relu(x: Tensor) -> tuple[Tensor, Tensor]:
    """max(x, 0), in place on x (a fresh matmul product); the backward needs the output."""
    y = torch.relu_(x)
    return y, y


def relu_backward(dy: Tensor, y: Tensor) -> Tensor:
    """dy where the ReLU's output y is positive, else 0 (scalar mode: local grad [x > 0])."""
    return torch.ops.aten.threshold_backward(dy, y, 0)


def relu2(x: Tensor) -> tuple[Tensor, Tensor]:
    """Squared ReLU, relu(x)², in place on x; the backward needs r = relu(x)."""
    r = torch.relu_(x)
    return r.square(), r


def relu2_backward(dy: Tensor, r: Tensor) -> Tensor:
    """d relu(x)² / dx = 2 r (0 where x <= 0, as r is): dy r + dy r, exactly 2 r dy."""
    dx = dy * r
    return dx.add_(dx)


def gelu(x: Tensor) -> tuple[Tensor, Tensor]:
    """GELU, tanh form (GPT-2's): 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x³).
    The backward needs x."""
    return torch.nn.functional.gelu(x, approximate="tanh"), x


def gelu_backward(dy: Tensor, x: Tensor) -> Tensor:
    """dy * (0.5 (1 + tanh(u)) + 0.5 x (1 - tanh²(u)) sqrt(2/pi) (1 + 3 * 0.044715 x²)),
    in one kernel (aten's `gelu_backward`, tanh form: the same formula)."""
    return torch.ops.aten.gelu_backward(dy, x, approximate="tanh")


ACTIVATIONS = {
    "relu": (relu, relu_backward),
    "relu2": (relu2, relu2_backward),
    "gelu": (gelu, gelu_backward),
}


# rotary position embeddings (RoPE, `microgpt.rope`) ----------------------------------------------


def rope_tables(
    head_dim: int, block_size: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """`rope`'s operands for every position, (T, D) each: cos(theta) for both halves, and
    sin(theta) signed by half, [-sin, sin] (from scalar mode's tables, `microgpt.rope`)."""
    cos, sin = rope_angles(head_dim, block_size)  # (T, D/2) each, Python floats
    c = torch.tensor(cos, dtype=torch.float64)
    s = torch.tensor(sin, dtype=torch.float64)
    cos2, sin2 = torch.cat((c, c), -1), torch.cat((-s, s), -1)
    return cos2.to(device, dtype), sin2.to(device, dtype)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x[i], x[i + D/2]) by theta_i: x cos + swap_halves(x) [-sin, sin], i.e.
    y[i] = x[i] cos - x[i + D/2] sin and y[i + D/2] = x[i + D/2] cos + x[i] sin.

    x (..., N, D); cos, sin (N, D) from `rope_tables`, rows at each position's angle."""
    return torch.addcmul(x * cos, swap_halves(x), sin)


def rope_backward(dy: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """The gradient of x: the rotation by -theta, dy cos - swap_halves(dy) [-sin, sin]."""
    return torch.addcmul(dy * cos, swap_halves(dy), sin, value=-1)


def swap_halves(x: Tensor) -> Tensor:
    """(..., D) -> (x[..., D/2:], x[..., :D/2]), in one kernel (a flip of the two halves)."""
    D = x.shape[-1]
    return x.unflatten(-1, (2, D // 2)).flip(-2).flatten(-2)


# dropout (tensor mode only) -----------------------------------------------------------------------


def dropout(x: Tensor, p: float, generator, heads: bool = False) -> tuple[Tensor, Tensor | None]:
    """y = x * scale, scale = mask / (1 - p) with mask_i ~ Bernoulli(1 - p) drawn from
    `generator`; returns y and scale (shaped as x) for the backward. p = 0 returns x itself
    and None, and draws nothing. `generator` is a torch.Generator, or a stack's `RunGenerators`
    (`stack.py`), which draws each run's bits as its solo run would; `heads` tells it that x is
    attention weights (H * S * R, W, W) rather than positions (S, N, C).

    The mask keeps r_i < round((1 - p) 2^31) for r_i uniform 31-bit integers (what `random_`
    draws into int32): a keep probability within 2^-32 of 1 - p, for a fraction of the cost of
    `bernoulli_` on a CPU (docs/performance.md)."""
    if p == 0:
        return x, None
    if isinstance(generator, torch.Generator):
        r = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_(generator=generator)
    else:
        r = generator.bits(x, heads)
    keep = r < round((1 - p) * 2**31)
    scale = keep.to(x.dtype).mul_(1 / (1 - p))
    return x * scale, scale


def dropout_backward(dy: Tensor, scale: Tensor | None) -> Tensor:
    """dx = dy * scale (the same mask and 1 / (1 - p)); dy itself when p = 0."""
    return dy if scale is None else dy * scale
