"""Run a study's design × seed tasks: reuse the saved ones, run the rest in worker processes.

In tensor mode the runs that differ only in seed (or learning rate) are trained in stacks, as one
computation (`plan.stacks`, `train.train_stack`): a worker is handed a stack, not a run, and
saves each of its runs when the stack ends. Scalar mode and `--no-stack` hand out single runs,
seed by seed, so an interrupted study keeps whole seeds.

Workers are `spawn`ed processes (safe with torch, whose threads a plain fork would copy
half-started), each importing only what a run needs and kept for many stacks. Torch threads per
run are fixed by the study, and stacks by `--stack-size` and the settings, never by the number of
workers, so results are bit-identical whatever `--jobs` is. With one worker the stacks run in
this process, saving the start-up of the workers.

Each worker reports its progress as it works (`stall`); one that reports none for
`--stall-timeout` seconds (stopped, or hung in a deadlock) or dies ends the study with one line
that names it and its stack; the runs finished so far are saved, and the same command resumes.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from microgpt.ablate import worker
from microgpt.ablate.plan import Study, Task, run_bytes, stack_key, stack_split, stacks
from microgpt.ablate.progress import RunsProgress
from microgpt.errors import UserError
from microgpt.stall import STALL_TIMEOUT_S


@dataclass(frozen=True)
class Outcome:
    tasks: list[Task]  # in the study's order (level, design, seed)
    records: list[dict]  # one per task, in the same order
    ran: int
    reused: int
    workers: int


def load_saved(task: Task) -> dict | None:
    """The saved record of `task` if it finished with exactly the same settings."""
    try:
        record = json.loads(Path(task.path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("settings") != task.settings:
        return None
    if not isinstance(record.get("losses"), list):
        return None
    if len(record["losses"]) != task.train.steps and not record.get("diverged"):
        return None
    return record


def dry_run(study: Study, out_dir: str | Path, jobs: int, probe_steps: int = 5) -> str:
    """The plan, without training: every stack (or run) to train and every saved run, with its
    design's parameter count and a rough time, from `probe_steps` timed steps of the first
    stack of each kind (its key, `plan.stack_key`, and size: Muon's steps cost more than
    AdamW's, a design file's more than the built-in net's), in this process; and what splits
    the stacks."""
    tasks = study.tasks(out_dir)
    todo = [t for t in tasks if load_saved(t) is None]
    to_run = stacks_to_train(study, tasks, {t.path for t in todo}, jobs, io.StringIO())
    seconds_per_step = {}  # (stack key, stack size) -> seconds a step of the stack
    worker.set_threads(_threads(study))
    for stack in to_run:
        key = (stack_key(stack[0]), len(stack))
        if key not in seconds_per_step:
            seconds_per_step[key] = _probe(stack, probe_steps)
    names = [_stack_name(stack) for stack in to_run]
    width = max([64, *(len(name) + 2 for name in names)])
    lines = [f"{'to train':<{width}}  runs  {'params':>7}  about"]
    work = 0.0
    for stack, name in zip(to_run, names):
        seconds = stack[0].train.steps * seconds_per_step[stack_key(stack[0]), len(stack)]
        work += seconds
        params = f"{stack[0].params:,}" if stack[0].params is not None else "-"
        lines.append(f"{name:<{width}}  {len(stack):>4}  {params:>7}  {seconds:.1f} s")
    saved = [t for t in tasks if t not in todo]
    if saved:
        lines += ["", f"saved ({len(saved)}):"]
        lines += [f"{Path(t.path).stem}" for t in saved]
    workers = max(1, min(jobs, len(to_run)))
    in_stacks = ""
    if any(len(s) > 1 for s in to_run):
        in_stacks = f", in {len(to_run)} stack{'s' if len(to_run) > 1 else ''}"
    lines.append("")
    if study.stack > 1:
        split, within = stack_split(study)
        lines.append(
            f"stacks split by: {', '.join(split) or 'nothing that varies'}; "
            f"within a stack the runs differ in: {', '.join(within)}"
        )
    lines.append(
        f"{len(todo)} of {len(tasks)} runs to train{in_stacks}; about "
        f"{work / workers:.0f} s with {workers} worker{'s' if workers > 1 else ''} (from "
        f"{probe_steps} timed steps of each kind of stack; validation and start-up not "
        "included)"
    )
    return "\n".join(lines)


def _stack_name(stack: list[Task]) -> str:
    """Its first run's file name, and for several runs what names its last after what the
    two share: `run-qk-norm-seed0 … seed4`, `run-adamw-lr0.001-seed0 … lr0.1-seed4`."""
    first, last = stack[0].parts, stack[-1].parts
    name = Path(stack[0].path).stem
    if len(stack) == 1:
        return name
    same = next(i for i, (a, b) in enumerate(zip(first, last)) if a != b)
    return f"{name} … {'-'.join(last[same:])}"


def _probe(tasks: list[Task], steps: int) -> float:
    """Seconds a training step of `tasks` takes (one run, or them as a stack), timed here: the
    training loop's own time (`train.Loop`) for `steps` steps after a warm-up step."""
    from dataclasses import replace

    from microgpt.train import open_loop, prepare

    prepared = [prepare(t.input_path, t.model_args, t.train, t.design_run) for t in tasks]
    trains = [replace(t.train, steps=max(t.train.steps, steps + 1)) for t in tasks]
    preps = [prep for _, prep in prepared]
    loop = open_loop(tasks[0].mode, prepared[0][0], trains, preps, tasks[0].tensor)
    loop.train(0, 1)  # warm-up
    warm = loop.seconds
    loop.train(1, steps + 1)
    return (loop.seconds - warm) / steps


def run_study(
    study: Study,
    out_dir: str | Path,
    jobs: int,
    stream: TextIO | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
) -> Outcome:
    stream = stream or sys.stdout
    tasks = study.tasks(out_dir)
    records: dict[str, dict] = {}
    missing = []
    for task in tasks:
        saved = load_saved(task)
        if saved is not None:
            records[task.path] = saved
        else:
            missing.append(task)
    if records:
        print(f"reusing {len(records)} finished runs from {out_dir}", file=stream, flush=True)
    stale = sum(Path(t.path).exists() for t in missing)
    if stale:
        note = f"{stale} saved runs have other settings or are unreadable: running them again"
        print(note, file=stream, flush=True)

    paths = {t.path for t in missing}
    todo = stacks_to_train(study, tasks, paths, jobs, stream)
    steps = sum(t.train.steps for stack in todo for t in stack)
    progress = RunsProgress(len(tasks), len(records), steps, stream)
    workers = run_tasks(todo, paths, study, jobs, records, progress, out_dir, stall_timeout)
    ordered = [records[t.path] for t in tasks]
    reused = len(tasks) - len(missing)
    return Outcome(tasks, ordered, ran=len(missing), reused=reused, workers=workers)


def stacks_to_train(
    study: Study, tasks: list[Task], missing: set[str], jobs: int, stream: TextIO
) -> list[list[Task]]:
    """The stacks that hold a missing run (by path). Stacks are made over all the study's runs,
    seed by seed (`plan.stacks`), whatever is saved, so the same command always makes the same
    stacks; a stack with some runs saved is trained whole, and only its missing runs are kept,
    so that they come out exactly as in an uninterrupted study (in float32 a run's last digits
    depend on its stack). Scalar mode and --no-stack: each missing run alone."""
    size = fit_in_memory(study, [t for t in tasks if t.path in missing], jobs, stream)
    order = sorted(tasks, key=lambda t: study.seeds.index(t.seed))  # seed by seed
    return [stack for stack in stacks(order, size) if any(t.path in missing for t in stack)]


def run_tasks(
    todo: list[list[Task]],
    missing: set[str],
    study: Study,
    jobs: int,
    records: dict,
    progress: RunsProgress,
    out_dir: str | Path,
    stall_timeout: float = STALL_TIMEOUT_S,
    beat=None,
) -> int:
    """Train the stacks `todo` in up to `jobs` workers (in order); as each stack finishes, save
    its runs in `missing` (paths) and add them to `records`. A worker silent for
    `stall_timeout` seconds, or one that dies, ends them with a `UserError`. `beat()` (under
    torchrun, the rank's `Group.beat`) as the work progresses. Returns the number of workers."""
    workers = min(jobs, len(todo))
    resume = f"{{}} finished runs are saved in {out_dir}: run the same command again to resume"
    try:
        if workers == 1:
            _run_here(todo, missing, study, records, progress, beat)
        elif workers > 1:
            _run_pool(todo, missing, study, workers, records, progress, stall_timeout, beat)
    except KeyboardInterrupt:
        progress.close()
        print(resume.format(len(records)), file=progress.stream, flush=True)
        raise
    except WorkerError as e:
        progress.close()
        raise UserError(f"{e}; {resume.format(len(records))}") from None
    except UserError as e:  # a run's error (its design file's code failed, say)
        progress.close()
        raise type(e)(f"{e}; {resume.format(len(records))}") from None
    progress.close()
    return workers


class WorkerError(Exception):
    """A worker that stalled or died: the study stops (`run_tasks` says what is saved)."""


def fit_in_memory(study: Study, tasks: list[Task], jobs: int, stream: TextIO) -> int:
    """The study's stack size, or a smaller one (said in one line) if `jobs` stacks of it at
    once would not fit in the memory free now (the GPU's, or the machine's)."""
    size = study.stack
    if size <= 1 or not tasks:
        return size
    need = max(run_bytes(t.model_args, study.vocab_size, t.train, t.tensor.dtype) for t in tasks)
    concurrent = min(jobs, len(stacks(tasks, size)))
    free = free_memory(study.tensor.device)
    if free is None or need * size * concurrent <= free:
        return size
    fits = max(1, int(free // (need * concurrent)))
    print(
        f"stacks of {size} runs would need about {need * size * concurrent / 2**30:.1f} GiB, "
        f"more than the {free / 2**30:.1f} GiB free: splitting them into stacks of {fits}",
        file=stream,
        flush=True,
    )
    return fits


def free_memory(device: str) -> int | None:
    """Bytes free now on the study's device: CUDA's free memory, else the machine's available
    memory (/proc/meminfo); None if unknown."""
    if device in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _threads(study: Study) -> int | None:
    return study.tensor.threads if study.tensor else None


def _run_here(
    todo: list[list[Task]],
    missing: set[str],
    study: Study,
    records: dict,
    progress: RunsProgress,
    beat=None,
) -> None:
    worker.set_threads(_threads(study))
    done = 0
    for stack in todo:

        def on_step(steps_done: int, before: int = done) -> None:
            progress.tick(before + steps_done)

        keep = [t.path in missing for t in stack]
        done += sum(t.train.steps for t in stack)
        for task, record in zip(stack, worker.execute(stack, on_step, keep, beat)):
            if record is not None:
                records[task.path] = record
                progress.run_done(done)


def _run_pool(
    todo: list[list[Task]],
    missing: set[str],
    study: Study,
    workers: int,
    records: dict,
    progress: RunsProgress,
    stall_timeout: float,
    beat=None,
) -> None:
    """The stacks over `workers` processes, each with a pipe of its own (`worker.serve`), so
    that this process knows which worker trains which stack: it hands the next stack to the
    first idle worker, and watches each busy worker's time of last progress in shared memory.
    (A `multiprocessing.Pool` shares one task queue: a worker stopped while holding its lock
    would starve the others unseen, and the pool could not be closed past it.)"""
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    steps_done = ctx.Value("q", 0)
    beats = ctx.Array("d", workers, lock=False)  # each worker's time of last progress
    procs, conns = [], []
    try:
        for i in range(workers):
            here, there = ctx.Pipe()
            args = (there, _threads(study), steps_done, beats, i)
            proc = ctx.Process(target=worker.serve, args=args, daemon=True)
            proc.start()
            there.close()
            procs.append(proc)
            conns.append(here)
        jobs = deque((stack, [t.path in missing for t in stack]) for stack in todo)
        running: dict[int, list[Task]] = {}  # worker -> the stack it trains
        forwarded = 0.0  # the latest progress passed on to `beat`
        while jobs or running:
            for i in range(workers):
                if i not in running and jobs:
                    stack, keep = jobs.popleft()
                    beats[i] = time.monotonic()
                    running[i] = stack
                    _send(conns[i], (stack, keep), procs[i], stack)
            ready = wait([conns[i] for i in running], timeout=0.2)
            for i in [i for i in running if conns[i] in ready]:
                stack = running.pop(i)
                for path, record in _receive(conns[i], procs[i], stack):
                    records[path] = record
                    progress.run_done(steps_done.value)
            now = time.monotonic()
            for i, stack in running.items():
                if now - beats[i] > stall_timeout:
                    raise WorkerError(
                        f"worker {procs[i].pid} (training {_what(stack)}) made no progress for "
                        f"{stall_timeout:g} s: it is stopped or hung (--stall-timeout), so the "
                        "study stops"
                    )
            latest = max((beats[i] for i in running), default=0.0)
            if beat is not None and latest > forwarded:
                forwarded = latest
                beat()
            progress.tick(steps_done.value)
    finally:  # every result is in (or lost with an error): no worker holds anything more
        for proc in procs:
            proc.kill()  # SIGKILL, the one signal a stopped worker obeys; faster than an exit
        for proc in procs:
            proc.join()
        for conn in conns:
            conn.close()


def _send(conn, job, proc, stack: list[Task]) -> None:
    try:
        conn.send(job)
    except OSError:
        raise WorkerError(_died(proc, stack)) from None


def _receive(conn, proc, stack: list[Task]) -> list[tuple[str, dict]]:
    """A worker's runs (path, record) for `stack`; its error raised here."""
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        raise WorkerError(_died(proc, stack)) from None
    if kind == "error":
        raise value
    if kind == "bug":
        raise RuntimeError(f"a worker failed while training {_what(stack)}:\n{value}")
    return value


def _died(proc, stack: list[Task]) -> str:
    proc.join(timeout=1)
    code = proc.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return f"worker {proc.pid} (training {_what(stack)}) died ({how}), so the study stops"


def _what(stack: list[Task]) -> str:
    """The runs of a stack in words: its first run's label, and the seeds (runs of
    consecutive seeds as a range)."""
    labels = list(dict.fromkeys(t.label for t in stack))
    seeds = sorted({t.seed for t in stack})
    spans = []  # [first, last]
    for seed in seeds:
        if spans and seed == spans[-1][1] + 1:
            spans[-1][1] = seed
        else:
            spans.append([seed, seed])
    more = f" and {len(labels) - 1} more" if len(labels) > 1 else ""
    s = "s" if len(seeds) > 1 else ""
    said = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)
    return f"{labels[0]}{more}, seed{s} {said}"
