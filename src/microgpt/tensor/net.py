"""microGPT's math in PyTorch: scalar mode's model, a whole batch of documents at a time.

Reads beside `microgpt.scalar.model`: the same weights (`wte`, `wpe`, `lm_head`,
`layer{i}.attn_wq` ...), the same operations in the same order. What changes is the shape of the
work: documents are packed into rows (`packing.py`), every position of every row goes through
each matrix at once, and a block-diagonal causal mask stands in for the growing key/value cache.

`GPTNet` is the math alone: forward, backward, logits and the loss with its gradient, over a
`Batch` and the `Views` of flat weight and gradient buffers (`params.py`). It holds no training
state: the weights, gradient, optimizer, step and dropout generators belong to whoever trains
it (`state.py`: a solo `model.TensorGPT`, or a `stack.Stack` of runs).

The run axis: a stack trains S runs of one shape as one computation, so every weight has a
leading run axis, (S, rows, cols), every activation too, (S, N, C), and each matmul becomes a
batched one; attention's sequences are H x S x R. The code below is written over that axis
(`Views.lead`), and a solo model's views have no S axis at all, so `microgpt train` runs
exactly the kernels it always ran.

There is no autograd. Each block is a forward/backward pair (`_attention` and
`_attention_backward`, `_mlp` and `_mlp_backward`) over a small dataclass naming the activations
the backward needs (`AttentionActs`, `MLPActs`); `backward` walks the layers in reverse,
writing each weight gradient straight into the flat gradient buffer. At batch size 1 a step is
about a hundred tiny kernels, so per-op overhead is the cost, which autograd's bookkeeping would
multiply (docs/performance.md). Every gradient is checked against scalar mode and autograd in the
tests.

Precision (`Placement`): float32 (default) and float64 compute in that type. bfloat16 keeps
float32 master weights and gradients; the forward and backward run on a bfloat16 copy of the
weights (matmul kernels accumulate in float32), the log-softmax over the vocabulary and its
gradient in float32, and each weight gradient is added into the float32 buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from microgpt.config import ModelConfig
from microgpt.tensor.device import Placement
from microgpt.tensor.ops import (
    ACTIVATIONS,
    RMS_EPS,
    attention,
    attention_backward,
    cross_entropy_with_grad,
    dropout,
    dropout_backward,
    rmsnorm,
    rmsnorm_backward,
    rope,
    rope_backward,
    rope_tables,
    softcap,
    softcap_backward,
)
from microgpt.tensor.packing import Batch
from microgpt.tensor.params import FlatLayout

NO_DROPOUT = (0.0, None)  # (p, generator): evaluation, and training without dropout


@dataclass
class AttentionActs:
    """What one attention block's backward needs. H heads x R rows x W positions (N = R * W),
    D channels a head (C = H * D); in a stack, S runs (*S: that axis, absent in a solo model)."""

    x_norm: Tensor  # (*S, N, C) rmsnorm of the block's input
    rstd: Tensor  # (*S, N, 1) its 1 / rms
    q: Tensor  # (H * S * R, W, D) queries as attention used them (after qk-norm and RoPE)
    k: Tensor  # (H * S * R, W, D) keys, the same
    v: Tensor  # (H * S * R, W, D) values
    att: Tensor  # (H * S * R, W, W) attention weights
    y: Tensor  # (*S, N, C) the heads side by side, the input of attn_wo
    qk_norm: tuple[Tensor, Tensor] | None  # q, k normed (2H, *S, N, D), rstd (..., 1); if on
    att_scale: Tensor | None = None  # (H * S * R, W, W) dropout's scale of att, with dropout
    out_scale: Tensor | None = None  # (*S, N, C) dropout's scale of the block's output, the same


@dataclass
class MLPActs:
    """What one MLP block's backward needs."""

    x_norm: Tensor  # (*S, N, C) rmsnorm of the block's input
    rstd: Tensor  # (*S, N, 1)
    hidden: Tensor  # (*S, N, 4C) the activation's output, the input of mlp_fc2
    saved: Tensor  # (*S, N, 4C) what the activation's backward needs (its output or input)
    out_scale: Tensor | None = None  # (*S, N, C) dropout's scale of the block's output, if any


@dataclass
class Activations:
    """What the backward needs from one forward pass."""

    input_rmsnorm: tuple[Tensor, Tensor] | None = None  # (output, rstd) when the switch is on
    attention: list[AttentionActs] = field(default_factory=list)  # per layer
    mlp: list[MLPActs] = field(default_factory=list)  # per layer
    final_rmsnorm: tuple[Tensor, Tensor] | None = None  # (output, rstd) when the switch is on
    rope: tuple[Tensor, Tensor] | None = None  # RoPE's cos, sin at each position (*S, N, D)
    x: Tensor | None = None  # final hidden state (*S, N, C), the input of the head
    softcap: Tensor | None = None  # (*S, N, V) tanh(logits / cap), with --logit-softcap
    embd_scale: Tensor | None = None  # (*S, N, C) dropout's scale of the embeddings, if any


@dataclass(frozen=True)
class Views:
    """The tensors a training step reads and writes, by name.

    Made once at start-up for eager steps (slicing twenty views every step would cost more than
    a small model's arithmetic); a compiled step makes its own inside the traced function."""

    w: dict[str, Tensor]  # weights in the compute dtype, name -> (*S, rows, cols)
    w_t: dict[str, Tensor]  # the same, transposed
    g: dict[str, Tensor]  # the gradient, name -> (*S, rows, cols)
    grad: Tensor  # the flat gradient those are views of, (*S, numel)
    eps: Tensor  # rmsnorm's eps, 0-dim
    lead: tuple[int, ...]  # the run axis: () for a solo model, (S,) for a stack
    rows: object = None  # a stack's embedding lookup (`stack.StackRows`); None: a solo model's


class GPTNet:
    """microGPT's forward and backward for a `ModelConfig`, on a `Placement`'s dtypes."""

    embeddings = ("wte", "wpe")  # the matrices whose rows are looked up by token or position
    muon = None  # with --optimizer muon, Muon's matrices by name (`microgpt.muon.muon_matrices`)

    def __init__(self, config: ModelConfig, placement: Placement):
        self.config = config
        self.placement = p = placement
        # q, k and v of a layer as one matrix (param_shapes keeps them adjacent)
        qkv = {
            f"layer{i}.attn_wqkv": (f"layer{i}.attn_wq", f"layer{i}.attn_wk", f"layer{i}.attn_wv")
            for i in range(config.n_layer)
        }
        self.layout = FlatLayout(config.param_shapes(), qkv)
        self.head = "wte" if config.tie_lm_head else "lm_head"  # the one read of tie_lm_head
        # the one read of mlp_activation: a (forward, backward) pair of `ops`
        self.activation, self.activation_backward = ACTIVATIONS[config.mlp_activation]
        self.rope = None  # RoPE's (cos, signed sin) tables (block_size, head_dim), if on
        if config.position == "rope":  # the one read of position
            self.rope = rope_tables(config.head_dim, config.block_size, p.compute_dtype, p.device)
        self._eps = torch.tensor(RMS_EPS, dtype=p.compute_dtype, device=p.device)
        self.softcap = config.logit_softcap  # the one read of logit_softcap (0: off)

    def views(self, flat: Tensor, grad: Tensor, rows=None) -> Views:
        """The views of weights `flat` (compute dtype) and gradient `grad`, (*S, numel) each;
        `rows`: a stack's embedding lookup."""
        w = self.layout.views(flat)
        w_t = {name: m.mT for name, m in w.items()}
        lead = tuple(flat.shape[:-1])
        return Views(w, w_t, self.layout.views(grad), grad, self._eps, lead, rows)

    # forward --------------------------------------------------------------------------------------

    def forward(
        self, batch: Batch, v: Views, acts: Activations | None = None, drop: tuple = NO_DROPOUT
    ) -> Tensor:
        """Final hidden state (*S, N, C) of every packed position; fills `acts` when given.
        `drop`: dropout's (p, generator), training only."""
        c = self.config
        x = self._embed("wte", batch.tokens, v)  # (*S, N, C)
        cos_sin = None  # RoPE's cos, sin at each position (*S, N, D), shared by every layer
        if self.rope is None:  # learned positions
            x = x + self._embed("wpe", batch.positions, v)
        else:
            cos_sin = (self.rope[0][batch.positions], self.rope[1][batch.positions])
            if acts is not None:
                acts.rope = cos_sin
        x, embd_scale = dropout(x, *drop)  # p = 0 draws nothing and copies nothing
        if acts is not None:
            acts.embd_scale = embd_scale
        if c.input_rmsnorm:
            x, rstd = rmsnorm(x, v.eps)
            if acts is not None:
                acts.input_rmsnorm = (x, rstd)
        for i in range(c.n_layer):
            x, attention_acts = self._attention(i, x, batch, v, cos_sin, drop)
            x, mlp_acts = self._mlp(i, x, v, drop)
            if acts is not None:
                acts.attention.append(attention_acts)
                acts.mlp.append(mlp_acts)
        if c.final_rmsnorm:
            x, rstd = rmsnorm(x, v.eps)
            if acts is not None:
                acts.final_rmsnorm = (x, rstd)
        if acts is not None:
            acts.x = x
        return x

    def _embed(self, name: str, index: Tensor, v: Views) -> Tensor:
        """Rows `index` (*S, N) of matrix `name` (an embedding lookup), (*S, N, C)."""
        if v.rows is None:
            return v.w[name][index]
        return v.rows.lookup(name, index)

    def _attention(
        self, i: int, x: Tensor, batch: Batch, v: Views, cos_sin: tuple | None, drop: tuple
    ) -> tuple[Tensor, AttentionActs]:
        """x + dropout(attention(rmsnorm(x)) @ attn_wo.T), (*S, N, C) -> (*S, N, C); `drop` is
        (p, generator), and the attention weights are dropped too."""
        c, w_t, S = self.config, v.w_t, v.lead
        R, W, H, D = batch.rows, batch.width, c.n_head, c.head_dim
        N, C = R * W, c.n_embd
        x_norm, rstd = rmsnorm(x, v.eps)
        # q, k, v from one matmul with [attn_wq; attn_wk; attn_wv]
        qkv = mm(x_norm, w_t[f"layer{i}.attn_wqkv"])  # (*S, N, 3C) = (*S, N, 3H, D)
        qkv = qkv.view(*S, N, 3 * H, D).movedim(-2, 0).contiguous()  # (3H, *S, N, D)
        q, k, val = qkv.view(3, -1, W, D)  # (H * S * R, W, D): a sequence per head, run and row
        qk_norm = None
        if c.qk_norm or cos_sin is not None:
            qk = qkv[: 2 * H]  # (2H, *S, N, D): every head's queries, then keys
            if c.qk_norm:
                qk, qk_rstd = rmsnorm(qk, v.eps)  # per head: over its D channels
                qk_norm = (qk, qk_rstd)
            if cos_sin is not None:
                qk = rope(qk, *cos_sin)
            q, k = qk.view(2, -1, W, D)
        y, att, att_scale = attention(q, k, val, batch.mask, *drop, keep=batch.keep)
        y = y.view(H, *S, N, D).movedim(0, -2).reshape(*S, N, C)  # heads side by side
        x, out_scale = residual(x, y, w_t[f"layer{i}.attn_wo"], *drop)
        return x, AttentionActs(x_norm, rstd, q, k, val, att, y, qk_norm, att_scale, out_scale)

    def _mlp(self, i: int, x: Tensor, v: Views, drop: tuple) -> tuple[Tensor, MLPActs]:
        """x + dropout(activation(rmsnorm(x) @ mlp_fc1.T) @ mlp_fc2.T), (*S, N, C) -> (*S, N, C)."""
        x_norm, rstd = rmsnorm(x, v.eps)
        hidden, saved = self.activation(mm(x_norm, v.w_t[f"layer{i}.mlp_fc1"]))  # (*S, N, 4C)
        x, out_scale = residual(x, hidden, v.w_t[f"layer{i}.mlp_fc2"], *drop)
        return x, MLPActs(x_norm, rstd, hidden, saved, out_scale)

    def logits(self, x: Tensor, v: Views, acts: Activations | None = None) -> Tensor:
        """(*S, N, C) -> (*S, N, V), in the loss dtype; soft-capped with --logit-softcap (its
        tanh kept in `acts` when given, for the backward)."""
        logits = mm(x, v.w_t[self.head]).to(self.placement.loss_dtype)
        if not self.softcap:
            return logits
        logits, t = softcap(logits, self.softcap)
        if acts is not None:
            acts.softcap = t
        return logits

    # backward -------------------------------------------------------------------------------------

    def backward(self, batch: Batch, dlogits: Tensor, acts: Activations, v: Views) -> None:
        """Write d loss / d weight of every matrix into `v.grad`, layers in reverse, from
        `dlogits`, the gradient of the head's output (before any soft-cap)."""
        w, g = v.w, v.g
        if v.lead:  # a stack writes each product over its gradient: zero the looked-up rest
            for name in self.embeddings:
                if name != self.head and name in g:
                    g[name].zero_()
        else:
            v.grad.zero_()
        accumulate(g[self.head], dlogits.mT, acts.x)  # (*S, V, C)
        dx = mm(dlogits, w[self.head])  # (*S, N, C)
        if acts.final_rmsnorm is not None:
            dx = rmsnorm_backward(dx, *acts.final_rmsnorm)
        for i in reversed(range(self.config.n_layer)):
            self._mlp_backward(i, dx, acts.mlp[i], v)
            self._attention_backward(i, dx, batch, acts.attention[i], v, acts.rope)
        if acts.input_rmsnorm is not None:
            dx = rmsnorm_backward(dx, *acts.input_rmsnorm)
        dx = dropout_backward(dx, acts.embd_scale).to(v.grad.dtype)
        self._embed_backward("wte", batch.tokens, dx, v)
        if self.rope is None:
            self._embed_backward("wpe", batch.positions, dx, v)

    def _embed_backward(self, name: str, index: Tensor, dx: Tensor, v: Views) -> None:
        """Add dx (*S, N, C) into the gradient rows `index` of matrix `name` (`_embed`)."""
        if v.rows is None:
            v.g[name].index_add_(0, index, dx)
        else:
            v.rows.add(name, index, dx)

    def _mlp_backward(self, i: int, dx: Tensor, a: MLPActs, v: Views) -> None:
        """The MLP block's weight gradients; adds its input's gradient into dx (*S, N, C)."""
        w, g = v.w, v.g
        dout = dropout_backward(dx, a.out_scale)  # dx itself without dropout
        accumulate(g[f"layer{i}.mlp_fc2"], dout.mT, a.hidden)  # (*S, C, 4C)
        dpre = self.activation_backward(mm(dout, w[f"layer{i}.mlp_fc2"]), a.saved)  # (*S, N, 4C)
        accumulate(g[f"layer{i}.mlp_fc1"], dpre.mT, a.x_norm)  # (*S, 4C, C)
        rmsnorm_backward(mm(dpre, w[f"layer{i}.mlp_fc1"]), a.x_norm, a.rstd, dx)

    def _attention_backward(
        self, i: int, dx: Tensor, batch: Batch, a: AttentionActs, v: Views, cos_sin: tuple | None
    ) -> None:
        """The attention block's weight gradients; adds its input's gradient into dx (*S, N, C)."""
        c, w, g, S = self.config, v.w, v.g, v.lead
        R, W, H, D = batch.rows, batch.width, c.n_head, c.head_dim
        N, C = R * W, c.n_embd
        dout = dropout_backward(dx, a.out_scale)  # dx itself without dropout
        accumulate(g[f"layer{i}.attn_wo"], dout.mT, a.y)  # (*S, C, C)
        dy = mm(dout, w[f"layer{i}.attn_wo"]).view(*S, N, H, D).movedim(-2, 0)  # (H, *S, N, D)
        dqkv = attention_backward(
            dy.reshape(-1, W, D), a.q, a.k, a.v, a.att, dx.new_empty(3, *a.q.shape), a.att_scale
        )
        if a.qk_norm is not None or cos_sin is not None:
            dqk_out = dqk = dqkv[:2].view(2 * H, *S, N, D)  # d queries, then d keys
            if cos_sin is not None:
                dqk = rope_backward(dqk, *cos_sin)
            if a.qk_norm is not None:
                dqk = rmsnorm_backward(dqk, *a.qk_norm)
            dqk_out.copy_(dqk)
        dqkv = dqkv.view(3 * H, *S, N, D).movedim(0, -2).reshape(*S, N, 3 * C)  # laid out as qkv
        accumulate(g[f"layer{i}.attn_wqkv"], dqkv.mT, a.x_norm)  # (*S, 3C, C)
        rmsnorm_backward(mm(dqkv, w[f"layer{i}.attn_wqkv"]), a.x_norm, a.rstd, dx)

    # the loss -------------------------------------------------------------------------------------

    def loss_and_grad(
        self, batch: Batch, v: Views, drop: tuple = NO_DROPOUT, z_loss: float = 0.0
    ) -> Tensor:
        """The training loss on `batch`, (*S, 1, 1) (with `z_loss`, PaLM's auxiliary term, of
        the soft-capped logits with --logit-softcap); its gradient is left in `v.grad`."""
        acts = Activations()
        logits = self.logits(self.forward(batch, v, acts, drop), v, acts)
        loss, dlogits = cross_entropy_with_grad(
            logits, batch.targets, batch.weights, batch.neg_weights, z_loss
        )
        if acts.softcap is not None:  # back through the soft-cap, in the loss dtype
            dlogits = softcap_backward(dlogits, acts.softcap)
        self.backward(batch, dlogits.to(self.placement.compute_dtype), acts, v)
        return loss


# matmuls over the run axis ------------------------------------------------------------------------


OUT_MIN = 8192  # a run's entries of a weight from which a stack's product is written in place


def accumulate(g: Tensor, a: Tensor, b: Tensor) -> None:
    """The gradient of a weight that is one product, a @ b, put into its view g of the flat
    gradient buffer. A solo model adds it into the buffer `backward` zeroed. A stack writes it
    over g, so that no pass zeroes the whole stack's gradient (only what the embedding lookups
    add into is zeroed, and the tied head's product comes before its lookup's rows); its
    product is a batched one: the CPU's bmm with `out=` a view strided across runs falls back to
    one product per run, slower than a batched product and a copy for small matrices of many
    runs, faster for large ones or one run (`OUT_MIN`; docs/performance.md)."""
    if g.dim() == 3:
        if g.dtype == a.dtype and (g[0].numel() >= OUT_MIN or len(g) == 1):  # straight into g
            torch.bmm(a, b, out=g)
        else:
            g.copy_(torch.bmm(a, b))
    elif g.dtype == a.dtype:
        g.addmm_(a, b)
    else:  # bfloat16 compute into the float32 gradient
        g.add_(a @ b)


def mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b: a matmul, or in a stack a batched one (bmm itself: matmul's broadcasting adds six
    view ops a call, a sizeable share of a small stack's step)."""
    return a @ b if a.dim() == 2 else torch.bmm(a, b)


def addmm(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x + a @ b in one kernel, batched in a stack."""
    return torch.addmm(x, a, b) if a.dim() == 2 else torch.baddbmm(x, a, b)


def residual(x: Tensor, a: Tensor, w_t: Tensor, p: float, rng) -> tuple[Tensor, Tensor | None]:
    """x + dropout(a @ w_t) and the dropout's scale; one addmm when p = 0."""
    if p == 0:
        return addmm(x, a, w_t), None
    out, scale = dropout(mm(a, w_t), p, rng)
    return out.add_(x), scale
