"""One ablation run, in whatever process does it: a pool worker or the command itself.

A run is `prepare` + `train` (the same code as `microgpt train`), timed, and saved to its own
JSON file atomically as soon as it finishes, so that a kill loses only the runs in flight. This
module is what a spawned worker imports: keep its imports small (torch only in tensor mode).

A run of a study differs from `microgpt train` only in what it records (`train.InStudy`): a
diverged run is a result, not an error (`diverged` in its record: a non-finite loss, or a mean
training loss over the last tenth of the steps above the loss at initialisation, see
`sweep.diverged`); in a learning-rate sweep its val loss on two fixed halves of the held-out
documents; in tensor mode its diagnostics.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
import traceback

from microgpt import tensorfile
from microgpt.ablate.plan import Task
from microgpt.ablate.results import json_text
from microgpt.ablate.sweep import diverged, loss_at_init, split_halves
from microgpt.environment import environment
from microgpt.errors import PeerError, UserError
from microgpt.stall import Beat
from microgpt.train import InStudy, prepare, train, train_stack

DIAGNOSTIC_DOCS = 32  # held-out documents (the first) the diagnostics are measured on

PROGRESS_EVERY = 25  # steps between updates of the shared step counter


def serve(conn, threads: int | None, steps_done, beats, index: int) -> None:
    """A worker process of `runner._run_pool`: train each job (stack, keep) the pipe `conn`
    brings, until None or the command's end (the pipe closes), and send back its runs, or the
    error that stopped it. `steps_done`: the shared step counter (a stack's step counts once
    per run in it), for the command's progress line; `beats[index]`: this worker's time of
    last progress (`stall.Beat`), for its stall watch. Ctrl-C is left to the command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)

    def post(now: float) -> None:
        beats[index] = now

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the command is gone
            return
        if job is None:
            return
        tasks, keep = job
        reported = 0

        def on_step(done: int) -> None:
            nonlocal reported
            with steps_done.get_lock():
                steps_done.value += done - reported
            reported = done

        try:
            records = execute(tasks, on_step, keep, Beat(post))
            reply = ("runs", [(t.path, r) for t, r in zip(tasks, records) if r is not None])
        except UserError as e:
            reply = ("error", e)
        except Exception:  # noqa: BLE001 - a bug: the command shows where it happened
            reply = ("bug", traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the command is gone
            return


def set_threads(threads: int | None) -> None:
    """Fixed per run, never derived from --jobs: the same threads give the same floats."""
    if threads is None:
        return
    try:
        import torch
    except ImportError:  # make_gpt reports it, with its fix, when the run starts
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    # under torchrun, a machine's ranks take one GPU each (untested: no GPU here)
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank) % torch.cuda.device_count())


def execute(
    tasks: list[Task], on_step=None, keep: list[bool] | None = None, beat=None
) -> list[dict | None]:
    """Run `tasks` (one run, or a stack's runs) and save each that `keep` says (default: all);
    returns those runs' records, None for the others. `on_step(steps_done)` now and then, with
    the training steps done so far summed over the runs; `beat()` as the work progresses
    (every step, and as evaluations read their documents: see `stall`)."""
    keep = keep or [True] * len(tasks)
    if beat is not None:
        beat()
    if len(tasks) == 1:
        records = run(tasks[0], _every(on_step, beat), beat)
    else:
        records = run_stack(tasks, on_step, beat)
    for task, rec, wanted in zip(tasks, records, keep):
        if wanted:
            save(task.path, rec)
    if on_step is not None:
        on_step(sum(t.train.steps for t in tasks))  # a diverged run's steps count as done
    return [rec if wanted else None for rec, wanted in zip(records, keep)]


def _every(on_step, beat=None):
    """A `train` step callback that beats every step and reports every PROGRESS_EVERY
    steps."""
    if on_step is None and beat is None:
        return None

    def callback(step: int, loss: float) -> None:
        if beat is not None:
            beat()
        if on_step is not None and step % PROGRESS_EVERY == 0:
            on_step(step)

    return callback


def run(task: Task, on_step=None, on_progress=None) -> list[dict]:
    """One run alone, exactly as `microgpt train` runs it (`on_progress`: see `train`)."""
    start = time.perf_counter()
    try:
        config, prep = _prepare(task)
        study = in_study(task, prep)
        gpt, result = train(
            task.mode,
            config,
            task.train,
            prep,
            task.tensor,
            on_step=on_step,
            study=study,
            on_progress=on_progress,
        )
    except PeerError:  # another rank failed: not this run's doing
        raise
    except UserError as e:  # say which run, e.g. which design diverged
        raise UserError(f"{task.label}, seed {task.seed}: {e}") from None
    return [record(task, config, prep, result, environment(gpt), time.perf_counter() - start)]


def run_stack(tasks: list[Task], on_step=None, on_progress=None) -> list[dict]:
    """The runs of a stack (one shape; seeds and learning rates may differ) trained as one
    computation (`train.train_stack`): each record is its run's, as alone, plus the stack's
    size. A run that diverges is recorded as diverged; its neighbours go on."""
    from microgpt.tensor import TensorGPT  # noqa: F401 (torch, or how to install it)

    start = time.perf_counter()
    try:
        prepared = [_prepare(task) for task in tasks]
    except UserError as e:
        raise UserError(f"{tasks[0].label}: {e}") from None
    config = prepared[0][0]
    preps = [prep for _, prep in prepared]
    done = [0]  # steps done, summed over the runs

    def step_done(step: int, runs: int) -> None:
        done[0] += runs
        if on_progress is not None:
            on_progress()
        if on_step is not None and step % PROGRESS_EVERY == 0:
            on_step(done[0])

    try:
        studies = [in_study(task, prep) for task, prep in zip(tasks, preps)]
    except UserError as e:
        raise UserError(f"{tasks[0].label}: {e}") from None
    trains = [t.train for t in tasks]
    try:
        results = train_stack(
            config, trains, preps, tasks[0].tensor, step_done, studies, on_progress=on_progress
        )
    except PeerError:  # another rank failed: not this stack's doing
        raise
    except UserError as e:  # say which stack, e.g. whose design file failed
        raise UserError(f"{tasks[0].label}: {e}") from None
    env = environment(_Placed(tasks[0].tensor))
    wall = time.perf_counter() - start
    out = []
    for task, prep, result in zip(tasks, preps, results):
        rec = record(task, config, prep, result, env, wall / len(tasks))
        rec["stack_size"] = len(tasks)
        out.append(rec)
    return out


class _Placed:
    """What `environment` reads of a model: where it resolved --device."""

    def __init__(self, options):
        from microgpt.tensor.device import resolve

        self.placement = resolve(options)


def in_study(task: Task, prep) -> InStudy:
    """What `task` records beyond `microgpt train` (see the module's docstring): in a sweep,
    the halves `sweep.split_halves(n, seed)` of its first n = val_docs held-out documents,
    seeded by its seed (so every design and rate of one seed is evaluated on the same halves)."""
    halves = None
    if task.lr is not None:
        halves = split_halves(min(task.train.val_docs, len(prep.split.val)), task.seed)
    return InStudy(halves, task.log_every, DIAGNOSTIC_DOCS)


def _prepare(task: Task):
    config, prep = prepare(task.input_path, task.model_args, task.train, task.design_run)
    if prep.fingerprint != task.fingerprint:
        raise UserError(f"input {task.input_path} changed while the ablation ran: run again")
    return config, prep


def record(task: Task, config, prep, result, env: dict, wall: float) -> dict:
    """A run's record: its settings, figures and per-step losses. A diverged run: `diverged`
    {step, last_loss, reason}; after a non-finite loss, the losses up to it and no end figures
    (reason "non-finite"); a run whose last tenth of steps averaged above the loss at
    initialisation keeps its figures (reason "above init")."""
    ended = result.diverged
    out = {
        "settings": task.settings,
        "level": task.level.flags(),
        "switches": task.design.switches(),
        "axes": task.design.flags(),  # every design axis it has, the switches too
        "seed": task.seed,
        "learning_rate": task.train.learning_rate,
        "params": config.num_params() if result.params is None else result.params,
        "final_loss": None if ended else result.losses[-1],
        "val_loss": result.val_loss,
        "val_docs": min(task.train.val_docs, len(prep.split.val)),
        "val_loss_per_token": result.val_loss_per_token,
        "val_tokens": result.val_tokens,
        "steps_per_s": result.steps_per_s,
        "tokens_per_s": result.tokens_per_s,
        "train_seconds": result.seconds,
        "wall_seconds": wall,
        "data_order": data_order(prep.split.train, prep.split.val),
        "model_config": config.to_dict(),
        "train_config": task.train.to_dict(),
        "environment": env,
        "diverged": None,
        "losses": result.losses,
    }
    if ended:
        out["diverged"] = {"step": ended[0], "last_loss": ended[1], "reason": "non-finite"}
    else:
        verdict = diverged(result.losses, loss_at_init(config.vocab_size, task.train.z_loss))
        if verdict.diverged:
            out["diverged"] = {
                "step": verdict.step,
                "last_loss": verdict.last_finite_loss,
                "reason": "above init",
            }
    if task.lr is not None:
        sel, rep = split_halves(out["val_docs"], task.seed)
        out["halves"] = {"of": out["val_docs"], "seed": task.seed, "selection": len(sel),
                         "report": len(rep)}  # fmt: skip
        out["selection_loss"], out["report_loss"] = result.halves or (None, None)
    if task.log_every:
        docs = min(DIAGNOSTIC_DOCS, len(prep.split.val))
        out["diagnostics"] = diagnostics(result.diagnostics, task.log_every, docs)
    return out


def diagnostics(samples: list[tuple], every: int, docs: int) -> dict:
    """A run's diagnostic samples (step, largest attention logit, output logits' mean and max)
    as lists; a non-finite value as None (JSON has no NaN). A design file whose forward calls
    no attention block records no attention logit: `max_attention_logit` is then None."""

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    steps = [s[0] for s in samples]
    out = {"every": every, "docs": docs, "steps": steps}
    for k, name in enumerate(("max_attention_logit", "logit_mean", "logit_max"), start=1):
        out[name] = [finite(s[k]) if s[k] is not None else None for s in samples]
    if samples and all(s[1] is None for s in samples):
        out["max_attention_logit"] = None  # not recorded, which is not non-finite
    return out


def save(path: str, record: dict) -> None:
    tensorfile.write_atomic(path, json_text(record))


def data_order(train_docs: list[str], val_docs: list[str]) -> str:
    """A hash of the training documents in step order and of the held-out ones."""
    text = "\n".join(train_docs) + "\0" + "\n".join(val_docs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
