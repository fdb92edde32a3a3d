"""Data parallelism: one `TensorGPT` per rank, each step's batch shared out over the ranks.

Every rank holds the whole model, drawn from the same seed, and applies the same Adam update to
the same gradient, so the ranks stay bit-identical. A step: rank r takes its contiguous share of
the step's B documents (`World.share`), packs them with divisor B, so that the shares' losses
and gradients *sum* to the one-process loss and gradient (the mean over the B documents of each
one's mean per-token loss; with --loss-average token the divisor is the batch's number of
predicted tokens, and the sum their mean); one all-reduce of the flat gradient buffer, the loss
in its spare slot, gives every rank that sum; then Adam, whose gradient clipping therefore sees
the global norm. A rank whose share is empty (B < ranks) contributes zeros.

In float64 this is one process's arithmetic up to the order of a few sums (measured: per-step
losses within 1.2e-15 relative); in float32, within its rounding of those sums (6e-7). Dropout
masks are drawn per rank (seeded from seed, step and rank), so with dropout a run differs from
one process's.
"""

from __future__ import annotations

import hashlib

import torch

from microgpt.distributed import Group, tensor_bytes
from microgpt.init import Matrix
from microgpt.tensor.model import TensorGPT


class DataParallelGPT:
    """The `GPT` interface over a `TensorGPT` on one rank of `group`."""

    mode = "tensor"

    def __init__(self, gpt: TensorGPT, group: Group):
        self.gpt, self.group, self.world = gpt, group, group.world
        self.config = gpt.config
        gpt.dropout_stream = self.world.rank

    @property
    def step(self) -> int:
        return self.gpt.step

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        gpt, buffer = self.gpt, self.gpt.grad_and_loss
        mine = self.world.share(docs)
        if mine:
            divisor = gpt.packer.divisor(docs, gpt.per_token)  # of the whole batch
            buffer[-1:].copy_(gpt.compute_grad(mine, divisor).view(1))
        else:
            buffer.zero_()
        self.group.sum_(buffer)
        gpt.update([lr])
        return buffer[-1].item()

    def eval_loss(self, docs: list[list[int]]) -> float:
        mine = self.world.share(docs)
        part = self.gpt.eval_loss(mine, divisor=len(docs)) if mine else 0.0
        return self._sum(part)[0]

    def eval_token_loss(self, docs: list[list[int]]) -> tuple[float, int]:
        mine = self.world.share(docs)
        total, tokens = self.gpt.eval_token_loss(mine) if mine else (0.0, 0)
        total, tokens = self._sum(total, tokens)
        return total, int(tokens)

    def logits(self, tokens: list[int]) -> list[float]:
        return self.gpt.logits(tokens)

    def export_state(self) -> dict[str, dict[str, Matrix]]:
        return self.gpt.export_state()

    def load_state(self, state: dict[str, dict[str, Matrix]], step: int) -> None:
        self.gpt.load_state(state, step)

    def weights_digest(self) -> str:
        """A hash of this rank's weights and optimizer state: every rank's must be the same."""
        h = hashlib.sha256()
        for t in (self.gpt.flat, *self.gpt.optimizer.state().values()):
            h.update(tensor_bytes(t))
        return h.hexdigest()[:16]

    def check_in_sync(self) -> None:
        """Raise if the ranks' weights have drifted apart (they never should)."""
        digests = self.group.gather_json(self.weights_digest())
        ok = self.group.broadcast_json(digests is None or len(set(digests)) == 1)
        if not ok:
            raise RuntimeError("the ranks' weights differ: data-parallel steps went out of step")

    def _sum(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.group.device)
        self.group.sum_(t)
        return t.tolist()
