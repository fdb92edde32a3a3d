"""The training loop, written once for both modes: data, schedule, checkpoints, summary.

`prepare` reads and splits the documents (or the stream) and draws the initial weights; `train`
runs the steps on a `GPT` (either mode) and returns a `RunResult`. The CLI and `ablate` both use
them.

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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


def read_input(input_path: str | None, data: str) -> tuple[list[str], Tokenizer, str]:
    """The input as documents (a stream: the whole text as one), its tokenizer and its
    fingerprint: what a run's data is, before any split."""
    if data == "stream":
        text = read_stream(input_path)
        return [text], Tokenizer.from_text(text), fingerprint([text])
    docs = read_documents(input_path)
    return docs, Tokenizer.from_documents(docs), fingerprint(docs)


def prepare(
    input_path: str | None, model_args: dict, train: TrainConfig
) -> tuple[ModelConfig, Prepared]:
    """Read, shuffle and split the documents, make the config, draw the initial weights.

    The RNG is used in the reference's order: shuffle first, then the weights. A stream is not
    shuffled: the weights are the RNG's first use."""
    docs, tokenizer, fp = read_input(input_path, train.data)
    rng = random.Random(train.seed)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, **model_args)
    if train.data == "stream":
        split = split_stream(docs[0], train.val_fraction, config.block_size)
    else:
        split = shuffle_and_split(docs, rng, train.val_fraction)
    weights = init_weights(config, rng)
    return config, Prepared(split, tokenizer, fp, input_path, weights, rng)


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
    diagnostics: list[tuple[int, float, float, float]] = field(default_factory=list)  # in a
    # study, tensor mode: (step, largest attention logit, output logits' mean, their max)
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
            "params": self.config.num_params(),
            "mode": self.mode,
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


def bits(loss: float | None) -> float | None:
    """A loss in nats as bits (per character, for character-level data)."""
    return None if loss is None else loss / math.log(2)


def token_data(prep: Prepared, tc: TrainConfig, block_size: int):
    """The encoded data a run reads: `step_docs(step)`, the documents of a step, and the
    held-out documents. lines: the step's documents in order (`batch_indices`); stream: the
    step's windows of block_size + 1 tokens of the training text (`stream_offsets`)."""
    tokenizer = prep.tokenizer
    if tc.data == "stream":
        train_tokens = tokenizer.encode(prep.split.train[0])
        T = block_size

        def step_docs(step: int) -> list[list[int]]:
            offsets = stream_offsets(tc.seed, step, tc.batch_size, len(train_tokens), T)
            return [train_tokens[o : o + T + 1] for o in offsets]

        return step_docs, [tokenizer.encode(w) for w in prep.split.val]
    train_docs = prep.split.train
    encoded: dict[int, list[int]] = {}  # encoded when first read: a short run reads few

    def step_docs(step: int) -> list[list[int]]:
        indices = batch_indices(step, tc.batch_size, len(train_docs), tc.reshuffle, tc.seed)
        out = []
        for i in indices:
            doc = encoded.get(i)
            if doc is None:
                doc = encoded[i] = tokenizer.encode_document(train_docs[i])
            out.append(doc)
        return out

    return step_docs, [tokenizer.encode_document(d) for d in prep.split.val]


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
    gpt = make_gpt(mode, config, prep.weights, tc, tensor)
    if group is not None:
        from microgpt.tensor.parallel import DataParallelGPT

        gpt = DataParallelGPT(gpt, group)
    result = RunResult(config=config, train=tc, mode=mode)
    if resume is not None:
        gpt.load_state(resume.state, resume.step)
        result.losses, result.lrs = list(resume.losses), list(resume.lrs)
        result.evals = list(resume.evals)
        if metrics:
            metrics.replay(result)

    step_docs, held_out = token_data(prep, tc, config.block_size)
    held_out = reported(held_out, on_progress)
    val_docs = held_out[: tc.val_docs]
    eval_docs = held_out[: tc.eval_docs]  # None: all
    last_eval = None  # (step, total loss, tokens) of the latest held-out evaluation
    saved_at = resume.step if resume else None
    best = _best_so_far(keep_best, prep) if keep_best and resume else None
    every = study.diagnostics_every if study else 0
    probe = held_out[: study.diagnostic_docs] if every else []

    def save(step: int) -> None:
        nonlocal saved_at
        checkpoint.save(out, make_checkpoint(gpt, result, prep, tc))
        saved_at = step

    def evaluated(val_loss: float) -> None:
        nonlocal best
        if keep_best and (best is None or val_loss < best):
            best = val_loss
            checkpoint.save(keep_best, make_checkpoint(gpt, result, prep, tc, val_loss))
        result.best_val_loss = best

    first_step, tokens = len(result.losses), 0
    start = time.perf_counter()
    for step in range(first_step, tc.steps):
        docs = step_docs(step)
        lr = lr_at(step, tc)
        loss = gpt.train_step(docs, lr)
        if not math.isfinite(loss):
            if study is None:
                raise UserError(_diverged_message(step + 1, loss, out, saved_at))
            result.diverged = (step + 1, result.losses[-1] if result.losses else None)
            break
        result.losses.append(loss)
        result.lrs.append(lr)
        tokens += sum(min(config.block_size, len(d) - 1) for d in docs)
        if metrics:
            metrics.step(step + 1, loss, lr)
        if on_step:
            on_step(step + 1, loss)
        if tc.eval_every and (step + 1) % tc.eval_every == 0 and eval_docs:
            paused = time.perf_counter()
            last_eval = (step + 1, *gpt.eval_token_loss(eval_docs))
            val_loss = last_eval[1] / last_eval[2]
            result.evals.append((step + 1, val_loss))
            evaluated(val_loss)
            if metrics:
                metrics.eval(step + 1, val_loss)
            if on_eval:
                on_eval(step + 1, val_loss)
            start += time.perf_counter() - paused  # evaluating is not training time
        if probe and ((step + 1) % every == 0 or step + 1 == tc.steps):
            paused = time.perf_counter()
            result.diagnostics.append((step + 1, *gpt.diagnostics(probe)))
            start += time.perf_counter() - paused  # not training time either
        if out and save_every and (step + 1) % save_every == 0 and step + 1 < tc.steps:
            paused = time.perf_counter()
            save(step + 1)  # after the step's evaluation, which it keeps for a resume
            start += time.perf_counter() - paused  # saving is not training time
    loop_seconds = time.perf_counter() - start
    if result.diverged:
        return gpt, result
    steps_run = tc.steps - first_step
    if steps_run and loop_seconds > 0:
        result.steps_per_s = steps_run / loop_seconds
        result.tokens_per_s = tokens / loop_seconds
        result.seconds = loop_seconds
    if val_docs:
        result.val_loss = gpt.eval_loss(val_docs)
    if eval_docs:
        if last_eval is None or last_eval[0] != tc.steps:
            last_eval = (tc.steps, *gpt.eval_token_loss(eval_docs))
            evaluated(last_eval[1] / last_eval[2])
        result.val_loss_per_token = last_eval[1] / last_eval[2]
        result.val_tokens = last_eval[2]
    if study is not None:
        result.halves = _halves(gpt, val_docs, study.halves)
    if group is not None:
        gpt.check_in_sync()
    if out:
        save(tc.steps)
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
    """`train` for S runs of one shape at once (`TensorGPT.stack`, tensor mode): run s from
    `preps[s]` with `tcs[s]`, which may differ from the others' in seed and learning rate. Each
    run reads the documents, follows the schedule and is evaluated exactly as alone.

    A run whose loss becomes non-finite ends there, alone: its result records `diverged`
    (the step and its last finite loss) and has no held-out figures; the others go on without
    it. `on_step(step, runs)`: after each step, with the number of runs still training. The
    speed figures of every run are the stack's (a step of the stack is a step of each run).
    `studies` (one `InStudy` per run): each run's halves and diagnostics, made on a solo copy
    of it (`TensorGPT.run_model`) as `train` makes them. `on_progress`: as in `train`."""
    from microgpt.tensor import TensorGPT

    weights = [p.weights for p in preps]
    gpt = TensorGPT.stack(config, weights, list(tcs), tensor)
    results = [RunResult(config=config, train=tc, mode="tensor") for tc in tcs]
    data = [token_data(p, tc, config.block_size) for p, tc in zip(preps, tcs)]
    data = [(step_docs, reported(held_out, on_progress)) for step_docs, held_out in data]
    alive = list(range(len(tcs)))  # the runs still in the stack, in its order
    last_eval: list[tuple | None] = [None] * len(tcs)  # (step, total loss, tokens), as `train`
    steps, tokens = tcs[0].steps, [0] * len(tcs)
    every = studies[0].diagnostics_every if studies else 0
    start = time.perf_counter()
    for step in range(steps):
        docs = [data[i][0](step) for i in alive]
        lrs = [lr_at(step, tcs[i]) for i in alive]
        losses = gpt.stack_step(docs, lrs)
        keep = []
        for j, (i, loss, lr) in enumerate(zip(alive, losses, lrs)):
            result = results[i]
            if not math.isfinite(loss):
                result.diverged = (step + 1, result.losses[-1] if result.losses else None)
                continue
            keep.append(j)
            result.losses.append(loss)
            result.lrs.append(lr)
            tokens[i] += sum(min(config.block_size, len(d) - 1) for d in docs[j])
        if len(keep) < len(alive):
            alive = [alive[j] for j in keep]
            if not alive:
                break
            gpt.keep_runs(keep)
        if on_step:
            on_step(step + 1, len(alive))
        eval_every = tcs[0].eval_every
        if eval_every and (step + 1) % eval_every == 0:
            paused = time.perf_counter()
            for j, i in enumerate(alive):
                eval_docs = data[i][1][: tcs[i].eval_docs]
                if eval_docs:
                    last_eval[i] = (step + 1, *gpt.run_model(j).eval_token_loss(eval_docs))
                    results[i].evals.append((step + 1, last_eval[i][1] / last_eval[i][2]))
            start += time.perf_counter() - paused  # evaluating is not training time
        if every and ((step + 1) % every == 0 or step + 1 == steps):
            paused = time.perf_counter()
            for j, i in enumerate(alive):
                probe = data[i][1][: studies[i].diagnostic_docs]
                if probe:
                    diagnostics = gpt.run_model(j).diagnostics(probe)
                    results[i].diagnostics.append((step + 1, *diagnostics))
            start += time.perf_counter() - paused  # not training time either
    seconds = time.perf_counter() - start
    for i, result in enumerate(results):  # the stack's pace, each run's own tokens
        result.seconds = seconds
        if seconds > 0:
            result.steps_per_s = len(result.losses) / seconds
            result.tokens_per_s = tokens[i] / seconds
    for j, i in enumerate(alive):
        result, tc, held_out = results[i], tcs[i], data[i][1]
        solo = gpt.run_model(j)
        val_docs, eval_docs = held_out[: tc.val_docs], held_out[: tc.eval_docs]
        if val_docs:
            result.val_loss = solo.eval_loss(val_docs)
        if eval_docs:
            if last_eval[i] is None or last_eval[i][0] != steps:
                last_eval[i] = (steps, *solo.eval_token_loss(eval_docs))
            _, total, count = last_eval[i]
            result.val_loss_per_token, result.val_tokens = total / count, count
        if studies is not None:
            result.halves = _halves(solo, val_docs, studies[i].halves)
    return results


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
    )


def _diverged_message(step: int, loss: float, out, saved_at: int | None) -> str:
    kept = (
        f"the last good checkpoint {out} (step {saved_at}) is kept"
        if out and saved_at
        else "no checkpoint was written"
    )
    return f"the loss became {loss} at step {step}: lower --learning-rate; {kept}"
