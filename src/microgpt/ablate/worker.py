"""One ablation run, in whatever process does it: a pool worker or the command itself.

A run is `prepare` + `train` (the same code as `microgpt train`), timed, and saved to its own
JSON file atomically as soon as it finishes, so that a kill loses only the runs in flight. This
module is what a spawned worker imports: keep its imports small (torch only in tensor mode).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from microgpt import tensorfile
from microgpt.ablate.plan import Task
from microgpt.environment import environment
from microgpt.errors import PeerError, UserError
from microgpt.train import prepare, train

PROGRESS_EVERY = 25  # steps between updates of the shared step counter

_steps_done = None  # a multiprocessing.Value shared with the parent, set by `init`


def init(threads: int | None, steps_done) -> None:
    """Pool initializer: leave Ctrl-C to the parent, fix torch's threads before any work."""
    global _steps_done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _steps_done = steps_done
    set_threads(threads)


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


def run_task(task: Task) -> tuple[str, dict]:
    """The pool's entry point: run, save, and count steps for the parent's progress line."""
    reported = 0

    def on_step(step: int, loss: float) -> None:
        nonlocal reported
        if step % PROGRESS_EVERY == 0 or step == task.train.steps:
            with _steps_done.get_lock():
                _steps_done.value += step - reported
            reported = step

    return task.path, execute(task, on_step if _steps_done is not None else None)


def execute(task: Task, on_step=None) -> dict:
    record = run(task, on_step)
    save(task.path, record)
    return record


def run(task: Task, on_step=None) -> dict:
    start = time.perf_counter()
    try:
        config, prep = prepare(task.input_path, task.model_args, task.train)
        if prep.fingerprint != task.fingerprint:
            raise UserError(f"input {task.input_path} changed while the ablation ran: run again")
        gpt, result = train(task.mode, config, task.train, prep, task.tensor, on_step=on_step)
    except PeerError:  # another rank failed: not this run's doing
        raise
    except UserError as e:  # say which run, e.g. which design diverged
        raise UserError(f"{task.label}, seed {task.seed}: {e}") from None
    wall = time.perf_counter() - start
    return {
        "settings": task.settings,
        "level": task.level.flags(),
        "switches": task.design.flags(),
        "seed": task.seed,
        "params": config.num_params(),
        "final_loss": result.losses[-1],
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
        "environment": environment(gpt),
        "losses": result.losses,
    }


def save(path: str, record: dict) -> None:
    tensorfile.write_atomic(path, (json.dumps(record, indent=1) + "\n").encode())


def data_order(train_docs: list[str], val_docs: list[str]) -> str:
    """A hash of the training documents in step order and of the held-out ones."""
    text = "\n".join(train_docs) + "\0" + "\n".join(val_docs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
