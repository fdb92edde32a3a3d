"""microGPT in PyTorch: scalar mode's model, a whole batch of documents at a time.

Reads beside `microgpt.scalar.model`: the same weights (`wte`, `wpe`, `lm_head`,
`layer{i}.attn_wq` ...), the same operations in the same order. What changes is the shape of the
work: documents are packed into rows (`packing.py`), every position of every row goes through
each matrix at once, and a block-diagonal causal mask stands in for the growing key/value cache.

Many runs at once: `TensorGPT.stack` trains S runs of one shape (the same design, sizes, batch
size and optimizer settings; each with its own initial weights, data, dropout masks and
learning rate) as one computation. Every weight gets a leading run axis, (S, rows, cols), every
activation too, (S, N, C), and each matmul becomes a batched one; attention's sequences are
H x S x R. The code below is written over that axis, and a solo model is the instance with no
S axis at all, so `microgpt train` runs exactly the kernels it always ran. Runs never mix: each
reads its own documents (`Packer.pack_runs`), clips its own gradient and steps at its own rate,
so every run of a stack is its solo run: in float64 each step's loss agrees to 1e-12 and the
weights to 1e-10 (`tests/test_stack.py`: every step from the same state, in every design; 200
free-running steps in every design but one whose float64 run is chaotic, docs/ablate.md). In
float32 the last digits differ, as batched and single matmuls round differently.

There is no autograd. Each block is a forward/backward pair (`_attention` and
`_attention_backward`, `_mlp` and `_mlp_backward`) over a small dataclass naming the activations
the backward needs (`AttentionActs`, `MLPActs`); `_backward` walks the layers in reverse,
writing each weight gradient straight into one flat gradient buffer
(`params.py`) that a flat Adam (`optim.py`) then applies. At batch size 1 a step is about a
hundred tiny kernels, so per-op overhead is the cost: the same model through autograd measured
about 2.5x slower per step. Every gradient is checked against scalar mode and autograd in the
tests.

Precision (`TensorOptions.dtype`): float32 (default) and float64 compute in that type. bfloat16
keeps float32 master weights, gradients and Adam moments; each step casts the weights to
bfloat16 once, runs the forward and backward in bfloat16 (matmul kernels accumulate in float32),
computes the log-softmax over the vocabulary and its gradient in float32, and adds each weight
gradient into the float32 buffer.

Determinism: on the CPU two runs with the same options give bit-identical results. On CUDA the
embedding gradients are summed with atomic adds (`index_add_`), so runs can differ in the last
bits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig
from microgpt.init import Matrix
from microgpt.tensor.device import resolve
from microgpt.tensor.ops import (
    ACTIVATIONS,
    RMS_EPS,
    attention,
    attention_backward,
    cross_entropy,
    cross_entropy_with_grad,
    dropout,
    dropout_backward,
    max_attention_logit,
    rmsnorm,
    rmsnorm_backward,
    rope,
    rope_backward,
    rope_tables,
)
from microgpt.tensor.optim import FlatAdam
from microgpt.tensor.packing import Batch, Packer
from microgpt.tensor.params import FlatLayout

EVAL_CHUNK = 1024  # documents per forward pass in eval_loss
EVAL_POSITIONS = 2**15  # eval_token_loss: up to this many documents x block_size per pass


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


def make_views(layout: FlatLayout, flat: Tensor, grad: Tensor, eps: Tensor) -> Views:
    w = layout.views(flat)
    return Views(w, {name: m.mT for name, m in w.items()}, layout.views(grad), grad, eps)


def accumulate(g: Tensor, a: Tensor, b: Tensor) -> None:
    """g += a @ b, where g is a weight's view of the flat gradient buffer. In a stack the
    product is a batched one, made apart and added: the CPU's baddbmm_ into a view strided
    across runs falls back to one addmm_ per run (measured 3x slower at 20 runs)."""
    if g.dtype == a.dtype and g.dim() == 2:
        g.addmm_(a, b)
    else:  # a stack, or bfloat16 compute into the float32 gradient
        g.add_(mm(a, b))


def mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b: a matmul, or in a stack a batched one (bmm itself: matmul's broadcasting adds six
    view ops a call, measured a sixth of a 5-run stack's step)."""
    return a @ b if a.dim() == 2 else torch.bmm(a, b)


def addmm(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x + a @ b in one kernel, batched in a stack."""
    return torch.addmm(x, a, b) if a.dim() == 2 else torch.baddbmm(x, a, b)


class TensorGPT:
    """The model's weights in flat tensors, with the training interface both modes share; or,
    made by `stack`, S runs of one shape trained as one computation."""

    mode = "tensor"

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, Matrix] | list[dict[str, Matrix]] | None,
        train: TrainConfig | list[TrainConfig],
        options: TensorOptions,
    ):
        """A solo model from its initial `weights` (None: zeros, for `run_model` to fill) and
        `train`; a stack (`TensorGPT.stack`) from a list of each, one per run."""
        stacked = isinstance(train, list)
        trains = train if stacked else [train]
        self.runs: int | None = len(trains) if stacked else None  # S, or None: no S axis
        self.lead: tuple[int, ...] = (len(trains),) if stacked else ()  # the S axis, if any
        self.config = config
        self.train_config = trains[0]  # what the runs share (see `check_stackable`)
        self.train_configs = trains
        self.options = options
        if stacked:
            check_stackable(trains, options)
        self.placement = p = resolve(options)
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        self.layout = FlatLayout(config)
        numel = self.layout.numel
        self.flat = torch.zeros(*self.lead, numel, device=p.device, dtype=p.master_dtype)
        for w, flat in zip(weights if stacked else [weights], self.flat.view(-1, numel)):
            if w is not None:
                self.layout.from_lists(w, flat, "the initial weights")
        self._allocate()
        self.head = "wte" if config.tie_lm_head else "lm_head"  # the one read of tie_lm_head
        # the one read of mlp_activation: a (forward, backward) pair of `ops`
        self.activation, self.activation_backward = ACTIVATIONS[config.mlp_activation]
        self.rope = None  # RoPE's (cos, signed sin) tables (block_size, head_dim), if on
        if config.position == "rope":  # the one read of position
            self.rope = rope_tables(config.head_dim, config.block_size, p.compute_dtype, p.device)
        self.packer = Packer(config.block_size, p.device, p.compute_dtype, p.loss_dtype)
        self.step = 0  # Adam updates done so far
        # dropout, in the training forward only (eval_loss and logits never drop): a generator
        # re-seeded every step from (seed, step), so a resumed run draws the same masks; in a
        # stack one per run, each drawing its run's masks (`RunGenerators`)
        self.dropout = self.train_config.dropout
        self.per_token = self.train_config.loss_average == "token"  # the training loss's average
        self._dropout_rng = None
        if self.dropout > 0:
            self._dropout_rng = torch.Generator(device=p.device)
            if stacked:
                self._dropout_rng = RunGenerators(len(trains), p.device)
        self.dropout_stream = 0  # and the rank, in a data-parallel run (0 in one process)
        self._compiled = _compile_step(self) if options.compile and not stacked else None

    @classmethod
    def stack(
        cls,
        config: ModelConfig,
        weights: list[dict[str, Matrix]],
        trains: list[TrainConfig],
        options: TensorOptions,
    ) -> TensorGPT:
        """S runs of one shape as one model: run s starts from `weights[s]` and trains with
        `trains[s]` (which may differ from the others' in seed and learning rate only)."""
        if len(weights) != len(trains) or not weights:
            raise ValueError("give one set of weights and one TrainConfig per run")
        return cls(config, list(weights), list(trains), options)

    def _allocate(self) -> None:
        """The gradient, Adam, the compute copy and the views, for `self.flat` as it is."""
        p, numel = self.placement, self.layout.numel
        # the gradient, and one spare slot where a data-parallel step (`parallel.py`) puts its
        # loss, so that one all-reduce carries both
        like = {"device": p.device, "dtype": p.master_dtype}
        self.grad_and_loss = torch.zeros(self.flat.numel() + 1, **like)
        self.grad = self.grad_and_loss[:-1].view(self.flat.shape)
        self.adam = FlatAdam(self.flat, self.grad, self.train_config)
        self._compute_flat = self.flat
        if p.compute_dtype != p.master_dtype:  # bfloat16: a compute copy, refreshed every step
            self._compute_flat = torch.empty_like(self.flat, dtype=p.compute_dtype)
        eps = torch.tensor(RMS_EPS, dtype=p.compute_dtype, device=p.device)
        self._views = make_views(self.layout, self._compute_flat, self.grad, eps)
        # a stack looks up its embeddings as rows of the whole buffer seen as (S * numel / C, C)
        # (every matrix's size is a multiple of C): row `_row_base[name][s] + i` is row i of
        # run s's matrix `name`
        C = self.config.n_embd
        self._rows = self._compute_flat.view(-1, C)
        self._grad_rows = self.grad.view(-1, C)
        self._row_base: dict[str, Tensor] = {}
        if self.runs is not None:
            runs = torch.arange(self.runs, device=p.device)[:, None] * (numel // C)
            for name in ("wte", "wpe"):
                if name in self.layout.offsets:
                    self._row_base[name] = runs + self.layout.offsets[name] // C  # (S, 1)

    def _refresh_compute_weights(self) -> None:
        if self._compute_flat is not self.flat:
            self._compute_flat.copy_(self.flat)

    def _forward(self, batch: Batch, v: Views, acts: Activations | None) -> Tensor:
        """Final hidden state (*S, N, C) of every packed position; fills `acts` when given."""
        c = self.config
        x = self._embed("wte", batch.tokens, v)  # (*S, N, C)
        cos_sin = None  # RoPE's cos, sin at each position (*S, N, D), shared by every layer
        if self.rope is None:  # learned positions
            x = x + self._embed("wpe", batch.positions, v)
        else:
            cos_sin = (self.rope[0][batch.positions], self.rope[1][batch.positions])
            if acts is not None:
                acts.rope = cos_sin
        # dropout only while training (acts given); p = 0 draws nothing and copies nothing
        drop = (self.dropout, self._dropout_rng) if acts is not None else (0.0, None)
        x, embd_scale = dropout(x, *drop)
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
        if self.runs is None:
            return v.w[name][index]
        return self._rows[index + self._row_base[name]]

    def _attention(
        self, i: int, x: Tensor, batch: Batch, v: Views, cos_sin: tuple | None, drop: tuple
    ) -> tuple[Tensor, AttentionActs]:
        """x + dropout(attention(rmsnorm(x)) @ attn_wo.T), (*S, N, C) -> (*S, N, C); `drop` is
        (p, generator), and the attention weights are dropped too."""
        c, w_t, S = self.config, v.w_t, self.lead
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

    def _logits(self, x: Tensor, v: Views) -> Tensor:
        """(*S, N, C) -> (*S, N, V), in the loss dtype."""
        return mm(x, v.w_t[self.head]).to(self.placement.loss_dtype)

    # backward -------------------------------------------------------------------------------------

    def _backward(self, batch: Batch, dlogits: Tensor, acts: Activations, v: Views) -> None:
        """Write d loss / d weight of every matrix into `v.grad`, layers in reverse."""
        w, g = v.w, v.g
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
        if self.runs is None:
            v.g[name].index_add_(0, index, dx)
        else:
            rows = (index + self._row_base[name]).view(-1)
            self._grad_rows.index_add_(0, rows, dx.view(-1, dx.shape[-1]))

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
        c, w, g, S = self.config, v.w, v.g, self.lead
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

    def _loss_and_grad(self, batch: Batch, v: Views) -> Tensor:
        """The loss on `batch`, (*S, 1, 1); its gradient is left in `v.grad`."""
        acts = Activations()
        logits = self._logits(self._forward(batch, v, acts), v)
        loss, dlogits = cross_entropy_with_grad(
            logits, batch.targets, batch.weights, batch.neg_weights, self.train_config.z_loss
        )
        self._backward(batch, dlogits.to(self.placement.compute_dtype), acts, v)
        return loss

    # the interface the training loop uses ---------------------------------------------------------

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        loss = self.compute_grad(docs)
        self.step += 1
        self.adam.update(lr, self.step)
        return loss.item()

    def compute_grad(self, docs: list[list[int]], divisor: int | None = None) -> Tensor:
        """The loss on `docs` (a (1, 1) tensor), leaving its gradient in `self.grad`: the mean
        over documents of each one's mean loss (or with --loss-average token over all their
        predicted tokens), or with `divisor` the sum over `divisor` (a data-parallel rank's
        share of a larger batch: `divisor` is then `self.packer.divisor` of the whole batch).

        No tensor here requires grad, so no autograd graph is built; `no_grad` would only add
        overhead."""
        if self.runs is None:
            batch = self.packer.pack(docs, divisor, self.per_token)
        else:
            batch = self.packer.pack_runs(docs, self.per_token)
        self._refresh_compute_weights()
        if self.runs is not None and self._dropout_rng is not None:
            seeds = [dropout_seed(tc.seed, self.step) for tc in self.train_configs]
            self._dropout_rng.start(seeds, batch)
        elif self._dropout_rng is not None:
            seed = dropout_seed(self.train_config.seed, self.step, self.dropout_stream)
            self._dropout_rng.manual_seed(seed)
        if self._compiled is not None:
            return self._compiled(self._compute_flat, self.grad, batch)
        return self._loss_and_grad(batch, self._views)

    # a stack's interface --------------------------------------------------------------------------

    def stack_step(self, docs: list[list[list[int]]], lrs: list[float]) -> list[float]:
        """One Adam update of every run: run s on its documents `docs[s]` at its learning rate
        `lrs[s]`; returns each run's loss before the update (as `train_step`)."""
        loss = self.compute_grad(docs)
        self.step += 1
        self.adam.update(lrs, self.step)
        return loss.view(-1).tolist()

    def run_model(self, s: int) -> TensorGPT:
        """Run s of the stack as a solo model (a copy: weights, Adam moments and step), for
        everything a run does alone: evaluation, sampling, checkpoints."""
        solo = TensorGPT(self.config, None, self.train_configs[s], self.options)
        for mine, its in ((self.flat, solo.flat), (self.adam.m, solo.adam.m)):
            its.copy_(mine[s])
        solo.adam.v.copy_(self.adam.v[s])
        solo.step = self.step
        return solo

    def keep_runs(self, keep: list[int]) -> None:
        """Go on with the runs `keep` (indices into the current stack, in order) alone: e.g.
        without one that diverged, so that it costs nothing from then on."""
        index = torch.tensor(keep, dtype=torch.long, device=self.flat.device)
        m, v = self.adam.m[index], self.adam.v[index]
        self.flat = self.flat[index]
        self.train_configs = [self.train_configs[i] for i in keep]
        self.runs, self.lead = len(keep), (len(keep),)
        self._allocate()
        self.adam.m.copy_(m)
        self.adam.v.copy_(v)
        if self._dropout_rng is not None:
            self._dropout_rng = RunGenerators(len(keep), self.placement.device)

    @torch.no_grad()
    def eval_loss(self, docs: list[list[int]], divisor: int | None = None) -> float:
        """See `GPT.eval_loss`; with `divisor`, the sum of the documents' mean losses over
        `divisor` (as `compute_grad`)."""
        self._refresh_compute_weights()
        total = 0.0
        for start in range(0, len(docs), EVAL_CHUNK):
            batch = self.packer.pack(docs[start : start + EVAL_CHUNK], divisor or len(docs))
            logits = self._logits(self._forward(batch, self._views, None), self._views)
            total += cross_entropy(logits, batch.targets, batch.neg_weights).item()
        return total

    @torch.no_grad()
    def eval_token_loss(self, docs: list[list[int]]) -> tuple[float, int]:
        self._refresh_compute_weights()
        total = 0.0
        chunk = max(1, EVAL_POSITIONS // self.config.block_size)
        for start in range(0, len(docs), chunk):
            batch = self.packer.pack(docs[start : start + chunk], divisor=1)
            logits = self._logits(self._forward(batch, self._views, None), self._views)
            logp = torch.log_softmax(logits, dim=-1).gather(1, batch.targets)  # (N, 1)
            real = batch.weights > 0  # padding weighs 0
            total -= torch.where(real, logp, 0).sum(dtype=torch.float64).item()
        return total, self.packer.divisor(docs, per_token=True)

    @torch.no_grad()
    def diagnostics(self, docs: list[list[int]]) -> tuple[float, float, float]:
        """The instability diagnostics of Wortsman et al. 2023 on `docs` (one forward pass, no
        dropout, no update): the largest attention logit q·k / sqrt(D) before the softmax, over
        every layer, head and real query position and the keys it may see; and the output
        logits' mean and max over every real position and the vocabulary. A solo model's."""
        self._refresh_compute_weights()
        batch = self.packer.pack(docs)
        acts = Activations()  # given, so that the forward keeps q and k; dropout kept off:
        dropout, self.dropout = self.dropout, 0.0
        try:
            x = self._forward(batch, self._views, acts)
        finally:
            self.dropout = dropout
        real = batch.weights.view(-1) > 0  # (N,) padding weighs 0
        largest = max(max_attention_logit(a.q, a.k, batch.mask, real) for a in acts.attention)
        logits = self._logits(x, self._views)[real]  # (real N, V)
        return largest.item(), logits.mean().item(), logits.max().item()

    @torch.no_grad()
    def logits(self, tokens: list[int]) -> list[float]:
        """Next-token logits after the context `tokens` (at most block_size of them)."""
        if not 1 <= len(tokens) <= self.config.block_size:
            raise ValueError(f"context of {len(tokens)} tokens: give 1 to block_size of them")
        self._refresh_compute_weights()
        batch = self.packer.pack([[*tokens, 0]])  # the last token's target is never used
        x = self._forward(batch, self._views, None)
        return self._logits(x[-1:], self._views)[0].tolist()

    # state, for checkpoints -----------------------------------------------------------------------

    def export_state(self) -> dict[str, dict[str, Matrix]]:
        return {
            "weights": self.layout.to_lists(self.flat),
            "adam_m": self.layout.to_lists(self.adam.m),
            "adam_v": self.layout.to_lists(self.adam.v),
        }

    def load_state(self, state: dict[str, dict[str, Matrix]], step: int) -> None:
        for key, buffer in (
            ("weights", self.flat),
            ("adam_m", self.adam.m),
            ("adam_v", self.adam.v),
        ):
            self.layout.from_lists(state[key], buffer, f"the checkpoint's {key}")
        self.step = step


def check_stackable(trains: list[TrainConfig], options: TensorOptions) -> None:
    """Runs share one stack if their training differs in seed and learning rate only (the
    schedule is each run's own function of its TrainConfig, so min_lr may differ too)."""
    per_run = ("seed", "learning_rate", "min_lr")
    shared = [{k: v for k, v in tc.to_dict().items() if k not in per_run} for tc in trains]
    if any(d != shared[0] for d in shared):
        raise ValueError("the runs of a stack may differ in seed and learning rate only")
    if options.compile:
        raise ValueError("a stack runs eagerly: torch.compile is for a solo model")


class RunGenerators:
    """A stack's dropout generators, one per run, each drawing its run's masks exactly as the
    solo run draws them: the bits of run s's own (rows, width) batch, in the solo order, placed
    at its rows and columns of the stack's padded batch (padding draws nothing: its bits are 0,
    a kept position that no loss or real query ever reads)."""

    def __init__(self, runs: int, device: torch.device):
        self.generators = [torch.Generator(device=device) for _ in range(runs)]
        self.shapes: tuple[tuple[int, int], ...] = ()  # each run's (rows, width) this step
        self.rows = self.width = 0  # the stack's

    def start(self, seeds: list[int], batch: Batch) -> None:
        """Seed every run's generator for this step's `batch`."""
        for generator, seed in zip(self.generators, seeds):
            generator.manual_seed(seed)
        self.shapes, self.rows, self.width = batch.runs, batch.rows, batch.width

    def bits(self, x: Tensor, heads: bool) -> Tensor:
        """Uniform 31-bit integers shaped as x: positions (S, N, C), or with `heads` attention
        weights (H * S * R, W, W)."""
        S, R, W = len(self.generators), self.rows, self.width
        int32 = {"dtype": torch.int32, "device": x.device}
        if heads:
            H = x.shape[0] // (S * R)
            out = torch.zeros(H, S, R, W, W, **int32)
            for s, (generator, (r, w)) in enumerate(zip(self.generators, self.shapes)):
                bits = torch.empty(H * r, w, w, **int32).random_(generator=generator)
                out[:, s, :r, :w, :w] = bits.view(H, r, w, w)
        else:
            C = x.shape[-1]
            out = torch.zeros(S, R, W, C, **int32)
            for s, (generator, (r, w)) in enumerate(zip(self.generators, self.shapes)):
                bits = torch.empty(r * w, C, **int32).random_(generator=generator)
                out[s, :r, :w] = bits.view(r, w, C)
        return out.view(x.shape)


def residual(x: Tensor, a: Tensor, w_t: Tensor, p: float, rng) -> tuple[Tensor, Tensor | None]:
    """x + dropout(a @ w_t) and the dropout's scale; one addmm when p = 0."""
    if p == 0:
        return addmm(x, a, w_t), None
    out, scale = dropout(mm(a, w_t), p, rng)
    return out.add_(x), scale


def dropout_seed(seed: int, step: int, stream: int = 0) -> int:
    """The dropout generator's seed for 0-based step `step` of a run seeded `seed`: a plain
    integer combination (no hash), modulo 2**32 because torch's CPU generator ignores the higher
    bits; distinct for the 2**32 steps of one seed, and spread apart between seeds. `stream` is
    a data-parallel rank (its masks differ from the others'); rank 0 draws one process's masks."""
    return (seed * 0x9E3779B1 + step + stream * 0x85EBCA77) % 2**32


def _compile_step(gpt: TensorGPT):
    """`gpt._loss_and_grad` compiled with torch.compile, as a function of plain tensors
    (flat weights, flat gradient, batch), so that guards stay few and no views or dicts cross
    the graph's boundary. If compiling or a compiled call fails, it warns once on stderr and
    runs eagerly from then on.

    Off by default: on a 2-core CPU it does not pay off at these sizes (measured: 13 to 40 s
    to compile, then batch 1 about 15% faster and batch 256 slower than eager)."""
    layout, eps = gpt.layout, gpt._views.eps

    def step(flat: Tensor, grad: Tensor, *fields: Tensor) -> Tensor:
        tokens, positions, targets, weights, neg_weights, mask = fields
        R, W = mask.shape[0], mask.shape[-1]
        batch = Batch(R, W, tokens, positions, targets, weights, neg_weights, mask)
        return gpt._loss_and_grad(batch, make_views(layout, flat, grad, eps))

    compiled = None

    def fall_back(e: Exception) -> None:
        nonlocal compiled
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"warning: torch.compile failed ({first_line}); running eagerly", file=sys.stderr)
        compiled = None

    try:
        compiled = torch.compile(step, dynamic=True)
    except Exception as e:  # noqa: BLE001 - whatever the reason, eager mode still works
        fall_back(e)

    def run(flat: Tensor, grad: Tensor, batch: Batch) -> Tensor:
        if compiled is not None:
            fields = (batch.tokens, batch.positions, batch.targets, batch.weights)
            try:
                return compiled(flat, grad, *fields, batch.neg_weights, batch.mask)
            except Exception as e:  # noqa: BLE001
                fall_back(e)
        return gpt._loss_and_grad(batch, gpt._views)

    return run
