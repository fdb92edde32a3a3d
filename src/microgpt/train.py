"""The training loop, written once for both modes: data, schedule, checkpoints, summary.

`prepare` reads and splits the documents (or the stream) and draws the initial weights (of a
design file too: its checks first, `tensor.design_check`); `train` runs the steps on a `GPT`
(either mode) and returns a `RunResult`; `train_stack` runs many at once as one stack (tensor
mode). Both go through one `Loop`, a solo run being a stack of one: the same steps, divergence,
evaluation, diagnostics and speed figures; what `microgpt train` adds (metrics, callbacks,
checkpoints) comes in through `Hooks`. The CLI and `ablate` use them.

Held-out figures: `val_loss` is the reference's, the mean over the first `val_docs` held-out
documents of each one's mean loss; `val_loss_per_token` is the mean over every predicted token of
the first `eval_docs` (default: all) held-out documents, the figure makemore and nanoGPT print,
and `val_bpc` is that in bits (/ ln 2). In stream mode the held-out documents are the held-out
text's non-overlapping windows (`data.held_out_windows`), each predicting block_size tokens.
`eval_every` K evaluates the per-token figure every K steps as well; evaluation, like saving,
is not counted as training time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

from microgpt import checkpoint
from microgpt.config import ModelConfig, TrainConfig
from microgpt.data import (
    Split,
    Tokenizer,
    batch_indices,
    read_documents,
    read_stream,
    shuffle_and_split,
    split_stream,
    stream_offsets,
)
from microgpt.design import DesignError, DesignRun
from microgpt.errors import UserError
from microgpt.init import Matrix, init_weights
from microgpt.modes import GPT, TensorOptions, make_gpt
from microgpt.schedule import lr_at
from microgpt.stall import reported


def fingerprint(docs: list[str]) -> str:
    """A short hash of the documents in file order: a resume checks it is on the same data."""
    return hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Prepared:
    """Everything a run derives from (input, seed) before its first step."""

    split: Split
    tokenizer: Tokenizer
    fingerprint: str
    input_path: str | None
    weights: dict[str, Matrix]
    rng: random.Random  # after the shuffle and the weight draws: sampling continues from here
    design: object = None  # a design file's `design_check.Checked` for this model; None: built-in

    @property
    def num_params(self) -> int | None:
        """A design's parameter count (the weights it uses); None: the config's."""
        return None if self.design is None else self.design.num_params


def read_input(input_path: str | None, data: str) -> tuple[list[str], Tokenizer, str]:
    """The input as documents (a stream: the whole text as one), its tokenizer and its
    fingerprint: what a run's data is, before any split. Read once per process while the file
    is unchanged (`_read_input`): a study's runs all read the same input, and one tokenizer
    keeps the documents it has encoded (`Tokenizer.encode_document`) for all of them."""
    docs, tokenizer, fp = _read_input(input_path, data, _file_key(input_path))
    return list(docs), tokenizer, fp


def _file_key(input_path: str | None) -> tuple | None:
    """What tells a file's contents apart without reading it: its size, time and inode (None:
    no such file; the bundled texts never change)."""
    if input_path is None:
        return None
    try:
        st = os.stat(input_path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@lru_cache(maxsize=4)
def _read_input(input_path: str | None, data: str, key: tuple | None):
    if data == "stream":
        text = read_stream(input_path)
        return (text,), Tokenizer.from_text(text), fingerprint([text])
    docs = read_documents(input_path)
    return tuple(docs), Tokenizer.from_documents(docs), fingerprint(docs)


def prepare(
    input_path: str | None,
    model_args: dict,
    train: TrainConfig,
    design: DesignRun | None = None,
) -> tuple[ModelConfig, Prepared]:
    """Read, shuffle and split the documents, make the config, draw the initial weights.

    The RNG is used in the reference's order: shuffle first, then the weights. A stream is not
    shuffled: the weights are the RNG's first use. The split of a (input, seed) is made once
    per process (`_split`), and the RNG set to its state after the shuffle: a study's designs
    share their seeds' splits. A design file (`design`) is checked first on a few training
    documents, unless `design.used` says it was (`design_check.prepared`); its own weights are
    drawn after the reference's from the same stream."""
    docs, tokenizer, fp = _read_input(input_path, train.data, _file_key(input_path))
    config = ModelConfig(vocab_size=tokenizer.vocab_size, **model_args)
    block_size = config.block_size if train.data == "stream" else None
    split, state = _split(docs, fp, train.data, train.seed, train.val_fraction, block_size)
    rng = random.Random()
    rng.setstate(state)
    weights = init_weights(config, rng)
    checked = None
    if design is not None:
        from microgpt.tensor.design_check import prepared

        docs = partial(check_docs, split.train + split.val, tokenizer, train.data)  # if needed
        checked = prepared(design, config, docs, train.dropout)
        weights = checked.initial_weights(rng, reference=weights)
    return config, Prepared(split, tokenizer, fp, input_path, weights, rng, checked)


CHECK_DOCS = 6  # documents a design file's checks run on


def check_docs(texts: list[str], tokenizer: Tokenizer, data: str) -> list[list[int]]:
    """A few encoded documents for a design file's checks (`design_check.check`): the first
    of `texts` (documents, or a stream's text: its first windows), at least two."""
    if data == "stream":
        tokens = tokenizer.encode("".join(texts)[: CHECK_DOCS * 8])
        docs = [tokens[i : i + 8] for i in range(0, len(tokens) - 2, 8)]
    else:
        docs = [tokenizer.encode_document(d) for d in texts[:CHECK_DOCS]]
    docs = [d for d in docs if len(d) >= 3]
    if len(docs) == 1:
        docs = docs * 2
    if len(docs) < 2:
        raise UserError("a design file is checked on two or more documents: the input is too small")
    return docs


def _split(docs: tuple[str, ...], fp: str, data: str, seed: int, val_fraction: float, block_size):
    """The split of `docs` (fingerprint `fp`) for `seed`, and the RNG's state after it, kept
    for the process's later runs (`SPLITS_KEPT` of them). Its lists are shared by every run
    that asks: read them, never change them."""
    key = (fp, data, seed, val_fraction, block_size)
    kept = _splits.pop(key, None)
    if kept is None:
        rng = random.Random(seed)
        if data == "stream":
            split = split_stream(docs[0], val_fraction, block_size)
        else:
            split = shuffle_and_split(list(docs), rng, val_fraction)
        kept = (split, rng.getstate())
        if len(_splits) >= SPLITS_KEPT:
            del _splits[next(iter(_splits))]  # the least recently used
    _splits[key] = kept
    return kept


SPLITS_KEPT = 256  # seeds' splits a process keeps (each holds the documents' references)
_splits: dict[tuple, tuple[Split, tuple]] = {}


@dataclass
class RunResult:
    config: ModelConfig
    train: TrainConfig
    mode: str
    losses: list[float] = field(default_factory=list)  # per step, from step 1
    lrs: list[float] = field(default_factory=list)  # the learning rate of each step
    evals: list[tuple[int, float]] = field(default_factory=list)  # --eval-every: (step, loss)
    val_loss: float | None = None  # per document, the reference's
    val_loss_per_token: float | None = None  # over the eval_docs held-out documents
    val_tokens: int = 0  # the tokens val_loss_per_token averages over
    best_val_loss: float | None = None  # with keep_best: the lowest per-token held-out loss seen
    diverged: tuple[int, float | None] | None = None  # in a study: (step, last finite loss)
    halves: tuple[float, float] | None = None  # in a study: `InStudy.halves`' two val losses
    diagnostics: list[tuple[int, float | None, float, float]] = field(default_factory=list)  # in
    # a study, tensor mode: (step, largest attention logit (None: a design that records none),
    # output logits' mean, their max)
    params: int | None = None  # a design file's parameter count (None: the config's)
    design: DesignRun | None = None  # the design file it trained, if any
    steps_per_s: float = 0.0  # training loop only: start-up, validation and saves excluded
    tokens_per_s: float = 0.0  # target tokens trained on per second
    seconds: float = 0.0

    def mean_last_n(self) -> float:
        tail = self.losses[-self.train.last_n :]
        return sum(tail) / len(tail)

    def summary(self) -> dict:
        return {
            "final_loss": self.losses[-1],
            "mean_last_n": self.mean_last_n(),
            "last_n": min(self.train.last_n, len(self.losses)),
            "val_loss": self.val_loss,
            "val_loss_per_token": self.val_loss_per_token,
            "val_bpc": bits(self.val_loss_per_token),
            "val_tokens": self.val_tokens,
            "steps_per_s": self.steps_per_s,
            "tokens_per_s": self.tokens_per_s,
            "train_seconds": self.seconds,
            "params": self.config.num_params() if self.params is None else self.params,
            "mode": self.mode,
            "design": None if self.design is None else design_record(self.design),
            "model_config": self.config.to_dict(),
            "train_config": self.train.to_dict(),
        }


class MetricsWriter:
    """JSON Lines: one record per step, then a summary record. Written to `PATH.partial` as it
    goes (watch it with tail -f) and renamed to PATH when the run completes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        try:
            self._f = open(self.partial, "w", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write metrics to {self.partial}: {e.strerror}") from None

    def replay(self, result: RunResult) -> None:
        """The records of the steps and evaluations a resumed run did before it stopped."""
        evals = dict(result.evals)
        for i, (loss, lr) in enumerate(zip(result.losses, result.lrs), start=1):
            self.step(i, loss, lr)
            if i in evals:
                self.eval(i, evals[i])

    def step(self, step: int, loss: float, lr: float) -> None:
        self._f.write(json.dumps({"step": step, "loss": loss, "lr": lr}) + "\n")

    def eval(self, step: int, val_loss: float) -> None:
        """A held-out evaluation: `val_loss` is per token (see the module's docstring)."""
        self._f.write(json.dumps({"step": step, "val_loss": val_loss, "val_bpc": bits(val_loss)}))
        self._f.write("\n")

    def finish(self, summary: dict) -> None:
        self._f.write(json.dumps({"summary": True, **summary}) + "\n")
        self._f.close()
        self.partial.replace(self.path)

    def abandon(self) -> None:
        self._f.close()


@dataclass(frozen=True)
class InStudy:
    """What a run of an ablate study does beyond `microgpt train` (`train`, `train_stack`):

    - a non-finite loss ends the run and is recorded (`RunResult.diverged`: the step and the
      last finite loss) instead of raised, so that the study goes on;
    - `halves` (indices into the first `val_docs` held-out documents, see
      `ablate.sweep.split_halves`): the per-document val loss of each half at the end
      (`RunResult.halves`);
    - `diagnostics_every` K > 0 (tensor mode): `TensorGPT.diagnostics` on the first
      `diagnostic_docs` held-out documents every K steps and at the end
      (`RunResult.diagnostics`). Like evaluation, it is not training time."""

    halves: tuple[list[int], list[int]] | None = None
    diagnostics_every: int = 0
    diagnostic_docs: int = 32


def _halves(gpt, val_docs: list[list[int]], halves) -> tuple[float, float] | None:
    """The per-document val loss of each half (`InStudy.halves`), or None without halves."""
    if halves is None:
        return None
    return tuple(gpt.eval_loss([val_docs[i] for i in half]) for half in halves)


StepCallback = Callable[[int, float], None]
EvalCallback = Callable[[int, float], None]  # (step, per-token held-out loss)


def design_record(run: DesignRun) -> dict:
    """A design file as a summary or a checkpoint names it."""
    return {"name": run.name, "path": run.path, "sha256": run.sha256, "settings": run.values()}


def bits(loss: float | None) -> float | None:
    """A loss in nats as bits (per character, for character-level data)."""
    return None if loss is None else loss / math.log(2)


def token_data(prep: Prepared, tc: TrainConfig, block_size: int, held_out: int | None = None):
    """The encoded data a run reads: `step_docs(step)`, the documents of a step, and the first
    `held_out` (None: all) held-out documents. lines: the step's documents in order
    (`batch_indices`); stream: the step's windows of block_size + 1 tokens of the training text
    (`stream_offsets`)."""
    tokenizer = prep.tokenizer
    val = prep.split.val[:held_out]
    if tc.data == "stream":
        train_tokens = _encoded_text(tokenizer, prep.split.train[0])
        T = block_size

        def step_docs(step: int) -> list[list[int]]:
            offsets = stream_offsets(tc.seed, step, tc.batch_size, len(train_tokens), T)
            return [train_tokens[o : o + T + 1] for o in offsets]

        return step_docs, [tokenizer.encode(w) for w in val]
    train_docs = prep.split.train
    encode = tokenizer.encode_document  # each document encoded when first read, then kept

    def step_docs(step: int) -> list[list[int]]:
        indices = batch_indices(step, tc.batch_size, len(train_docs), tc.reshuffle, tc.seed)
        return [encode(train_docs[i]) for i in indices]

    return step_docs, [encode(d) for d in val]


def _encoded_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """A stream's training text encoded, once per process for the last few texts (the runs of
    a study share one): read it, never change it."""
    key = (tokenizer, id(text), len(text))
    kept = _texts.get(key)
    if kept is None or kept[0] is not text:
        _texts.clear()  # one text at a time: a stream's tokens are large
        kept = _texts[key] = (text, tokenizer.encode(text))
    return kept[1]


_texts: dict[tuple, tuple[str, list[int]]] = {}


def train(
    mode: str,
    config: ModelConfig,
    tc: TrainConfig,
    prep: Prepared,
    tensor: TensorOptions | None = None,
    resume: checkpoint.Checkpoint | None = None,
    out: str | Path | None = None,
    save_every: int = 0,
    metrics: MetricsWriter | None = None,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    keep_best: str | Path | None = None,
    group=None,
    study: InStudy | None = None,
    on_progress: Callable[[], None] | None = None,
) -> tuple[GPT, RunResult]:
    """Train from `prep` (or from `resume`) to `tc.steps`. `out`: save the checkpoint there at
    the end (and every `save_every` steps). `keep_best`: a second checkpoint, rewritten whenever
    a held-out evaluation (every `tc.eval_every` steps, and at the end) is the best so far.
    `group` (a `distributed.Group`, tensor mode): train data-parallel over its ranks; every
    rank calls this alike, and only rank 0 should be given `out`, `keep_best` and `metrics`.
    `study`: a run of an ablate study (see `InStudy`); a non-finite loss then ends the run with
    `result.diverged` set and no held-out figures, where `microgpt train` raises UserError.
    `on_progress()`: as evaluations read their documents (`stall.Reported`; a study's stall
    watch), so that a long final evaluation is not silent."""
    gpt = make_gpt(mode, config, prep.weights, tc, tensor, prep.design)
    if group is not None:
        from microgpt.tensor.parallel import DataParallelGPT

        gpt = DataParallelGPT(gpt, group)
    result = _result(mode, config, tc, prep)
    if resume is not None:
        gpt.load_state(resume.state, resume.step)
        result.losses, result.lrs = list(resume.losses), list(resume.lrs)
        result.evals = list(resume.evals)
        if metrics:
            metrics.replay(result)
    step_docs, held_out = token_data(prep, tc, config.block_size, held_out_needed(tc, study))
    run = Run(tc, result, step_docs, reported(held_out, on_progress), study)
    hooks = _TrainHooks(gpt, result, prep, resume, study, out, save_every, keep_best, metrics,
                        on_step, on_eval)  # fmt: skip
    loop = Loop(OneRun(gpt), [run], hooks)
    try:
        loop.train(len(result.losses), tc.steps)
        loop.finish(tc.steps)
    except DesignError as e:  # the design file's code failed: say what is kept
        raise DesignError(f"{e}; {_kept(out, hooks.saved_at)}") from None
    if result.diverged:
        return gpt, result
    if group is not None:
        gpt.check_in_sync()
    if out:
        hooks.save(tc.steps)
    return gpt, result


def train_stack(
    config: ModelConfig,
    tcs: list[TrainConfig],
    preps: list[Prepared],
    tensor: TensorOptions,
    on_step: Callable[[int, int], None] | None = None,
    studies: list[InStudy] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> list[RunResult]:
    """`train` for S runs of one shape at once (`tensor.stack.Stack`, tensor mode): run s from
    `preps[s]` with `tcs[s]`, which may differ from the others' in seed and learning rate. Each
    run reads the documents, follows the schedule and is evaluated exactly as alone.

    A run whose loss becomes non-finite ends there, alone: its result records `diverged`
    (the step and its last finite loss) and has no held-out or speed figures, as alone; the
    others go on without it. `on_step(step, runs)`: after each step, with the number of runs
    still training. The speed figures of every run are the stack's (a step of the stack is a
    step of each run). `studies` (one `InStudy` per run): each run's halves and diagnostics,
    made on a solo model of its weights (`Stack.eval_model`) as `train` makes them.
    `on_progress`: as in `train`."""
    stack = _stack(config, tcs, preps, tensor)
    runs = runs_of("tensor", config, tcs, preps, studies, on_progress)
    loop = Loop(stack, runs, _Progress(on_step))
    loop.train(0, tcs[0].steps)
    loop.finish(tcs[0].steps)
    return [run.result for run in loop.todo]


def open_loop(
    mode: str,
    config: ModelConfig,
    tcs: list[TrainConfig],
    preps: list[Prepared],
    tensor: TensorOptions | None = None,
) -> Loop:
    """The loop of the runs `tcs` from `preps`' initial weights as a study trains them: one
    run on its solo model (`make_gpt`, either mode), several as one stack (tensor mode)."""
    if len(tcs) > 1:
        runs = _stack(config, tcs, preps, tensor)
    else:
        runs = OneRun(make_gpt(mode, config, preps[0].weights, tcs[0], tensor, preps[0].design))
    return Loop(runs, runs_of(mode, config, tcs, preps))


def _stack(config: ModelConfig, tcs: list[TrainConfig], preps: list[Prepared], tensor):
    """The runs `tcs` from `preps`' initial weights as one `tensor.Stack`, of their design
    file's net if they have one (every run of a stack has the same design)."""
    from microgpt.tensor import Stack

    design = preps[0].design
    net = None if design is None else design.net(tensor)
    return Stack(config, [p.weights for p in preps], list(tcs), tensor, net)


def _result(mode: str, config: ModelConfig, tc: TrainConfig, prep: Prepared) -> RunResult:
    """An empty result of a run from `prep`, with its design's parameter count."""
    design = None if prep.design is None else prep.design.run
    return RunResult(config=config, train=tc, mode=mode, params=prep.num_params, design=design)


def runs_of(
    mode: str,
    config: ModelConfig,
    tcs: list[TrainConfig],
    preps: list[Prepared],
    studies: list[InStudy] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> list[Run]:
    """Each run's part of a loop, from the start: its data (`token_data`; its held-out documents
    calling `on_progress` as they are read) and an empty result."""
    out = []
    for tc, prep, study in zip(tcs, preps, studies or [None] * len(tcs)):
        result = _result(mode, config, tc, prep)
        step_docs, held_out = token_data(prep, tc, config.block_size, held_out_needed(tc, study))
        out.append(Run(tc, result, step_docs, reported(held_out, on_progress), study))
    return out


def held_out_needed(tc: TrainConfig, study: InStudy | None) -> int | None:
    """How many of the first held-out documents a run reads (`Run`): its val_docs, eval_docs
    (None: all) and diagnostic documents, whichever most."""
    if tc.eval_docs is None:
        return None
    return max(tc.val_docs, tc.eval_docs, study.diagnostic_docs if study else 0)


# the loop -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run's part of the loop: its settings, data and result, and its evaluation so far."""

    tc: TrainConfig
    result: RunResult
    step_docs: Callable[[int], list[list[int]]]  # step -> that step's documents (`token_data`)
    held_out: list[list[int]]
    study: InStudy | None = None
    last_eval: tuple[int, float, int] | None = None  # the latest: (step, total loss, tokens)
    tokens: int = 0  # target tokens trained on in this loop

    def __post_init__(self) -> None:
        self.val_docs = self.held_out[: self.tc.val_docs]
        self.eval_docs = self.held_out[: self.tc.eval_docs]  # eval_docs None: all
        self.every = self.study.diagnostics_every if self.study else 0  # diagnostics, if > 0
        self.probe = self.held_out[: self.study.diagnostic_docs] if self.every else []


class Hooks:
    """What a caller adds to the loop (these do nothing); `i` is a run's index in the loop."""

    def stepped(self, i: int, step: int, loss: float, lr: float) -> None:
        """Run i trained its step `step` (1-based) at `lr`, with a finite `loss`."""

    def diverged(self, i: int, step: int, loss: float) -> None:
        """Run i's loss at `step` is not finite: it ends there, unless this raises."""

    def step_done(self, step: int, runs: int) -> None:
        """Every run trained step `step`; `runs` of them train on."""

    def evaluated(self, i: int, step: int, val_loss: float, periodic: bool) -> None:
        """A held-out evaluation of run i: every `eval_every` steps (`periodic`), or its last."""

    def step_end(self, step: int) -> None:
        """After step `step`'s evaluations, not counted as training time (e.g. a save)."""


class OneRun:
    """A solo model (`modes.GPT`, either mode) as the loop steps runs: a stack of one."""

    def __init__(self, gpt: GPT):
        self.gpt = gpt

    def stack_step(self, docs: list[list[list[int]]], lrs: list[float]) -> list[float]:
        return [self.gpt.train_step(docs[0], lrs[0])]

    def keep_runs(self, keep: list[int]) -> None:
        """Never asked to keep a run: when its one run ends, the loop ends."""

    def run_model(self, j: int) -> GPT:
        return self.gpt

    def eval_model(self, j: int) -> GPT:
        return self.gpt


class Loop:
    """The training loop, of one run (`OneRun`) or of a stack's runs (`tensor.stack.Stack`).

    A step: every run trains on its step's documents at its learning rate; a run whose loss is
    not finite ends there (`RunResult.diverged`: the step and its last finite loss; unless
    `Hooks.diverged` raises) and the others go on without it; every `eval_every` steps each run's
    per-token held-out loss, and every `InStudy.diagnostics_every` steps and at the end its
    diagnostics, each on the run's own solo model. Then `finish`: speed figures and the final
    held-out figures. Evaluation, diagnostics and `Hooks.step_end` are not training time."""

    def __init__(self, runs, todo: list[Run], hooks: Hooks | None = None):
        """`runs`: what steps them (`stack_step`, `keep_runs`, `eval_model`: run j's model to
        evaluate); `todo`: the runs, in its order."""
        self.runs, self.todo, self.hooks = runs, todo, hooks or Hooks()
        self.alive = list(range(len(todo)))  # the runs still training, in the stack's order
        self.seconds = 0.0  # training time so far
        self.first_step: int | None = None
        self.block_size = todo[0].result.config.block_size

    def train(self, first_step: int, steps: int) -> None:
        """Train 0-based steps `first_step` to `steps` - 1; `steps` is the runs' last step."""
        todo, hooks, block_size = self.todo, self.hooks, self.block_size
        if self.first_step is None:
            self.first_step = first_step
        if not self.alive:
            return
        stepped = type(hooks).stepped is not Hooks.stepped  # else not called: it does nothing
        start = time.perf_counter()
        for step in range(first_step, steps):
            alive = self.alive
            runs = [todo[i] for i in alive]
            docs = [run.step_docs(step) for run in runs]
            lrs = [lr_at(step, run.tc) for run in runs]
            losses = self.runs.stack_step(docs, lrs)
            keep = []  # indices into the stack as it is
            for j, (run, loss, lr, run_docs) in enumerate(zip(runs, losses, lrs, docs)):
                result = run.result
                if not math.isfinite(loss):
                    hooks.diverged(alive[j], step + 1, loss)
                    result.diverged = (step + 1, result.losses[-1] if result.losses else None)
                    continue
                keep.append(j)
                result.losses.append(loss)
                result.lrs.append(lr)
                for d in run_docs:  # the target tokens trained on
                    run.tokens += min(block_size, len(d) - 1)
                if stepped:
                    hooks.stepped(alive[j], step + 1, loss, lr)
            if len(keep) < len(alive):
                self.alive = [alive[j] for j in keep]
                if not self.alive:
                    break
                self.runs.keep_runs(keep)
            hooks.step_done(step + 1, len(self.alive))
            paused = time.perf_counter()
            self._evaluate(step + 1, steps)
            hooks.step_end(step + 1)
            start += time.perf_counter() - paused  # not training time
        self.seconds += time.perf_counter() - start

    def _evaluate(self, step: int, steps: int) -> None:
        """The held-out evaluations and diagnostics due after `step`, each run on its model."""
        for j, i in enumerate(self.alive):
            run = self.todo[i]
            every = run.tc.eval_every
            evaluate = every and step % every == 0 and run.eval_docs
            diagnose = run.probe and (step % run.every == 0 or step == steps)
            if not (evaluate or diagnose):
                continue
            model = self.runs.eval_model(j)
            if evaluate:
                run.last_eval = (step, *model.eval_token_loss(run.eval_docs))
                val_loss = run.last_eval[1] / run.last_eval[2]
                run.result.evals.append((step, val_loss))
                self.hooks.evaluated(i, step, val_loss, periodic=True)
            if diagnose:
                run.result.diagnostics.append((step, *model.diagnostics(run.probe)))

    def finish(self, steps: int) -> None:
        """The speed figures (the loop's pace: a step of a stack is a step of each run in it)
        and the held-out figures after `steps` of every run that did not diverge; a diverged
        run has neither."""
        seconds = self.seconds
        for j, i in enumerate(self.alive):
            run, result = self.todo[i], self.todo[i].result
            trained = len(result.losses) - (self.first_step or 0)  # in this loop
            if trained and seconds > 0:
                result.steps_per_s = trained / seconds
                result.tokens_per_s = run.tokens / seconds
                result.seconds = seconds
            model = self.runs.eval_model(j)
            if run.val_docs:
                result.val_loss = model.eval_loss(run.val_docs)
            if run.eval_docs:
                if run.last_eval is None or run.last_eval[0] != steps:
                    run.last_eval = (steps, *model.eval_token_loss(run.eval_docs))
                    val_loss = run.last_eval[1] / run.last_eval[2]
                    self.hooks.evaluated(i, steps, val_loss, periodic=False)
                _, total, count = run.last_eval
                result.val_loss_per_token, result.val_tokens = total / count, count
            if run.study is not None:
                result.halves = _halves(model, run.val_docs, run.study.halves)


class _TrainHooks(Hooks):
    """What `train` adds to the loop of its one run: the metrics file and callbacks, the
    checkpoints (every `save_every` steps, the best, the last), and a non-finite loss raised as
    a UserError (but in a study)."""

    def __init__(self, gpt, result, prep, resume, study, out, save_every, keep_best, metrics,
                 on_step, on_eval):  # fmt: skip
        self.gpt, self.result, self.prep, self.in_study = gpt, result, prep, study is not None
        self.out, self.save_every, self.keep_best = out, save_every, keep_best
        self.metrics, self.on_step, self.on_eval = metrics, on_step, on_eval
        self.saved_at = resume.step if resume else None  # the step of `out`'s last checkpoint
        # the lowest held-out loss so far, with keep_best (an interrupted run's, on resuming)
        self.best = _best_so_far(keep_best, prep) if keep_best and resume else None

    def stepped(self, i: int, step: int, loss: float, lr: float) -> None:
        if self.metrics:
            self.metrics.step(step, loss, lr)
        if self.on_step:
            self.on_step(step, loss)

    def diverged(self, i: int, step: int, loss: float) -> None:
        if not self.in_study:
            raise UserError(_diverged_message(step, loss, self.out, self.saved_at))

    def evaluated(self, i: int, step: int, val_loss: float, periodic: bool) -> None:
        if self.keep_best and (self.best is None or val_loss < self.best):
            self.best = val_loss
            point = make_checkpoint(self.gpt, self.result, self.prep, self.result.train, val_loss)
            checkpoint.save(self.keep_best, point)
        self.result.best_val_loss = self.best
        if periodic and self.metrics:
            self.metrics.eval(step, val_loss)
        if periodic and self.on_eval:
            self.on_eval(step, val_loss)

    def step_end(self, step: int) -> None:
        every, last = self.save_every, self.result.train.steps
        if self.out and every and step % every == 0 and step < last:
            self.save(step)  # after the step's evaluation, which it keeps for a resume

    def save(self, step: int) -> None:
        checkpoint.save(
            self.out, make_checkpoint(self.gpt, self.result, self.prep, self.result.train)
        )
        self.saved_at = step


class _Progress(Hooks):
    """`train_stack`'s `on_step(step, runs)`."""

    def __init__(self, on_step: Callable[[int, int], None] | None):
        self.on_step = on_step

    def step_done(self, step: int, runs: int) -> None:
        if self.on_step:
            self.on_step(step, runs)


def _best_so_far(path: str | Path, prep: Prepared) -> float | None:
    """The held-out loss of the best checkpoint an interrupted run kept, if there is one."""
    if not Path(path).exists():
        return None
    best = checkpoint.load(path)
    if best.data_fingerprint != prep.fingerprint or best.val_loss is None:
        raise UserError(
            f"{path} is not the best checkpoint of this run: move it away, or resume with "
            "another --out"
        )
    return best.val_loss


def make_checkpoint(
    gpt: GPT, result: RunResult, prep: Prepared, tc: TrainConfig, val_loss: float | None = None
):
    design = None
    if prep.design is not None:
        design = checkpoint.design_entry(prep.design.run, prep.design.shapes, prep.design.muon)
    return checkpoint.Checkpoint(
        model=gpt.config,
        train=tc,
        chars=prep.tokenizer.chars,
        step=gpt.step,
        state=gpt.export_state(),
        losses=list(result.losses),
        lrs=list(result.lrs),
        rng_state=prep.rng.getstate(),
        data_fingerprint=prep.fingerprint,
        input_path=prep.input_path,
        mode=gpt.mode,
        val_loss=val_loss,
        evals=tuple(result.evals),
        design=design,
    )


def _diverged_message(step: int, loss: float, out, saved_at: int | None) -> str:
    return f"the loss became {loss} at step {step}: lower --learning-rate; {_kept(out, saved_at)}"


def _kept(out, saved_at: int | None) -> str:
    """What a run that stops early keeps."""
    if out and saved_at:
        return f"the last good checkpoint {out} (step {saved_at}) is kept"
    return "no checkpoint was written"
