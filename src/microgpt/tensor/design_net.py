"""A design file's net: its forward through torch autograd, into the flat buffers.

`DesignNet` is a net as `state.FlatState` takes one (`net.GPTNet` is the built-in one): a
`layout` of the weights the design uses, `views` of the flat weight and gradient buffers, the
training step's `loss_and_grad`, and `forward` and `logits` for evaluation. So a design trains
as one run (`model.TensorGPT(..., net=DesignNet(...))`), in a stack (`stack.Stack(...,
net=...)`), data-parallel and with either optimizer, with everything those give the built-in
net: evaluation, diagnostics, checkpoints, `run_model`, `keep_runs`. Its logits come from the
design's forward (`microgpt.design`), written with `blocks` and torch ops, and its gradient from
autograd's backward.

How the gradient gets into the flat buffer without a copy: every weight the forward sees is a
view of the flat weight buffer made a leaf that requires grad, once per `views`, and its `.grad`
is set to the matching view of the flat gradient buffer. The blocks add such a leaf's gradient
into its `.grad` themselves (`blocks.py`), and autograd's own accumulation into a leaf whose
`.grad` exists adds in place (`grad += new`) for any other use of it, so after the backward the
flat gradient holds every weight's gradient, ready for the optimizer; `tests/test_design.py`
checks that the `.grad` tensors are still those views after a step, and hold autograd's
gradient. Under bfloat16 compute the weights are bfloat16 and the gradient float32, so there no
`.grad` is preset, and each leaf's gradient is added into the float32 buffer after the backward.

The head's loss is the hand-written one (`ops.cross_entropy_with_grad`, the loss and
d loss / d logits at once); autograd starts from d loss / d logits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor

from microgpt.config import ModelConfig
from microgpt.design import DesignError, DesignFile, describe
from microgpt.errors import UserError
from microgpt.tensor.blocks import DesignBatch, design_batch
from microgpt.tensor.device import Placement
from microgpt.tensor.net import NO_DROPOUT, Activations
from microgpt.tensor.ops import cross_entropy_with_grad, softcap, softcap_backward
from microgpt.tensor.packing import Batch
from microgpt.tensor.params import FlatLayout

Forward = Callable[[Mapping, DesignBatch], Tensor]  # (weights, batch) -> logits (*S, N, V)


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


@dataclass(frozen=True)
class DesignViews:
    """What a design's step reads and writes: the weights as leaves, by name, and the flat
    gradient they accumulate into (see the module's docstring)."""

    w: Mapping[str, Tensor]  # name -> (*S, rows, cols) leaf, a view of the compute weights
    g: dict[str, Tensor]  # name -> the matching view of the flat gradient
    grad: Tensor  # the flat gradient, (*S, numel)
    in_place: bool  # the leaves' .grad are the views `g` (False under bfloat16 compute)
    lead: tuple[int, ...]  # () for a solo model, (S,) for a stack


@dataclass(frozen=True)
class AttentionLog:
    """One attention's queries and keys as it used them (H * S * R, W, D), for the diagnostics
    (`model.TensorGPT.diagnostics` reads `q` and `k` of each entry of `Activations.attention`)."""

    q: Tensor
    k: Tensor


class DesignNet:
    """A design's forward (weights, batch) -> logits through autograd, over the weights
    `shapes` (name: (rows, cols), the flat layout's order), for `config` on `placement`.
    `muon`: which of the weights Muon trains, where the design says (`microgpt.muon`).
    `file`: the design file the forward comes from, named in the one-line error (a
    `design.DesignError`) that an exception in its forward or backward becomes."""

    embeddings = ()  # no rows looked up by the state: `blocks.embed` looks up a stack's own

    def __init__(
        self,
        config: ModelConfig,
        placement: Placement,
        forward: Forward,
        shapes: dict[str, tuple[int, int]],
        muon: dict[str, bool] | None = None,
        file: DesignFile | None = None,
    ):
        self.config, self.placement, self.file = config, placement, file
        self.design_forward = forward
        self.layout = FlatLayout(shapes)  # no fused views: a design's q, k and v are its own
        self.muon = muon
        # --logit-softcap caps whatever logits a design gives, as the built-in net's, wherever
        # they are used (losses, z-loss, diagnostics, sampling): a head's setting, as z-loss is
        self.softcap = config.logit_softcap

    def views(self, flat: Tensor, grad: Tensor, rows=None) -> DesignViews:
        """The weights of `flat` (compute dtype) as leaves whose `.grad` are the views of
        `grad`, (*S, numel) each."""
        weights = self.layout.views(flat)
        grads = self.layout.views(grad)
        in_place = flat.dtype == grad.dtype
        for name, leaf in weights.items():
            leaf.requires_grad_()
            if in_place:
                leaf.grad = grads[name]
        # a stack's weight (S, rows, cols) is a view strided by the run's whole buffer, and its
        # gradient a view of the same layout: autograd warns once that such a pair is not laid
        # out as it prefers (its accumulation is in place all the same)
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient")
        lead = tuple(flat.shape[:-1])
        return DesignViews(MappingProxyType(weights), grads, grad, in_place, lead)

    def forward(
        self,
        batch: Batch,
        v: DesignViews,
        acts: Activations | None = None,
        drop: tuple = NO_DROPOUT,
    ) -> Tensor:
        """The design's logits (*S, N, V) (they stand in for the built-in net's final hidden
        state: `logits` passes them on). With `acts`, every attention the forward ran through
        the blocks is logged in `acts.attention` (`AttentionLog`), for the diagnostics."""
        log = [] if acts is not None else None
        try:
            logits = self.design_forward(v.w, design_batch(batch, *drop, log=log))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code: any error is theirs to fix
            raise self._failed("its forward", e) from None
        self._check(logits, batch)
        if acts is not None:
            acts.attention.extend(AttentionLog(q, k) for q, k in log)
        return logits

    def logits(self, x: Tensor, v: DesignViews, acts: Activations | None = None) -> Tensor:
        """`forward` gave logits already: in the loss dtype, soft-capped with --logit-softcap."""
        logits = x.to(self.placement.loss_dtype)
        return softcap(logits, self.softcap)[0] if self.softcap else logits

    def loss_and_grad(
        self, batch: Batch, v: DesignViews, drop: tuple = NO_DROPOUT, z_loss: float = 0.0
    ) -> Tensor:
        """The training loss on `batch`, (*S, 1, 1); its gradient is left in `v.grad`."""
        v.grad.zero_()
        logits = self.forward(batch, v, None, drop if drop[0] > 0 else NO_DROPOUT)
        z = logits.detach().to(self.placement.loss_dtype)
        t = None  # tanh(z / cap), with --logit-softcap
        if self.softcap:
            z, t = softcap(z, self.softcap)
        loss, dlogits = cross_entropy_with_grad(
            z, batch.targets, batch.weights, batch.neg_weights, z_loss
        )
        if t is not None:  # back through the soft-cap, in the loss dtype, as the built-in net
            dlogits = softcap_backward(dlogits, t)
        try:
            backward(logits, dlogits.to(logits.dtype))
        except Exception as e:  # noqa: BLE001 - an error in the backward of the user's ops
            raise self._failed("the backward of its forward", e) from None
        if not v.in_place:  # bfloat16: add each bfloat16 gradient into the float32 one
            for name, leaf in v.w.items():
                if leaf.grad is not None:
                    v.g[name].add_(leaf.grad)
                    leaf.grad = None
        return loss

    def _check(self, logits: Tensor, batch: Batch) -> None:
        """The logits' shape, every call: the checks (`design_check`) ran on other batches,
        and a wrong shape must be an error naming the design, not a broadcast."""
        expected = (*batch.tokens.shape, self.config.vocab_size)
        if isinstance(logits, Tensor) and logits.shape == expected:
            return
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise self._error(f"its forward returned logits of shape {got}, expected {expected}")

    def _failed(self, what: str, e: Exception) -> DesignError:
        where = self.file.module.__file__ if self.file is not None else ""
        return self._error(f"{what} failed: {describe(e, where)}")

    def _error(self, what: str) -> DesignError:
        name = f"design file {self.file.path}" if self.file is not None else "the design"
        return DesignError(f"{name}: {what}")
