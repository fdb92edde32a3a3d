"""A design file's model: its forward through torch autograd, into the flat buffers.

`DesignGPT` is `TensorGPT` (`model.py`: flat weights, flat Adam, packer, stacks, evaluation,
checkpoints) with one thing changed: the loss and gradient of a step come from the design's
forward (`microgpt.design`), written with `blocks` and torch ops, and autograd's backward. For
the time being it is a subclass of `TensorGPT`; it is meant to move onto the seam between the
net (forward and backward) and the state (weights, optimizer, stack) when that lands.

How the gradient gets into the flat buffer without a copy: every weight the forward sees is a
view of the flat weight buffer made a leaf that requires grad, once (`_allocate`), and its
`.grad` is set to the matching view of the flat gradient buffer. The blocks add such a leaf's
gradient into its `.grad` themselves (`blocks.py`), and autograd's own accumulation into a leaf
whose `.grad` exists adds in place (`grad += new`) for any other use of it, so after the
backward the flat gradient holds every weight's gradient, ready for `FlatAdam`;
`tests/test_design.py` checks that the `.grad` tensors are still those views after a step, and
hold autograd's gradient. Under bfloat16 compute the weights are bfloat16 and the gradient
float32, so there no `.grad` is preset, and each leaf's gradient is added into the float32
buffer after the backward.

The head's loss is the hand-written one (`ops.cross_entropy_with_grad`, the loss and
d loss / d logits at once); autograd starts from d loss / d logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import MappingProxyType

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig
from microgpt.errors import UserError
from microgpt.init import Matrix
from microgpt.tensor.blocks import DesignBatch, design_batch
from microgpt.tensor.model import Activations, TensorGPT, Views, make_views
from microgpt.tensor.ops import RMS_EPS, cross_entropy_with_grad, max_attention_logit
from microgpt.tensor.optim import FlatAdam
from microgpt.tensor.packing import Batch
from microgpt.tensor.params import FlatLayout

Forward = Callable[[dict, DesignBatch], Tensor]  # (weights, batch) -> logits (*S, N, V)


def backward(output: Tensor, grad: Tensor) -> None:
    """`output.backward(grad)`, with `grad` shaped as `output`: straight into autograd's engine
    where this torch has the entry point that `Tensor.backward` calls after checking its
    arguments (checks that are a visible share of a batch-1 step, and that `grad` passes by
    construction)."""
    if _engine_run_backward is None:
        output.backward(grad)
    else:
        _engine_run_backward(
            (output,), (grad,), False, False, (), allow_unreachable=True, accumulate_grad=True
        )


try:
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # another torch: the public route
    _engine_run_backward = None


class DesignLayout(FlatLayout):
    """A flat layout of the given matrices, in the given order (a design's weights)."""

    def __init__(self, shapes: dict[str, tuple[int, int]]):
        self.shapes = dict(shapes)
        self.offsets = {}
        offset = 0
        for name, (rows, cols) in self.shapes.items():
            self.offsets[name] = offset
            offset += rows * cols
        self.numel = offset
        self.n_layer = 0  # no fused attn_wqkv views: a design's q, k and v are its own


class DesignGPT(TensorGPT):
    """`TensorGPT` whose step runs `forward` (weights, batch) -> logits through autograd, over
    the weights `shapes` (name: (rows, cols), the flat layout's order)."""

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, Matrix] | list[dict[str, Matrix]] | None,
        train: TrainConfig | list[TrainConfig],
        options: TensorOptions,
        forward: Forward,
        shapes: dict[str, tuple[int, int]],
    ):
        if options.compile:
            raise UserError("--compile is not available for a design file: leave it off")
        self.forward, self.design_layout = forward, DesignLayout(shapes)
        stacked = isinstance(train, list)
        super().__init__(config, [None] * len(train) if stacked else None, train, options)
        self.layout = self.design_layout
        p, numel = self.placement, self.layout.numel
        self.flat = torch.zeros(*self.lead, numel, device=p.device, dtype=p.master_dtype)
        for w, flat in zip(weights if stacked else [weights], self.flat.view(-1, numel)):
            if w is not None:
                self.layout.from_lists(w, flat, "the initial weights")
        self._allocate()

    @classmethod
    def stack(  # type: ignore[override]
        cls,
        config: ModelConfig,
        weights: list[dict[str, Matrix]],
        trains: list[TrainConfig],
        options: TensorOptions,
        forward: Forward,
        shapes: dict[str, tuple[int, int]],
    ) -> DesignGPT:
        if len(weights) != len(trains) or not weights:
            raise ValueError("give one set of weights and one TrainConfig per run")
        return cls(config, list(weights), list(trains), options, forward, shapes)

    def _allocate(self) -> None:
        """The gradient, Adam, the compute copy and the views (as `TensorGPT._allocate`, less
        its embedding rows, which need every matrix a multiple of C wide), then the weights
        as leaves: views of the compute weights whose `.grad` is the matching view of the
        flat gradient (see the module's docstring)."""
        if self.layout is not self.design_layout:  # the base's constructor, before ours
            super()._allocate()
            return
        p = self.placement
        like = {"device": p.device, "dtype": p.master_dtype}
        self.grad_and_loss = torch.zeros(self.flat.numel() + 1, **like)
        self.grad = self.grad_and_loss[:-1].view(self.flat.shape)
        self.adam = FlatAdam(self.flat, self.grad, self.train_config)
        self._compute_flat = self.flat
        if p.compute_dtype != p.master_dtype:  # bfloat16: a compute copy, refreshed every step
            self._compute_flat = torch.empty_like(self.flat, dtype=p.compute_dtype)
        eps = torch.tensor(RMS_EPS, dtype=p.compute_dtype, device=p.device)
        self._views = make_views(self.layout, self._compute_flat, self.grad, eps)
        weights = self.layout.views(self._compute_flat)
        grads = self.layout.views(self.grad)
        self._grad_views = grads
        self._in_place = self._compute_flat.dtype == self.grad.dtype
        for name, leaf in weights.items():
            leaf.requires_grad_()
            if self._in_place:
                leaf.grad = grads[name]
        # a stack's weight (S, rows, cols) is a view strided by the run's whole buffer, and its
        # gradient a view of the same layout: autograd warns once that such a pair is not laid
        # out as it prefers (its accumulation is in place all the same)
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient")
        self._leaves = weights
        self._w = MappingProxyType(weights)  # what the forward gets: read-only, made once

    def _loss_and_grad(self, batch: Batch, v: Views) -> Tensor:
        """The loss on `batch`, (*S, 1, 1); its gradient is left in `v.grad`."""
        v.grad.zero_()
        drop = (self.dropout, self._dropout_rng) if self.dropout > 0 else (0.0, None)
        logits = self.forward(self._w, design_batch(batch, *drop))
        loss, dlogits = cross_entropy_with_grad(
            logits.detach().to(self.placement.loss_dtype),
            batch.targets,
            batch.weights,
            batch.neg_weights,
            self.train_config.z_loss,
        )
        backward(logits, dlogits.to(logits.dtype))
        if not self._in_place:  # bfloat16: add each bfloat16 gradient into the float32 one
            for name, leaf in self._leaves.items():
                if leaf.grad is not None:
                    self._grad_views[name].add_(leaf.grad)
                    leaf.grad = None
        return loss

    # evaluation: the base's, with the design's logits --------------------------------------------

    def _forward(self, batch: Batch, v: Views, acts: Activations | None) -> Tensor:
        """The design's logits (*S, N, V), without dropout (the base calls this to evaluate)."""
        return self.forward(self._w, design_batch(batch))

    def _logits(self, x: Tensor, v: Views) -> Tensor:
        return x.to(self.placement.loss_dtype)  # `_forward` gave logits already

    @torch.no_grad()
    def diagnostics(self, docs: list[list[int]]) -> tuple[float, float, float]:
        """As `TensorGPT.diagnostics`; the largest attention logit over every `blocks.attention`
        the forward called (NaN if none)."""
        self._refresh_compute_weights()
        batch = self.packer.pack(docs)
        log: list = []
        logits = self.forward(self._w, design_batch(batch, log=log))
        real = batch.weights.view(-1) > 0
        largest = max(
            (max_attention_logit(q, k, batch.mask, real).item() for q, k in log),
            default=float("nan"),
        )
        logits = logits.to(self.placement.loss_dtype)[real]
        return largest, logits.mean().item(), logits.max().item()

    def run_model(self, s: int) -> DesignGPT:
        solo = DesignGPT(
            self.config,
            None,
            self.train_configs[s],
            self.options,
            self.forward,
            self.layout.shapes,
        )
        for mine, its in ((self.flat, solo.flat), (self.adam.m, solo.adam.m)):
            its.copy_(mine[s])
        solo.adam.v.copy_(self.adam.v[s])
        solo.step = self.step
        return solo
