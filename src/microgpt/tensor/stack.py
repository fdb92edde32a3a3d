"""Many runs at once: S runs of one shape trained as one computation.

The runs share the design, sizes, batch size and optimizer settings (`config.STACK_PER_RUN`
names what may differ: seed, learning rate, min_lr); each has its own initial weights, data,
dropout masks and learning rate. The net's math is written over the run axis (`net.py`), so a
stack is the same forward and backward on (S, ...) tensors, with each matmul a batched one.
Runs never mix: each reads its own documents (`Packer.pack_runs`), clips its own gradient and
steps at its own rate, so every run of a stack is its solo run: in float64 each step's loss
agrees to 1e-12 and the weights to 1e-10 (`tests/test_stack.py`: every step from the same
state, in every design; 200 free-running steps in every design but one whose float64 run is
chaotic, docs/ablate.md).
In float32 the last digits differ, as batched and single matmuls round differently, and a
stack's Adam is torch's fused kernel (`optim.FlatAdam`), which rounds its moment and bias
corrections in another order than the solo model's.

Everything a run does alone it does as a solo model: evaluation and diagnostics on
`Stack.eval_model(s)` (one solo model per stack, loaded with run s's weights), sampling and
checkpoints on its copy, `Stack.run_model(s)`; its held-out figures are then exactly those of
the solo model with its weights. A packed forward over the stack would give the same figures in
float64 (tried: bit for bit) but not in float32 (within 3e-9 relative), and a study's held-out
figures must not depend on how its runs were stacked; nor would it save much: a held-out pass
over many documents is arithmetic, not kernel launches (docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig, stack_shared
from microgpt.init import Matrix
from microgpt.tensor.model import TensorGPT, dropout_seed
from microgpt.tensor.packing import Batch
from microgpt.tensor.params import FlatLayout
from microgpt.tensor.state import FlatState


class Stack(FlatState):
    """S runs as one model: run s starts from `weights[s]` and trains with `trains[s]`, which
    may differ from the others' in `config.STACK_PER_RUN` only. Buffers are (S, numel), run s
    a row."""

    def __init__(
        self,
        config: ModelConfig,
        weights: list[dict[str, Matrix]],
        trains: list[TrainConfig],
        options: TensorOptions,
        net=None,
    ):
        if len(weights) != len(trains) or not weights:
            raise ValueError("give one set of weights and one TrainConfig per run")
        check_stackable(trains, options)
        self.train_configs = list(trains)
        super().__init__(config, list(weights), trains[0], options, (len(trains),), net)
        self._eval_model: TensorGPT | None = None  # `eval_model`'s, made when first asked
        if self.dropout > 0:  # one generator per run, each drawing its run's masks
            self.dropout_rng = RunGenerators(len(trains), self.placement.device)

    @property
    def runs(self) -> int:
        """S, the runs in the stack now."""
        return self.flat.shape[0]

    def _embedding_rows(self) -> StackRows:
        return StackRows(self.layout, self._compute_flat, self.grad, self.net.embeddings)

    def stack_step(self, docs: list[list[list[int]]], lrs: list[float]) -> list[float]:
        """One optimizer update of every run: run s on its documents `docs[s]` at its learning
        rate `lrs[s]`; returns each run's loss before the update (as `TensorGPT.train_step`)."""
        batch = self.packer.pack_runs(docs, self.per_token)
        self._refresh_compute_weights()
        if self.dropout_rng is not None:
            seeds = [dropout_seed(tc.seed, self.step) for tc in self.train_configs]
            self.dropout_rng.start(seeds, batch)
        loss = self._loss_and_grad(batch)
        self.update(lrs)
        return loss.view(-1).tolist()

    def run_model(self, s: int) -> TensorGPT:
        """Run s of the stack as a solo model (a copy: weights, optimizer state and step), for
        everything a run does alone: evaluation, diagnostics, sampling, checkpoints."""
        solo = TensorGPT(self.config, None, self.train_configs[s], self.options, self.net)
        solo.flat.copy_(self.flat[s])
        mine = self.optimizer.state()
        for name, buffer in solo.optimizer.state().items():
            buffer.copy_(mine[name][s])
        solo.step = self.step
        return solo

    def eval_model(self, s: int) -> TensorGPT:
        """Run s's weights and step in a solo model, for evaluation and diagnostics: the same
        model each call, loaded anew (so valid until the next call), without the optimizer's
        state (`run_model` copies that too). Its figures are the solo model's with those
        weights, bit for bit."""
        if self._eval_model is None:
            self._eval_model = TensorGPT(self.config, None, self.train_configs[s], self.options,
                                         self.net)  # fmt: skip
        model = self._eval_model
        model.flat.copy_(self.flat[s])
        model.train_config, model.step = self.train_configs[s], self.step
        return model

    def keep_runs(self, keep: list[int]) -> None:
        """Go on with the runs `keep` (indices into the current stack, in order) alone: e.g.
        without one that diverged, so that it costs nothing from then on."""
        index = torch.tensor(keep, dtype=torch.long, device=self.flat.device)
        kept = {name: buffer[index] for name, buffer in self.optimizer.state().items()}
        self.flat = self.flat[index]
        self.train_configs = [self.train_configs[i] for i in keep]
        self._allocate()
        for name, buffer in self.optimizer.state().items():
            buffer.copy_(kept[name])
        if self.dropout_rng is not None:
            self.dropout_rng = RunGenerators(len(keep), self.placement.device)


def check_stackable(trains: list[TrainConfig], options: TensorOptions) -> None:
    """Runs share one stack if their training differs in `config.STACK_PER_RUN` only: the seed
    and the schedule (each run's own function of its TrainConfig, a column of the update)."""
    shared = [stack_shared(tc) for tc in trains]
    if any(d != shared[0] for d in shared):
        raise ValueError("the runs of a stack may differ in seed and learning-rate schedule only")
    if options.compile:
        raise ValueError("a stack runs eagerly: torch.compile is for a solo model")


class StackRows:
    """A stack's embedding lookups. Each embedding matrix `name` of run s is rows of the whole
    buffer seen as (S * numel / C, C), C its columns: row `base[name][s] + i` is row i of run
    s's matrix, so one index op looks up every run's rows at once."""

    def __init__(self, layout: FlatLayout, flat: Tensor, grad: Tensor, names: tuple[str, ...]):
        S, numel = flat.shape
        self.rows: dict[str, Tensor] = {}  # name -> the weights as rows of its width
        self.grad_rows: dict[str, Tensor] = {}  # the same of the gradient
        self.base: dict[str, Tensor] = {}  # name -> (S, 1) each run's first row of the matrix
        self._last: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (index, its rows)
        for name in names:
            if name not in layout.shapes:
                continue
            C = layout.shapes[name][1]
            if numel % C or layout.offsets[name] % C:
                raise ValueError(f"{name} does not sit on a row of {C} in the flat buffer")
            self.rows[name], self.grad_rows[name] = flat.view(-1, C), grad.view(-1, C)
            runs = torch.arange(S, device=flat.device)[:, None] * (numel // C)
            self.base[name] = runs + layout.offsets[name] // C

    def lookup(self, name: str, index: Tensor) -> Tensor:
        """Rows `index` (S, N) of each run's matrix `name`, (S, N, C)."""
        return torch.nn.functional.embedding(self._rows_of(name, index), self.rows[name])

    def add(self, name: str, index: Tensor, dx: Tensor) -> None:
        """Add dx (S, N, C) into the gradient rows `index` (S, N) of each run's `name`."""
        rows = self._rows_of(name, index).view(-1)
        self.grad_rows[name].index_add_(0, rows, dx.view(-1, dx.shape[-1]))

    def _rows_of(self, name: str, index: Tensor) -> Tensor:
        """`index` + each run's base: kept from the lookup for the backward's add, and from
        step to step while the index is the same tensor (a batch-1 stack's positions)."""
        last = self._last.get(name)
        if last is None or last[0] is not index:
            last = self._last[name] = (index, index + self.base[name])
        return last[1]


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
