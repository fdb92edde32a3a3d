"""What training keeps beside the net: flat weights, gradient, optimizer, step and packer.

`FlatState` holds them for one run (buffers (numel,), no run axis: `model.TensorGPT`) or for a
stack of S runs ((S, numel), one run a row: `stack.Stack`). It knows its net only by what
`net.GPTNet` offers: `layout` (a `params.FlatLayout` of name: shape), `views(flat, grad, rows)`
and `loss_and_grad(batch, views, drop, z_loss)`; evaluation adds `forward` and `logits`, a
stack `embeddings` (the matrices looked up by row), and Muon `muon` (None: its matrices chosen
by name). Another net with those reuses everything here: a design file's
(`design_net.DesignNet`). Its optimizer it knows only by `optim.make_optimizer`,
`update(lrs, step)` and `state()`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig
from microgpt.init import Matrix
from microgpt.tensor.device import resolve
from microgpt.tensor.net import GPTNet
from microgpt.tensor.optim import make_optimizer
from microgpt.tensor.packing import Batch, Packer


class FlatState:
    """A net's training state: run s's weights are `flat[s]` (a solo model's, `flat` itself),
    its gradient `grad[s]`, its optimizer state `optimizer.state()[name][s]`; one step count."""

    def __init__(
        self,
        config: ModelConfig,
        weights: list[dict[str, Matrix] | None],
        train: TrainConfig,
        options: TensorOptions,
        lead: tuple[int, ...],
        net=None,
    ):
        """`lead`: () for one run, (S,) for S; run s starts from `weights[s]` (None: zeros, to be
        filled). `train`: what the runs share. `net`: the math (default: the built-in
        `GPTNet` of `config`)."""
        self.placement = p = resolve(options)
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        self.config, self.options, self.train_config = config, options, train
        self.net = net if net is not None else GPTNet(config, p)
        self.layout = self.net.layout
        numel = self.layout.numel
        self.flat = torch.zeros(*lead, numel, device=p.device, dtype=p.master_dtype)
        for w, flat in zip(weights, self.flat.view(-1, numel)):
            if w is not None:
                self.layout.from_lists(w, flat, "the initial weights")
        self._allocate()
        self.packer = Packer(config.block_size, p.device, p.compute_dtype, p.loss_dtype)
        self.step = 0  # optimizer updates done so far
        self.per_token = train.loss_average == "token"  # the training loss's average
        # dropout, in the training forward only (evaluation never drops): a generator re-seeded
        # every step from (seed, step), so that a resumed run draws the same masks
        self.dropout = train.dropout
        self.dropout_rng = None  # set by the subclass when dropout > 0

    def _allocate(self) -> None:
        """The gradient, the optimizer, the compute copy and the views, for `self.flat` as it is."""
        p = self.placement
        # the gradient, and one spare slot where a data-parallel step (`parallel.py`) puts its
        # loss, so that one all-reduce carries both
        like = {"device": p.device, "dtype": p.master_dtype}
        self.grad_and_loss = torch.zeros(self.flat.numel() + 1, **like)
        self.grad = self.grad_and_loss[:-1].view(self.flat.shape)
        self.optimizer = make_optimizer(
            self.layout, self.flat, self.grad, self.train_config, self.net.muon
        )
        self._compute_flat = self.flat
        if p.compute_dtype != p.master_dtype:  # bfloat16: a compute copy, refreshed every step
            self._compute_flat = torch.empty_like(self.flat, dtype=p.compute_dtype)
        self.views = self.net.views(self._compute_flat, self.grad, self._embedding_rows())

    def _embedding_rows(self):
        """How the views look up embedding rows: None, directly (a solo model)."""
        return None

    def _refresh_compute_weights(self) -> None:
        if self._compute_flat is not self.flat:
            self._compute_flat.copy_(self.flat)

    def _loss_and_grad(self, batch: Batch) -> Tensor:
        """The training loss on `batch` (the compute weights refreshed, dropout seeded); its
        gradient is left in `self.grad`.

        No tensor here requires grad, so no autograd graph is built; `no_grad` would only add
        overhead."""
        drop = (self.dropout, self.dropout_rng)
        return self.net.loss_and_grad(batch, self.views, drop, self.train_config.z_loss)

    def update(self, lrs: list[float]) -> None:
        """One optimizer update of every run from the gradient in `self.grad`, run s at
        learning rate `lrs[s]` (a solo model: a list of one)."""
        self.step += 1
        self.optimizer.update(lrs, self.step)
