"""The reference's building blocks as plain differentiable functions, for design files.

A design file (`microgpt.design`) writes its forward pass with these and ordinary torch ops
(`@`, `+`, `torch.tanh` ...), and torch autograd derives the backward. The blocks that stand for
many tensor ops (rmsnorm, attention, the MLP, embedding lookups, a linear layer of a weight) run
the hand-written kernels of `microgpt.tensor.ops` in a `torch.autograd.Function`: autograd sees
one node where it would otherwise record a dozen, and the arithmetic is the tested arithmetic of
the hand-written model, so the reference composed of these blocks (`reference_forward`) trains
as `TensorGPT` does.

Shapes follow `tensor/net.py`: N positions of a packed batch (R rows x W columns), C
channels, V the vocabulary; a weight is a matrix (rows, cols). Every block works over an optional
leading axis of S runs (written *S): in a stack every weight is (S, rows, cols) and every
activation (S, N, C), so a forward written with these blocks and ordinary torch ops runs a stack
unchanged. Two things need a block rather than plain indexing: looking up rows of a weight
(`embed`: `w["wte"][tokens]` would mix the runs of a stack) and attention (`attention`: its mask
keeps documents apart and causal). A weight of shape (1, C) broadcasts over the positions, and
in a stack (S, 1, C) over each run's, as a gain or a bias should.

Dropout (`dropout`, and the attention weights') draws its masks from the run's own generators
(`DesignBatch.generator`, seeded per run and step as for the built-in designs), in the order the
hand-written model draws them, so that a stacked run is its solo run with dropout too.

Weight gradients (speed only; the values are autograd's): a weight that is one of the net's
leaves (`design_net.py`: its `.grad` preset to a view of the flat gradient buffer) is handed to
a block's function detached, with that `.grad` as its sink, and the backward adds the weight's
gradient into the sink as the hand-written backward does (`net.accumulate`). Autograd then
keeps no node for the weight, which at batch 1 costs as much as the arithmetic. Any other
tensor's gradient flows through autograd as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor
from torch.autograd import Function

from microgpt.config import ModelConfig
from microgpt.tensor import ops
from microgpt.tensor.net import accumulate, mm
from microgpt.tensor.packing import Batch

# the batch a design's forward reads ---------------------------------------------------------------


@dataclass(frozen=True)
class DesignBatch(Batch):
    """A packed batch (`packing.Batch`: tokens and positions (*S, N), the attention mask ...)
    and what the blocks need besides: the dropout probability (0 outside training) and the
    run's generator (`stack.RunGenerators` in a stack)."""

    dropout: float = 0.0
    generator: object = None
    attention_log: list | None = None  # a list: every attention appends its (q, k) heads


def design_batch(batch: Batch, dropout: float = 0.0, generator=None, log=None) -> DesignBatch:
    """`batch`'s fields and these, without the dataclass's `__init__`: the fields are a
    `Batch`'s already, and a frozen dataclass's `__init__` costs as much as a small kernel."""
    out = object.__new__(DesignBatch)
    out.__dict__.update(batch.__dict__, dropout=dropout, generator=generator, attention_log=log)
    return out


# helpers ------------------------------------------------------------------------------------------


@cache
def _eps(dtype: torch.dtype, device: torch.device) -> Tensor:
    """rmsnorm's eps as a 0-dim tensor (`ops`: a Python number operand costs a conversion)."""
    return torch.tensor(ops.RMS_EPS, dtype=dtype, device=device)


@cache
def _rope_tables(head_dim: int, width: int, dtype, device) -> tuple[Tensor, Tensor]:
    """RoPE's (cos, signed sin) for positions 0 .. width - 1, (width, D) each
    (`ops.rope_tables`); a batch's positions are below its width."""
    return ops.rope_tables(head_dim, width, dtype, device)


def _fast_apply(cls):
    """`cls.apply` without torch's Python wrapper around it, which serves functorch transforms
    (torch.func) only and costs about as much as a small kernel; with a transform active, the
    wrapper itself."""
    apply = super(Function, cls).apply  # torch._C._FunctionBase.apply, bound to cls

    def fast(*args):
        if torch._C._are_functorch_transforms_active():
            return cls.apply(*args)
        return apply(*args)

    return fast


def _take(x: Tensor | None, *weights: Tensor) -> tuple[list[Tensor], tuple]:
    """The weights as a block's function gets them, and their sinks (see the module's
    docstring): a net's leaf goes in detached when x requires grad (else the block's output
    would not, and its backward would never run), its sink its preset `.grad`; None for any
    other weight, whose gradient autograd handles."""
    if not torch.is_grad_enabled():
        return list(weights), (None,) * len(weights)
    detach = x is not None and x.requires_grad
    out, sinks = [], []
    for w in weights:
        sink = w.grad if w.is_leaf else None  # a non-leaf's .grad would warn
        out.append(w.detach() if sink is not None and detach else w)
        sinks.append(sink)
    return out, tuple(sinks)


def _weight_grad(ctx, i: int, sink: Tensor | None, a: Tensor, b: Tensor) -> Tensor | None:
    """d loss / d weight = a @ b for input i: added into `sink` (then None), or returned."""
    if sink is not None:
        accumulate(sink, a, b)
        return None
    return mm(a, b) if ctx.needs_input_grad[i] else None


# the blocks' autograd functions over the hand-written kernels -------------------------------------


class _Linear(Function):
    """y = x @ w.T: x (*S, N, in), w (*S, out, in) -> (*S, N, out)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, sink) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.sink = sink
        return mm(x, w.mT)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, w = ctx.saved_tensors
        dw = _weight_grad(ctx, 1, ctx.sink, dy.mT, x)  # (*S, out, in)
        return (mm(dy, w) if ctx.needs_input_grad[0] else None), dw, None


class _RMSNorm(Function):
    """y = x / sqrt(mean(x²) + eps) over the last axis (`ops.rmsnorm`)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y, rstd = ops.rmsnorm(x, _eps(x.dtype, x.device))
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        y, rstd = ctx.saved_tensors
        return ops.rmsnorm_backward(dy, y, rstd)


class _Embed(Function):
    """Rows `index` (*S, N) of `table` (*S, V, C): (*S, N, C), each run its own table's rows;
    the backward adds the rows' gradients in place (`net.GPTNet._embed_backward`)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, sink) -> Tensor:
        ctx.shape, ctx.sink = table.shape, sink
        if table.dim() == 2:
            ctx.save_for_backward(index)
            return table[index]
        runs = torch.arange(table.shape[0], device=index.device)[:, None]  # (S, 1)
        ctx.save_for_backward(runs, index)
        return table[runs, index]

    @staticmethod
    def backward(ctx, dy: Tensor):
        out = dy.new_zeros(ctx.shape) if ctx.sink is None else ctx.sink
        if len(ctx.shape) == 2:
            out.index_add_(0, ctx.saved_tensors[0], dy.to(out.dtype))
        else:
            out.index_put_(ctx.saved_tensors, dy.to(out.dtype), accumulate=True)
        return (out if ctx.sink is None else None), None, None


class _Rope(Function):
    """Each head's channel pairs turned by its position's angles (`ops.rope`); x (..., D)."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return ops.rope(x, cos, sin)

    @staticmethod
    def backward(ctx, dy: Tensor):
        cos, sin = ctx.saved_tensors
        return ops.rope_backward(dy, cos, sin), None, None


class _Attention(Function):
    """Causal attention within documents (`ops.attention`) of q, k, v (*S, N, C), each split
    into H heads; the heads side by side again, (*S, N, C)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, batch: DesignBatch, H: int) -> Tensor:
        lead, (N, C), W = q.shape[:-2], q.shape[-2:], batch.width
        D = C // H
        # (3, H, *S, N, D): every head's sequence of every run and row contiguous
        qkv = torch.stack((q, k, v)).view(3, *lead, N, H, D).movedim(-2, 1).contiguous()
        qh, kh, vh = qkv.view(3, -1, W, D)  # (H * S * R, W, D) each
        y, att, scale = _attend(qh, kh, vh, batch)
        ctx.attended = (qh, kh, vh, att, scale)
        ctx.dims = (lead, N, H, W, D)
        return y.view(H, *lead, N, D).movedim(0, -2).reshape(*lead, N, C)

    @staticmethod
    def backward(ctx, dy: Tensor):
        lead, N, H, W, D = ctx.dims
        dyh = dy.view(*lead, N, H, D).movedim(-2, 0).reshape(-1, W, D)
        dqkv = _attend_backward(dyh, *ctx.attended)
        dq, dk, dv = dqkv.view(3, H, *lead, N, D).movedim(1, -2).reshape(3, *lead, N, H * D)
        return dq, dk, dv, None, None


class _SelfAttention(Function):
    """The reference's attention as one node (`net.GPTNet._attention` and `_attention_backward`):
    x (*S, N, C), rmsnormed first if `norm`; q, k, v = x @ [wq; wk; wv].T in one matmul, split
    into H heads, qk-normed and rotated (RoPE) if asked, attended causally within documents,
    the heads side by side through wo: (*S, N, C)."""

    @staticmethod
    def forward(ctx, x, wq, wk, wv, wo, sinks, batch: DesignBatch, H: int, qk_norm, rope, norm):
        lead, (N, C), W = x.shape[:-2], x.shape[-2:], batch.width
        D = C // H
        ctx.rstd = ctx.qk_rstd = ctx.cos_sin = None
        if norm:
            x, ctx.rstd = ops.rmsnorm(x, _eps(x.dtype, x.device))
        wqkv = torch.cat((wq, wk, wv), -2)  # (*S, 3C, C)
        qkv = mm(x, wqkv.mT).view(*lead, N, 3 * H, D).movedim(-2, 0).contiguous()
        q, k, v = qkv.view(3, -1, W, D)  # (H * S * R, W, D): a sequence per head, run and row
        if qk_norm or rope:
            qk = qkv[: 2 * H]  # (2H, *S, N, D): every head's queries, then keys
            if qk_norm:
                qk, ctx.qk_rstd = ops.rmsnorm(qk, _eps(x.dtype, x.device))
                ctx.qk_normed = qk
            if rope:
                cos, sin = _rope_tables(D, batch.width, x.dtype, x.device)
                ctx.cos_sin = (cos[batch.positions], sin[batch.positions])  # (*S, N, D)
                qk = ops.rope(qk, *ctx.cos_sin)
            q, k = qk.view(2, -1, W, D)
        y, att, scale = _attend(q, k, v, batch)
        y = y.view(H, *lead, N, D).movedim(0, -2).reshape(*lead, N, C)  # heads side by side
        ctx.save_for_backward(x)  # x, or rmsnorm(x): saved so that autograd sees x changed in place
        ctx.wo, ctx.y, ctx.wqkv = wo, y, wqkv
        ctx.attended, ctx.sinks, ctx.dims = (q, k, v, att, scale), sinks, (lead, N, H, W, D)
        return mm(y, wo.mT)

    @staticmethod
    def backward(ctx, dout: Tensor):
        lead, N, H, W, D = ctx.dims
        (x,), C = ctx.saved_tensors, H * D
        dwo = _weight_grad(ctx, 4, ctx.sinks[3], dout.mT, ctx.y)  # (*S, C, C)
        dy = mm(dout, ctx.wo).view(*lead, N, H, D).movedim(-2, 0).reshape(-1, W, D)
        dqkv = _attend_backward(dy, *ctx.attended)  # (3, H * S * R, W, D)
        if ctx.qk_rstd is not None or ctx.cos_sin is not None:
            dqk_out = dqk = dqkv[:2].view(2 * H, *lead, N, D)  # d queries, then d keys
            if ctx.cos_sin is not None:
                dqk = ops.rope_backward(dqk, *ctx.cos_sin)
            if ctx.qk_rstd is not None:
                dqk = ops.rmsnorm_backward(dqk, ctx.qk_normed, ctx.qk_rstd)
            dqk_out.copy_(dqk)
        dqkv = dqkv.view(3 * H, *lead, N, D).movedim(0, -2).reshape(*lead, N, 3 * C)  # as qkv
        dqkv_t = dqkv.mT  # (*S, 3C, N): d q, d k, d v by rows
        dw = [
            _weight_grad(ctx, 1 + j, ctx.sinks[j], dqkv_t[..., j * C : (j + 1) * C, :], x)
            for j in range(3)
        ]
        dx = mm(dqkv, ctx.wqkv)
        if ctx.rstd is not None:
            dx = ops.rmsnorm_backward(dx, x, ctx.rstd)
        return dx, *dw, dwo, None, None, None, None, None, None


class _MLP(Function):
    """fc2 @ activation(fc1 @ x), x (*S, N, C) (rmsnormed first if `norm`), fc1 (*S, H, C),
    fc2 (*S, C, H); the activation a (forward, backward) pair of `ops.ACTIVATIONS`
    (`net.GPTNet._mlp` and `_mlp_backward`)."""

    @staticmethod
    def forward(ctx, x: Tensor, fc1: Tensor, fc2: Tensor, sinks, activation: str, norm: bool):
        forward, ctx.activation_backward = ops.ACTIVATIONS[activation]
        ctx.rstd = None
        if norm:
            x, ctx.rstd = ops.rmsnorm(x, _eps(x.dtype, x.device))
        hidden, saved = forward(mm(x, fc1.mT))  # (*S, N, H)
        ctx.save_for_backward(x)
        ctx.fc1, ctx.fc2, ctx.hidden, ctx.saved, ctx.sinks = fc1, fc2, hidden, saved, sinks
        return mm(hidden, fc2.mT)

    @staticmethod
    def backward(ctx, dy: Tensor):
        (x,) = ctx.saved_tensors
        dfc2 = _weight_grad(ctx, 2, ctx.sinks[1], dy.mT, ctx.hidden)  # (*S, C, H)
        dpre = ctx.activation_backward(mm(dy, ctx.fc2), ctx.saved)  # (*S, N, H)
        dfc1 = _weight_grad(ctx, 1, ctx.sinks[0], dpre.mT, x)  # (*S, H, C)
        dx = mm(dpre, ctx.fc1)
        if ctx.rstd is not None:
            dx = ops.rmsnorm_backward(dx, x, ctx.rstd)
        return dx, dfc1, dfc2, None, None, None


def _attend(q: Tensor, k: Tensor, v: Tensor, batch: DesignBatch) -> tuple:
    """`ops.attention` of heads (H * S * R, W, D): y, the attention weights and the dropout's
    scale (None without dropout)."""
    if batch.attention_log is not None:
        batch.attention_log.append((q.detach(), k.detach()))
    return ops.attention(q, k, v, batch.mask, batch.dropout, batch.generator, batch.keep)


def _attend_backward(dy: Tensor, q: Tensor, k: Tensor, v: Tensor, att: Tensor, scale) -> Tensor:
    """d q, d k, d v (3, H * S * R, W, D) from dy (H * S * R, W, D)."""
    return ops.attention_backward(dy, q, k, v, att, dy.new_empty(3, *q.shape), scale)


_linear = _fast_apply(_Linear)
_rmsnorm = _fast_apply(_RMSNorm)
_embed = _fast_apply(_Embed)
_rope = _fast_apply(_Rope)
_attention = _fast_apply(_Attention)
_self_attention = _fast_apply(_SelfAttention)
_mlp = _fast_apply(_MLP)


# the blocks a design file composes ---------------------------------------------------------------


def linear(x: Tensor, w: Tensor) -> Tensor:
    """y_i = sum_j w[i][j] x_j: x (*S, N, in), w (*S, out, in) -> (*S, N, out); x with more
    axes than that broadcasts as `x @ w.mT` does."""
    if x.dim() != w.dim():
        return x @ w.mT
    (w,), (sink,) = _take(x, w)
    if sink is None:
        return mm(x, w.mT)
    return _linear(x, w, sink)


def rmsnorm(x: Tensor, heads: int = 1) -> Tensor:
    """x / sqrt(mean(x²) + 1e-5) over the last axis, no gain; with `heads`, over each of that
    many equal slices of it apart (qk-norm: each head's channels)."""
    if heads == 1:
        return _rmsnorm(x)
    return _rmsnorm(x.unflatten(-1, (heads, -1))).flatten(-2)


def embed(table: Tensor, index: Tensor) -> Tensor:
    """Rows of a weight: table (*S, V, C) at index (*S, N) -> (*S, N, C); in a stack, each run
    its own table's rows."""
    (table,), (sink,) = _take(None, table)
    return _embed(table, index, sink)


def dropout(x: Tensor, batch: DesignBatch) -> Tensor:
    """Each entry of activations x (*S, N, K) zeroed with probability p = `batch.dropout`, the
    rest scaled by 1 / (1 - p), the mask drawn from the run's generator; x itself when p = 0."""
    if batch.dropout == 0:
        return x
    with torch.no_grad():
        _, scale = ops.dropout(x, batch.dropout, batch.generator)
    return x * scale


def rope(x: Tensor, batch: DesignBatch, n_head: int) -> Tensor:
    """Rotary position embedding of each head's channels of x (*S, N, C) by its position in
    its own document (`microgpt.rope`: pairs (x[i], x[i + D/2]) turned by pos * 10000^(-2i/D))."""
    D = x.shape[-1] // n_head
    cos, sin = _rope_tables(D, batch.width, x.dtype, x.device)
    at = batch.positions[..., None]  # (*S, N, 1): the same angles for every head
    return _rope(x.unflatten(-1, (n_head, D)), cos[at], sin[at]).flatten(-2)


def attention(q: Tensor, k: Tensor, v: Tensor, batch: DesignBatch, n_head: int) -> Tensor:
    """softmax(q kᵀ / sqrt(D) + mask) v for each of `n_head` heads of q, k, v (*S, N, C): each
    position sees the positions of its own document up to itself; the attention weights dropped
    with `batch.dropout`. Returns the heads side by side, (*S, N, C)."""
    return _attention(q, k, v, batch, n_head)


def self_attention(
    x: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    batch: DesignBatch,
    n_head: int,
    qk_norm: bool = False,
    rope: bool = False,
    norm: bool = False,
) -> Tensor:
    """Multi-head self-attention as one block: `attention` of q = x @ wq.T, k = x @ wk.T,
    v = x @ wv.T (x (*S, N, C), each weight (*S, C, C)), its heads side by side through wo,
    (*S, N, C). `qk_norm`: each head's q and k rmsnormed; `rope`: rotated by position; `norm`:
    x rmsnormed first (the reference's pre-norm), in the same autograd node."""
    weights, sinks = _take(x, wq, wk, wv, wo)
    return _self_attention(x, *weights, sinks, batch, n_head, qk_norm, rope, norm)


def mlp(
    x: Tensor, fc1: Tensor, fc2: Tensor, activation: str = "relu", norm: bool = False
) -> Tensor:
    """fc2 @ activation(fc1 @ x): x (*S, N, C), fc1 (*S, H, C), fc2 (*S, C, H); activation
    relu, relu2 (squared relu) or gelu (tanh form); `norm`: x rmsnormed first (the reference's
    pre-norm), in the same autograd node."""
    weights, sinks = _take(x, fc1, fc2)
    return _mlp(x, *weights, sinks, activation, norm)


def relu(x: Tensor) -> Tensor:
    return torch.relu(x)


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU, relu(x)²."""
    return torch.relu(x).square()


def gelu(x: Tensor) -> Tensor:
    """GELU, tanh form (GPT-2's)."""
    return torch.nn.functional.gelu(x, approximate="tanh")


ACTIVATIONS = {"relu": relu, "relu2": relu2, "gelu": gelu}  # by `mlp_activation` value


def cross_entropy(logits: Tensor, batch: Batch) -> Tensor:
    """The training loss of `logits` (*S, N, V) on the batch's targets: each run's weighted sum
    of -log softmax(logits)[target] (its mean over documents of each one's mean), (*S, 1, 1)."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, batch.targets).mT @ batch.neg_weights


# the reference, composed of the blocks ------------------------------------------------------------


def embeddings(w, batch: DesignBatch, config: ModelConfig) -> Tensor:
    """wte[token] (+ wpe[position] with learned positions), dropped, then the input rmsnorm if
    on: the residual stream's start, (*S, N, C)."""
    x = embed(w["wte"], batch.tokens)
    if config.position == "learned":
        x = x + embed(w["wpe"], batch.positions)
    x = dropout(x, batch)
    return rmsnorm(x) if config.input_rmsnorm else x


def attention_branch(x: Tensor, w, i: int, batch: DesignBatch, config: ModelConfig) -> Tensor:
    """Layer i's attention of rmsnorm(x) through attn_wo and dropout: what the residual adds.
    Queries and keys qk-normed and rotated as the switches say."""
    weights = (w[f"layer{i}.attn_{name}"] for name in ("wq", "wk", "wv", "wo"))
    rope = config.position == "rope"
    y = self_attention(x, *weights, batch, config.n_head, config.qk_norm, rope, norm=True)
    return dropout(y, batch)


def mlp_branch(x: Tensor, w, i: int, batch: DesignBatch, config: ModelConfig) -> Tensor:
    """Layer i's MLP of rmsnorm(x), through dropout: what the residual adds."""
    fc1, fc2 = w[f"layer{i}.mlp_fc1"], w[f"layer{i}.mlp_fc2"]
    return dropout(mlp(x, fc1, fc2, config.mlp_activation, norm=True), batch)


def head(x: Tensor, w, config: ModelConfig) -> Tensor:
    """The final rmsnorm if on, then the logits (*S, N, V): lm_head, or wte when tied."""
    if config.final_rmsnorm:
        x = rmsnorm(x)
    return linear(x, w["wte" if config.tie_lm_head else "lm_head"])


def reference_forward(w, batch: DesignBatch, config: ModelConfig) -> Tensor:
    """The reference model (every built-in switch honoured) from the blocks: logits (*S, N, V)."""
    x = embeddings(w, batch, config)
    for i in range(config.n_layer):
        x = x + attention_branch(x, w, i, batch, config)
        x = x + mlp_branch(x, w, i, batch, config)
    return head(x, w, config)
