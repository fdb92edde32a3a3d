"""A study shared out over torchrun's ranks, on one machine or several, shared `--out` or not.

Each run is still one process's deterministic run (the same code, threads and numbers as in one
process); what the ranks share is the list of runs, and their results travel over
torch.distributed as JSON, so no rank needs to see another's files:

1. every rank reads the run files it has in its own `--out` and tells rank 0 their names;
2. rank 0 asks for the ones it lacks (each from one rank), saves them, decides what is missing
   and deals out the stacks that hold a missing run (`runner.stacks_to_train`; single runs in
   scalar mode or with --no-stack): rank r takes stacks[r::ranks];
3. every rank trains its share (with `--jobs` local workers), saving each run file in its own
   `--out` as it finishes, so that a crash keeps it; only progress counts cross the network
   meanwhile (`Group.beat`): a rank that dies, or makes no progress for `--stall-timeout`
   seconds, stops the others;
4. a patient gather (a gloo group with a month's timeout: the ranks finish minutes apart) brings
   the new runs to rank 0, which saves those it lacks and writes the report.

So rank 0's `--out` ends complete, and the same command resumes after a failure, on any number of
ranks: each rank's files count wherever they lie.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from microgpt.ablate import worker
from microgpt.ablate.plan import Study, Task
from microgpt.ablate.progress import RunsProgress
from microgpt.ablate.runner import Outcome, load_saved, run_tasks, stacks_to_train
from microgpt.distributed import Group
from microgpt.errors import UserError


def run_shared(
    study: Study, out_dir: str | Path, jobs: int, group: Group, stream: TextIO
) -> Outcome:
    """`runner.run_study` over the ranks of `group`; the Outcome's records are rank 0's alone
    (the other ranks get theirs only)."""
    world = group.world
    hashes = group.gather_json(study.settings_hash())  # the same flags, code, torch and data?
    group.on_main(lambda: _check_same(hashes))
    tasks = study.tasks(out_dir)
    by_name = {Path(t.path).name: t for t in tasks}
    records = {}  # path -> record, this rank's
    for task in tasks:
        saved = load_saved(task)
        if saved is not None:
            records[task.path] = saved

    # 1-2: rank 0 learns what each rank holds and asks for what it lacks
    held = group.gather_json([Path(p).name for p in records])
    plan = None
    if world.main:
        wanted: list[list[str]] = [[] for _ in range(world.size)]
        asked = {Path(p).name for p in records}
        for rank, names in enumerate(held):
            for name in names:
                if name in by_name and name not in asked:
                    wanted[rank].append(name)
                    asked.add(name)
        missing = [t for t in tasks if Path(t.path).name not in asked]
        todo = stacks_to_train(study, tasks, {t.path for t in missing}, jobs, stream)
        by_rank = [todo[r :: world.size] for r in range(world.size)]
        deal = [[[Path(t.path).name for t in stack] for stack in mine] for mine in by_rank]
        plan = {"wanted": wanted, "deal": deal, "missing": [Path(t.path).name for t in missing]}
    plan = group.broadcast_json(plan)
    mine = {Path(p).name: r for p, r in records.items()}
    sent = group.gather_json({n: mine[n] for n in plan["wanted"][world.rank]})
    received = _keep(sent, by_name, records) if world.main else 0
    reused = len(records)
    missing = len(plan["missing"])
    to_train = {by_name[n].path for n in plan["missing"]}
    mine = [[by_name[n] for n in stack] for stack in plan["deal"][world.rank]]
    my_missing = [t for stack in mine for t in stack if t.path in to_train]
    if world.main and reused:
        more = f" ({received} of them from the other ranks)" if received else ""
        print(f"reusing {reused} finished runs{more}", file=stream, flush=True)
    if world.main and missing:
        print(
            f"{world.size} ranks share the {missing} runs to train: rank 0 trains "
            f"{len(my_missing)}, the progress below is its own",
            file=stream,
            flush=True,
        )

    # 3: this rank's share, no collective meanwhile
    steps = sum(t.train.steps for stack in mine for t in stack)
    progress = RunsProgress(len(my_missing), 0, steps, stream)
    with group.apart():  # a rank that dies or stalls meanwhile stops the others
        workers = run_tasks(
            mine, to_train, study, jobs, records, progress, out_dir, group.stall_timeout, group.beat
        )

    # 4: the new runs to rank 0, however long the others take (still watched for stalls)
    new = {Path(t.path).name: records[t.path] for t in my_missing}
    sent = group.gather_json({"workers": workers, "runs": new}, patient=True)
    if not world.main:
        return Outcome(tasks, [], ran=missing, reused=len(tasks) - missing, workers=workers)
    _keep([s["runs"] for s in sent], by_name, records)
    ordered = [records[t.path] for t in tasks]
    workers = sum(s["workers"] for s in sent)
    return Outcome(tasks, ordered, ran=missing, reused=len(tasks) - missing, workers=workers)


def _check_same(hashes: list[str]) -> None:
    odd = [rank for rank, h in enumerate(hashes) if h != hashes[0]]
    if odd:
        raise UserError(
            f"rank{'s' if len(odd) > 1 else ''} {', '.join(map(str, odd))} would run a different "
            "study than rank 0 (other flags, input, microgpt code or torch version): give every "
            "machine the same command, data and installation"
        )


def _keep(sent: list[dict], by_name: dict[str, Task], records: dict) -> int:
    """Save on rank 0 the runs other ranks sent that it lacks; returns how many."""
    kept = 0
    for rank, runs in enumerate(sent):
        for name, record in runs.items():
            task = by_name[name]
            if task.path in records:
                continue
            finished = len(record["losses"]) == task.train.steps or record.get("diverged")
            if record.get("settings") != task.settings or not finished:
                raise UserError(f"rank {rank} sent {name} with other settings than rank 0's")
            worker.save(task.path, record)
            records[task.path] = record
            kept += 1
    return kept
