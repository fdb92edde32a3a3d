"""Run a study's design × seed tasks: reuse the saved ones, run the rest in worker processes.

Workers come from a `spawn` pool (safe with torch, whose threads a plain fork would copy
half-started), each importing only what a run needs and kept for many runs. The runs of a study
cost about the same, so they are handed out one at a time, seed by seed: the workers finish
together, and an interrupted study keeps whole seeds. Torch threads per run are fixed by the
study, not by the number of workers, so results are bit-identical whatever `--jobs` is. With one
worker the runs happen in this process, saving the start-up of a pool.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from microgpt.ablate import worker
from microgpt.ablate.plan import Study, Task
from microgpt.ablate.progress import RunsProgress


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
    if not isinstance(record.get("losses"), list) or len(record["losses"]) != task.train.steps:
        return None
    return record


def dry_run(study: Study, out_dir: str | Path, jobs: int, probe_steps: int = 5) -> str:
    """The plan, without training: every run (saved or to do) and a rough time estimate, from
    `probe_steps` timed steps of the baseline design at each level in this process."""
    import time

    from microgpt.modes import make_gpt
    from microgpt.schedule import lr_at
    from microgpt.train import prepare, token_data

    tasks = study.tasks(out_dir)
    todo = [t for t in tasks if load_saved(t) is None]
    lines = [f"{'run':<60}  state"]
    lines += [f"{Path(t.path).stem:<60}  {'to run' if t in todo else 'saved'}" for t in tasks]
    seconds_per_step = {}
    worker.set_threads(_threads(study))
    for task in tasks:
        if task.level in seconds_per_step or task.design != study.baseline:
            continue
        config, prep = prepare(task.input_path, task.model_args, task.train)
        gpt = make_gpt(task.mode, config, prep.weights, task.train, task.tensor)
        docs = token_data(prep, task.train, config.block_size)[0](0)  # the first step's
        gpt.train_step(docs, lr_at(0, task.train))  # warm-up
        start = time.perf_counter()
        for _ in range(probe_steps):
            gpt.train_step(docs, lr_at(0, task.train))
        seconds_per_step[task.level] = (time.perf_counter() - start) / probe_steps
    work = sum(t.train.steps * seconds_per_step[t.level] for t in todo)
    workers = max(1, min(jobs, len(todo)))
    lines.append("")
    lines.append(
        f"{len(todo)} of {len(tasks)} runs to train; about {work / workers:.0f} s with {workers} "
        f"worker{'s' if workers > 1 else ''} (from {probe_steps} timed steps of the baseline at "
        "each level; validation and start-up not included)"
    )
    return "\n".join(lines)


def run_study(
    study: Study, out_dir: str | Path, jobs: int, stream: TextIO | None = None
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

    missing.sort(key=lambda t: study.seeds.index(t.seed))  # seed by seed, designs in order
    progress = RunsProgress(len(tasks), len(records), sum(t.train.steps for t in missing), stream)
    workers = run_tasks(missing, study, jobs, records, progress, out_dir)
    ordered = [records[t.path] for t in tasks]
    reused = len(tasks) - len(missing)
    return Outcome(tasks, ordered, ran=len(missing), reused=reused, workers=workers)


def run_tasks(
    tasks: list[Task],
    study: Study,
    jobs: int,
    records: dict,
    progress: RunsProgress,
    out_dir: str | Path,
) -> int:
    """Run `tasks` in up to `jobs` workers (in order), each saved as it finishes and added to
    `records` (by path); returns the number of workers."""
    workers = min(jobs, len(tasks))
    try:
        if workers == 1:
            _run_here(tasks, study, records, progress)
        elif workers > 1:
            _run_pool(tasks, study, workers, records, progress)
    except KeyboardInterrupt:
        progress.close()
        print(
            f"{len(records)} finished runs are saved in {out_dir}: "
            "run the same command again to resume",
            file=progress.stream,
            flush=True,
        )
        raise
    progress.close()
    return workers


def _threads(study: Study) -> int | None:
    return study.tensor.threads if study.tensor else None


def _run_here(tasks: list[Task], study: Study, records: dict, progress: RunsProgress) -> None:
    worker.set_threads(_threads(study))
    done = 0
    for task in tasks:

        def on_step(step: int, loss: float, before: int = done) -> None:
            progress.tick(before + step)

        records[task.path] = worker.execute(task, on_step)
        done += task.train.steps
        progress.run_done(done)


def _run_pool(
    tasks: list[Task], study: Study, workers: int, records: dict, progress: RunsProgress
) -> None:
    ctx = multiprocessing.get_context("spawn")
    steps_done = ctx.Value("q", 0)
    with ctx.Pool(workers, worker.init, (_threads(study), steps_done)) as pool:
        results = pool.imap_unordered(worker.run_task, tasks, chunksize=1)
        for _ in tasks:
            while True:
                try:
                    path, record = results.next(timeout=0.2)
                    break
                except multiprocessing.TimeoutError:
                    progress.tick(steps_done.value)
            records[path] = record
            progress.run_done(steps_done.value)
