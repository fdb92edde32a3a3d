"""Before a design file trains: which weights it uses, and whether it is honest.

`check` runs the file's forward in float64 on the CPU on a few documents, dropout off, and
fails with one line naming the file and what broke:

- the forward runs and returns logits of shape (N, V) (in a stack (S, N, V)), finite at the
  initial weights, with a finite gradient;
- two calls give the same logits, bit for bit;
- logits are causal: a document's logits at positions before a changed token are unchanged;
- documents packed in one batch do not see each other: each document's logits alone equal
  its logits packed with the others, within float64 rounding (the shapes differ);
- the runs of a stack do not mix: a stack's gradients, through the training path itself
  (`stack.Stack` and `model.TensorGPT` with the design's `design_net.DesignNet`), equal each
  run's own; and again with dropout on, when the runs train with dropout (`dropout`): a design
  that draws its masks from anything but the run's own generator (`blocks.dropout`) fails
  there.

Which weights a design uses is found by autograd: the gradient of the loss with respect to
every weight the file may use (`DesignFile.shapes`), `allow_unused`; a weight the loss does not
reach (a reference weight the design replaces) is neither trained nor counted. The forward is
then run once more with the used weights alone and must give the same logits.

The honesty checks run at the initial weights plus noise, so that a zero-initialised weight
(which silences its branch at initialisation) cannot hide a leak.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from microgpt.config import ModelConfig, TensorOptions, TrainConfig
from microgpt.design import DesignFile, DesignRun, Settings
from microgpt.errors import UserError
from microgpt.init import INIT_STD, Matrix
from microgpt.tensor.blocks import cross_entropy, design_batch
from microgpt.tensor.design_net import DesignNet
from microgpt.tensor.device import Placement, resolve
from microgpt.tensor.model import TensorGPT
from microgpt.tensor.packing import Batch, Packer, plan_rows
from microgpt.tensor.stack import Stack

ROUNDING = 1e-12  # logits that should be equal: max |difference| <= this x max |logit|
GRAD_ROUNDING = 1e-10  # a stack's gradients against each run's own, relative to the largest
NOISE_SEED = 0x5EED  # the honesty checks' perturbation of the weights
CPU64 = TensorOptions(device="cpu", dtype="float64", threads=None)


@dataclass(frozen=True)
class Checked:
    """A design file checked for one model: the weights it uses, in draw order."""

    design: DesignFile
    config: ModelConfig
    settings: Settings
    shapes: dict[str, tuple[int, int]]  # the weights the forward uses: name -> (rows, cols)
    unused: tuple[str, ...]  # the weights it may use but does not: dropped

    @property
    def num_params(self) -> int:
        return sum(r * c for r, c in self.shapes.values())

    @property
    def forward(self):
        """The file's forward for this model: (w, batch) -> logits, an exception in it (or in
        its backward) a one-line `DesignError` naming the file."""
        return self.design.bind(self.config, self.settings)

    @property
    def muon(self) -> dict[str, bool]:
        """The used weights whose optimizer group the file declares (`design.Weight.muon`)."""
        declared = self.design.declared_muon(self.config, self.settings)
        return {name: m for name, m in declared.items() if name in self.shapes}

    @property
    def run(self) -> DesignRun:
        """This design as a run elsewhere uses it: the file, its version, settings, weights."""
        return self.design.run(self.settings, tuple(self.shapes))

    def net(self, placement: Placement | TensorOptions) -> DesignNet:
        """The design's net on `placement` (or where `TensorOptions` place it)."""
        if isinstance(placement, TensorOptions):
            if placement.compile:
                raise UserError(
                    f"--compile is not available for design {self.design.name}: leave it off"
                )
            placement = resolve(placement)
        return DesignNet(self.config, placement, self.forward, self.shapes, self.muon,
                         self.design)  # fmt: skip

    def initial_weights(self, rng: random.Random, reference=None) -> dict[str, Matrix]:
        """The used weights' initial values (`DesignFile.initial_weights`)."""
        every = self.design.initial_weights(self.config, self.settings, rng, reference)
        return {name: every[name] for name in self.shapes}


def unchecked(run: DesignRun, config: ModelConfig, what: str = "the study") -> Checked:
    """`run`'s design for `config` as `check` found it (`run.used`), without checking it again:
    the file must be the version `run` names (a worker of a study, a checkpoint's design)."""
    design = run.load(what)
    settings = design.resolve(run.values())
    design.check_config(config)
    shapes = design.shapes(config, settings)
    missing = [n for n in run.used or () if n not in shapes]
    if run.used is None or missing:
        raise UserError(f"design {run.name}: its weights were not checked for this model")
    used = {n: shapes[n] for n in run.used}
    return Checked(design, config, settings, used, tuple(n for n in shapes if n not in used))


def prepared(run: DesignRun, config: ModelConfig, docs: Callable[[], list[list[int]]], dropout=0.0):
    """`run`'s design for `config`: checked on `docs()` (once in this process; with the runs'
    `dropout`), or as checked before when `run.used` says (`unchecked`)."""
    if run.used is not None:
        return unchecked(run, config)
    design = run.load()
    settings = design.resolve(run.values())
    return check_once(design, config, settings, docs(), dropout=dropout)


_CHECKED: dict[tuple, Checked] = {}  # check's results in this process: (file, version, ...)


def check_once(
    design: DesignFile, config: ModelConfig, settings: Settings, docs, seed=0, dropout=0.0
):
    """`check`, once per file version, settings, model, documents and dropout in this
    process."""
    key = (design.path, design.sha256, repr(settings), config, repr(docs), seed, dropout)
    if key not in _CHECKED:
        _CHECKED[key] = check(design, config, settings, docs, seed, dropout)
    return _CHECKED[key]


def check(
    design: DesignFile,
    config: ModelConfig,
    settings: Settings,
    docs: list[list[int]],
    seed: int = 0,
    dropout: float = 0.0,
) -> Checked:
    """Check `design` for `config` and `settings` on `docs` (encoded documents, at least two
    of at least three tokens each); the initial weights are drawn for `seed`. `dropout`: the
    probability its runs will train with (the runs-apart check is then made with it too)."""
    if len(docs) < 2 or min(len(d) for d in docs) < 3:
        raise ValueError("give at least two documents of at least three tokens")
    design.check_config(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these small float64 ops: more threads only wait for each other
    try:
        return _check(design, config, settings, docs, seed, dropout)
    finally:
        torch.set_num_threads(threads)


def _check(design, config, settings, docs, seed, dropout) -> Checked:
    run = _Runner(design, config, settings)
    shapes = design.shapes(config, settings)
    initial = design.initial_weights(config, settings, random.Random(seed))
    batch = run.packer.pack(docs)

    # the forward runs, is finite, and reaches these weights
    leaves = {n: _tensor(initial[n]).requires_grad_() for n in shapes}
    logits = run.logits(leaves, batch, "at the initial weights")
    if not bool(torch.isfinite(logits).all()):
        raise design.error("its logits at the initial weights are not finite (NaN or inf)")
    if not logits.requires_grad:
        raise design.error("its logits do not depend on any weight")
    loss = cross_entropy(logits, batch)
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()), allow_unused=True)
    used = {n: shapes[n] for n, g in zip(shapes, grads) if g is not None}
    if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
        raise design.error("its gradient at the initial weights is not finite (NaN or inf)")
    unused = tuple(n for n in shapes if n not in used)
    checked = Checked(design, config, settings, used, unused)

    # with the used weights alone, the same logits; and twice the same
    with torch.no_grad():
        mine = {n: leaves[n].detach() for n in used}
        try:
            again = run.forward(MappingProxyType(mine), design_batch(batch))
        except KeyError as e:
            if e.args and e.args[0] in unused:
                raise design.error(
                    f"forward reads {e.args[0]}, but its logits do not depend on it through "
                    "autograd (.detach(), torch.no_grad, an integer use): a weight that is "
                    "not trained cannot be read"
                ) from None
            again = None
        if again is None or not isinstance(again, Tensor):
            again = run.logits(mine, batch, "with the weights it uses")
        _same(
            design,
            logits.detach(),
            again,
            0.0,
            "two calls give different logits: "
            "the forward is not deterministic, or reads weights its logits do not depend on",
        )

        # honesty, at the initial weights plus noise
        noisy = _noisy(mine, random.Random(NOISE_SEED))
        packed = run.logits(noisy, batch, "on packed documents")
        _documents_apart(run, noisy, docs, packed)
        _causal(run, noisy, docs)
    _runs_apart(run, checked, initial, docs)
    if dropout > 0:
        _runs_apart(run, checked, initial, docs, dropout)
    return checked


class _Runner:
    """The design's forward in float64 on the CPU, without dropout, its errors one-liners."""

    def __init__(self, design: DesignFile, config: ModelConfig, settings: Settings):
        self.design, self.config = design, config
        self.forward = design.bind(config, settings)
        cpu = torch.device("cpu")
        self.packer = Packer(config.block_size, cpu, torch.float64, torch.float64)

    def logits(self, weights: dict[str, Tensor], batch: Batch, when: str) -> Tensor:
        out = self.design.call(
            self.forward, f"forward {when}", MappingProxyType(weights), design_batch(batch)
        )
        expected = (*batch.tokens.shape, self.config.vocab_size)
        if not isinstance(out, Tensor):
            raise self.design.error(f"forward returned {type(out).__name__}, not logits")
        if tuple(out.shape) != expected or not out.is_floating_point():
            raise self.design.error(
                f"forward returned {out.dtype} logits of shape {tuple(out.shape)} {when}; "
                f"expected {expected} (positions, vocabulary)"
            )
        return out


def _documents_apart(run: _Runner, w: dict, docs: list[list[int]], packed: Tensor) -> None:
    """Each document's logits packed with the others equal its logits alone."""
    lengths = [min(run.config.block_size, len(d) - 1) for d in docs]
    plan = plan_rows(lengths, run.config.block_size)
    width = packed.shape[0] // len(plan)
    for r, row in enumerate(plan):
        start = r * width
        for d in row:
            n = lengths[d]
            alone = run.logits(w, run.packer.pack([docs[d]]), "on one document")
            together = packed[start : start + n]
            _same(
                run.design,
                together,
                alone,
                ROUNDING,
                "documents packed in one batch see "
                "each other: a document's logits alone and packed with others differ",
            )
            start += n


def _causal(run: _Runner, w: dict, docs: list[list[int]]) -> None:
    """Changing a document's token j leaves its logits at positions before j unchanged."""
    V = run.config.vocab_size
    for doc in docs[:3]:
        n = min(run.config.block_size, len(doc) - 1)
        before = run.logits(w, run.packer.pack([doc]), "on one document")
        for j in sorted({1, n // 2, n - 1} - {0}):
            changed = list(doc)
            changed[j] = (changed[j] + 1) % V
            after = run.logits(w, run.packer.pack([changed]), "on one document")
            _same(
                run.design,
                after[:j],
                before[:j],
                ROUNDING,
                f"its logits are not causal: "
                f"changing token {j} of a document changed the logits before it",
            )


def _runs_apart(
    run: _Runner, checked: Checked, initial: dict, docs: list[list[int]], dropout: float = 0.0
) -> None:
    """A stack's loss and gradients, through the training path itself (`Stack` and
    `TensorGPT` with the design's net), equal each run's own: two runs, each with its own
    noisy weights and documents; with `dropout`, each drawing its masks."""
    base = {n: _tensor(initial[n]) for n in checked.shapes}
    runs = [_noisy(base, random.Random(NOISE_SEED + 1 + s)) for s in range(2)]
    halves = [docs[0::2], docs[1::2]]
    with torch.no_grad():  # the logits' shape first, for a clear message
        stacked = {n: torch.stack([w[n] for w in runs]) for n in checked.shapes}
        run.logits(stacked, run.packer.pack_runs(halves), "on a stack of 2 runs")
    weights = [{n: w[n].tolist() for n in checked.shapes} for w in runs]
    # a stack's runs differ in seed alone
    trains = [TrainConfig(seed=s, dropout=dropout) for s in range(2)]
    mix = "the runs of a stack mix"
    if dropout > 0:
        mix = (
            f"with dropout {dropout:g} the runs of a stack mix (draw dropout's masks with "
            "microgpt.tensor.blocks.dropout, from each run's own generator)"
        )
    config, net = checked.config, checked.net(resolve(CPU64))
    stack = Stack(config, weights, trains, CPU64, net)
    losses = torch.tensor(stack.stack_step(halves, [0.0, 0.0]), dtype=torch.float64)
    for s, (w, half) in enumerate(zip(weights, halves)):
        solo = TensorGPT(config, w, trains[s], CPU64, net)
        loss = torch.tensor(solo.train_step(half, 0.0), dtype=torch.float64)
        _same(
            run.design,
            losses[s],
            loss,
            ROUNDING,
            f"{mix}: a run's loss in a stack differs from its own",
        )
        _same(
            run.design,
            stack.grad[s],
            solo.grad,
            GRAD_ROUNDING,
            f"{mix}: a run's gradient in a stack differs from its own",
        )


def _same(design: DesignFile, got: Tensor, want: Tensor, tol: float, what: str) -> None:
    """Raise `what` unless max |got - want| <= tol x max |want| (0: bit for bit)."""
    if got.shape != want.shape:
        raise design.error(f"{what} (shapes {tuple(got.shape)} and {tuple(want.shape)})")
    diff = float((got - want).abs().max()) if got.numel() else 0.0
    scale = float(want.abs().max()) if want.numel() else 0.0
    if not diff <= tol * max(scale, 1e-300):
        raise design.error(f"{what} (by {diff:.1e}, largest value {scale:.1e})")


def _tensor(m: Matrix) -> Tensor:
    return torch.tensor(m, dtype=torch.float64)


def _noisy(weights: dict[str, Tensor], rng: random.Random) -> dict[str, Tensor]:
    """Each weight plus gauss(0, INIT_STD) noise, drawn in a generator of its own."""
    g = torch.Generator().manual_seed(rng.getrandbits(62))
    return {
        n: w + INIT_STD * torch.randn(w.shape, generator=g, dtype=torch.float64)
        for n, w in weights.items()
    }
