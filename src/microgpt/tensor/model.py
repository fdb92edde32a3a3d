"""One run in tensor mode: the training interface both modes share (`modes.GPT`), evaluation,
diagnostics and checkpoints, around the net's math (`net.py`) and its flat state (`state.py`).

A stack of runs trained as one computation is `stack.Stack`; what it does for one of its runs
alone (evaluation, sampling, checkpoints) it does on that run's copy as a `TensorGPT`.

Determinism: on the CPU two runs with the same options give bit-identical results. On CUDA the
embedding gradients are summed with atomic adds (`index_add_`), so runs can differ in the last
bits.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig
from microgpt.init import Matrix
from microgpt.tensor.net import Activations
from microgpt.tensor.ops import cross_entropy, max_attention_logit
from microgpt.tensor.packing import Batch
from microgpt.tensor.state import FlatState

EVAL_CHUNK = 1024  # documents per forward pass in eval_loss
EVAL_POSITIONS = 2**15  # eval_token_loss: up to this many documents x block_size per pass
PROBES_KEPT = 512  # diagnostics: the packed batches of this many lists of documents kept


class TensorGPT(FlatState):
    """One run's weights in flat tensors, with the training interface both modes share."""

    mode = "tensor"

    def __init__(
        self,
        config: ModelConfig,
        weights: dict[str, Matrix] | None,
        train: TrainConfig,
        options: TensorOptions,
        net=None,
    ):
        """A model from its initial `weights` (None: zeros, to be filled) and `train`; `net`:
        the math (default: the built-in `net.GPTNet` of `config`)."""
        super().__init__(config, [weights], train, options, (), net)
        if self.dropout > 0:
            self.dropout_rng = torch.Generator(device=self.placement.device)
        self.dropout_stream = 0  # and the rank, in a data-parallel run (0 in one process)
        self._compiled = _compile_step(self) if options.compile else None
        self._probes: dict[int, tuple] = {}  # `diagnostics`' batches: id -> (documents, batch)

    # the interface the training loop uses ---------------------------------------------------------

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        loss = self.compute_grad(docs)
        self.update([lr])
        return loss.item()

    def compute_grad(self, docs: list[list[int]], divisor: int | None = None) -> Tensor:
        """The loss on `docs` (a (1, 1) tensor), leaving its gradient in `self.grad`: the mean
        over documents of each one's mean loss (or with --loss-average token over all their
        predicted tokens), or with `divisor` the sum over `divisor` (a data-parallel rank's
        share of a larger batch: `divisor` is then `self.packer.divisor` of the whole batch)."""
        batch = self.packer.pack(docs, divisor, self.per_token)
        self._refresh_compute_weights()
        if self.dropout_rng is not None:
            seed = dropout_seed(self.train_config.seed, self.step, self.dropout_stream)
            self.dropout_rng.manual_seed(seed)
        if self._compiled is not None:
            return self._compiled(self._compute_flat, self.grad, batch)
        return self._loss_and_grad(batch)

    @torch.no_grad()
    def eval_loss(self, docs: list[list[int]], divisor: int | None = None) -> float:
        """See `GPT.eval_loss`; with `divisor`, the sum of the documents' mean losses over
        `divisor` (as `compute_grad`)."""
        self._refresh_compute_weights()
        net, v, total = self.net, self.views, 0.0
        for start in range(0, len(docs), EVAL_CHUNK):
            batch = self.packer.pack(docs[start : start + EVAL_CHUNK], divisor or len(docs))
            logits = net.logits(net.forward(batch, v), v)
            total += cross_entropy(logits, batch.targets, batch.neg_weights).item()
        return total

    @torch.no_grad()
    def eval_token_loss(self, docs: list[list[int]]) -> tuple[float, int]:
        self._refresh_compute_weights()
        net, v, total = self.net, self.views, 0.0
        chunk = max(1, EVAL_POSITIONS // self.config.block_size)
        for start in range(0, len(docs), chunk):
            batch = self.packer.pack(docs[start : start + chunk], divisor=1)
            logits = net.logits(net.forward(batch, v), v)
            logp = torch.log_softmax(logits, dim=-1).gather(1, batch.targets)  # (N, 1)
            real = batch.weights > 0  # padding weighs 0
            total -= torch.where(real, logp, 0).sum(dtype=torch.float64).item()
        return total, self.packer.divisor(docs, per_token=True)

    @torch.no_grad()
    def diagnostics(self, docs: list[list[int]]) -> tuple[float | None, float, float]:
        """The instability diagnostics of Wortsman et al. 2023 on `docs` (one forward pass, no
        dropout, no update): the largest attention logit q·k / sqrt(D) before the softmax, over
        every layer, head and real query position and the keys it may see (None when the net
        records no attention: a design file whose forward calls no attention block); and the
        output logits' mean and max over every real position and the vocabulary (the logits the
        loss sees: soft-capped with --logit-softcap, so their max stays below the cap)."""
        self._refresh_compute_weights()
        batch = self._probes.get(id(docs), (None, None))[1]
        if batch is None or self._probes[id(docs)][0] is not docs:
            batch = self.packer.pack(docs)
            if len(self._probes) >= PROBES_KEPT:
                self._probes.clear()
            self._probes[id(docs)] = (docs, batch)  # a study probes the same documents again
        acts = Activations()  # given, so that the forward keeps q and k
        x = self.net.forward(batch, self.views, acts)
        real = batch.weights.view(-1) > 0  # (N,) padding weighs 0
        largest = max(
            (max_attention_logit(a.q, a.k, batch.mask, real).item() for a in acts.attention),
            default=None,
        )
        logits = self.net.logits(x, self.views)[real]  # (real N, V)
        return largest, logits.mean().item(), logits.max().item()

    @torch.no_grad()
    def logits(self, tokens: list[int]) -> list[float]:
        """Next-token logits after the context `tokens` (at most block_size of them)."""
        if not 1 <= len(tokens) <= self.config.block_size:
            raise ValueError(f"context of {len(tokens)} tokens: give 1 to block_size of them")
        self._refresh_compute_weights()
        batch = self.packer.pack([[*tokens, 0]])  # the last token's target is never used
        x = self.net.forward(batch, self.views)
        return self.net.logits(x[-1:], self.views)[0].tolist()

    # state, for checkpoints -----------------------------------------------------------------------

    def export_state(self) -> dict[str, dict[str, Matrix]]:
        """{"weights": ..., and the optimizer's state by name ("adam_m", "adam_v"; with Muon
        "momentum" of Muon's matrices alone, as `optimizer.saved_matrices` says)}."""
        out = {"weights": self.layout.to_lists(self.flat)}
        for key, buffer in self.optimizer.state().items():
            lists = self.layout.to_lists(buffer)
            names = self.optimizer.saved_matrices(key)
            out[key] = lists if names is None else {name: lists[name] for name in names}
        return out

    def load_state(self, state: dict[str, dict[str, Matrix]], step: int) -> None:
        self.layout.from_lists(state["weights"], self.flat, "the checkpoint's weights")
        for key, buffer in self.optimizer.state().items():
            matrices = state[key]
            if self.optimizer.saved_matrices(key) is not None:  # the others' state is 0
                zeros = {
                    n: [[0.0] * c for _ in range(r)] for n, (r, c) in self.layout.shapes.items()
                }
                matrices = zeros | matrices
            self.layout.from_lists(matrices, buffer, f"the checkpoint's {key}")
        self.step = step


def dropout_seed(seed: int, step: int, stream: int = 0) -> int:
    """The dropout generator's seed for 0-based step `step` of a run seeded `seed`: a plain
    integer combination (no hash), modulo 2**32 because torch's CPU generator ignores the higher
    bits; distinct for the 2**32 steps of one seed, and spread apart between seeds. `stream` is
    a data-parallel rank (its masks differ from the others'); rank 0 draws one process's masks."""
    return (seed * 0x9E3779B1 + step + stream * 0x85EBCA77) % 2**32


def _compile_step(gpt: TensorGPT):
    """The net's loss and gradient compiled with torch.compile, as a function of plain tensors
    (flat weights, flat gradient, batch), so that guards stay few and no views or dicts cross
    the graph's boundary. If compiling or a compiled call fails, it warns once on stderr and
    runs eagerly from then on. Off by default: at these sizes on a CPU it does not pay off
    (docs/performance.md)."""
    net = gpt.net

    def step(flat: Tensor, grad: Tensor, *fields: Tensor) -> Tensor:
        tokens, positions, targets, weights, neg_weights, mask = fields
        R, W = mask.shape[0], mask.shape[-1]
        batch = Batch(R, W, tokens, positions, targets, weights, neg_weights, mask)
        drop = (gpt.dropout, gpt.dropout_rng)
        return net.loss_and_grad(batch, net.views(flat, grad), drop, gpt.train_config.z_loss)

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
        return gpt._loss_and_grad(batch)

    return run
