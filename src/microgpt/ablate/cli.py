"""`microgpt ablate`: designs × numeric levels × seeds, compared paired by seed.

Each (level, design, seed) run is `microgpt train` with those settings; seed s gives every
design the same train/validation split and data order. `--vary` picks what varies (default: the
seed's four designs, `config.DEFAULT_VARY`). Finished runs are saved one by one in --out,
whose default name is derived from the settings, so running the same command again resumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from microgpt.ablate.plan import AXES, LEVELS
from microgpt.config import DEFAULT_VARY, TENSOR_DTYPES, ModelConfig, TrainConfig, number_text
from microgpt.environment import environment
from microgpt.errors import UserError
from microgpt.flags import (
    MODES,
    SIZE_FLAGS,
    add_config_flag,
    add_distributed_flags,
    add_model_flags,
    add_train_flags,
    int_at_least,
    model_args,
    positive_number,
    tensor_options,
    train_args,
)
from microgpt.stall import STALL_TIMEOUT_S

DEFAULT_SEEDS = 5


def add_ablate_parser(sub) -> None:
    a = sub.add_parser(
        "ablate",
        help="compare designs (and sizes) over seeds, paired by seed",
        description="Train every design of a study on the same seeds, data split and data "
        "order; print a table of losses and speed with the seed spread, and each design's "
        "validation loss against the baseline (the varied switches and settings at their "
        "reference or flag values) "
        "with paired t-intervals, Holm-adjusted when there are several. Default: the seed's "
        f"four designs ({' × '.join(DEFAULT_VARY)}). Writes results.json, results.csv, "
        "loss_curves.png and report.html (all of it on one page) to --out; finished runs are "
        "saved as they complete and reused when the same command runs again.",
    )
    add_config_flag(a)
    g = a.add_argument_group("what varies")
    g.add_argument(
        "--vary",
        action="append",
        metavar="NAME[=V1,V2,...]",
        help=f"a design axis, any switch or training setting ({', '.join(AXES)}): a switch, "
        "a name or a yes/no over all its values unless listed, a number over its list; or a "
        f"level ({', '.join(LEVELS)}), a list required; or a design file's setting, "
        "NAME.SETTING=V1,V2,... (NAME: the file's name); repeatable. A design axis's flag, "
        "given too, names the baseline's value, one of the listed "
        f"(default: {' '.join('--vary ' + n for n in DEFAULT_VARY)}; with --design, none)",
    )
    g.add_argument(
        "--design",
        action="append",
        metavar="FILE",
        help="a design file of your own (docs/designs.md): one more design, against the "
        "built-in model, crossed with the design axes that vary (each switch one the file "
        "honours), levels, seeds and learning rates; checked in float64 before any run; "
        "repeatable. Its settings vary as --vary NAME.SETTING=V1,V2 (NAME: the file's name). "
        "It runs your code: load only files you trust",
    )
    g.add_argument(
        "--design-setting",
        action="append",
        metavar="NAME.SETTING=VALUE",
        help="a design file's setting at a value of your own for every run (default: the "
        "file's); repeatable",
    )
    g.add_argument(
        "--lr-sweep",
        metavar="LO:HI:K|LR,LR,...",
        help="train every design (and level) at every learning rate of a grid: K log-spaced "
        "rates from LO to HI (e.g. 1e-4:1:9), or a list; each design is then compared at its "
        "own best rate, chosen on one half of the held-out documents and reported on the "
        "other, with its LR sensitivity (see docs/ablate.md)",
    )
    g.add_argument(
        "--plan",
        choices=("full", "one-at-a-time"),
        default="full",
        help="full: every combination of the varied design axes (default); one-at-a-time: "
        "the baseline plus each value of each axis changed alone. Levels are always crossed",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs and an estimate of the time they take, then stop",
    )
    g = a.add_argument_group("runs")
    seeds = g.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", type=int_at_least(1), metavar="K", help=f"seeds 0..K-1 (default {DEFAULT_SEEDS})"
    )
    seeds.add_argument("--seed-list", type=_seed_list, metavar="S,S,...", help="e.g. 3,7,11")
    g.add_argument(
        "--jobs",
        type=int_at_least(1),
        metavar="J",
        help=f"worker processes (default: one per core, {os.cpu_count()} here)",
    )
    g.add_argument(
        "--stall-timeout",
        type=positive_number,
        metavar="S",
        default=STALL_TIMEOUT_S,
        help="a worker process, or under torchrun a rank, that makes no progress (training "
        "steps, evaluated documents) for S seconds is stopped or hung: the study stops with a "
        "line naming it, keeping every finished run (default %(default)g, far above any "
        "silence of a healthy study; raise it for models whose single step takes minutes; "
        "inf: never). "
        "Under torchrun, --dist-timeout limits the meetings and collectives, this the work "
        "between them",
    )
    stacking = g.add_mutually_exclusive_group()
    stacking.add_argument(
        "--stack-size",
        type=int_at_least(1),
        metavar="N",
        help="tensor mode: train up to N runs that differ only in seed (or learning rate) as "
        "one computation, a stack (default: as many as fit a working set of about 16 MiB on a "
        "CPU or a quarter of the GPU's memory; split further if they would not fit in the "
        "memory free)",
    )
    stacking.add_argument(
        "--no-stack",
        action="store_true",
        help="train every run alone, as before stacks existed (the same numbers bit for bit)",
    )
    g.add_argument(
        "--log-every",
        type=int_at_least(1),
        metavar="K",
        help="tensor mode: sample each run's diagnostics (the largest attention logit, the "
        "output logits' mean and max) every K steps and at the end (default: every tenth of "
        "the steps)",
    )
    g.add_argument(
        "--out",
        metavar="DIR",
        help="results folder (default runs/ablate-<mode>-<hash of the settings>: the same "
        "command finds its finished runs there and runs only the missing ones)",
    )

    g = a.add_argument_group("mode")
    g.add_argument(
        "--mode",
        choices=MODES,
        default="tensor",
        help="scalar (pure Python) or tensor (PyTorch) (default tensor)",
    )
    g.add_argument(
        "--device",
        help="tensor mode: cpu, cuda, mps or auto (default cpu: tiny models run fastest as "
        "parallel single-threaded CPU runs)",
    )
    g.add_argument("--dtype", help="tensor mode: float32, float64 or bfloat16 (default float32)")
    g.add_argument(
        "--threads",
        type=int_at_least(1),
        metavar="N",
        help="tensor mode: torch threads per run (default 1, whatever --jobs is, so results "
        "do not depend on --jobs)",
    )

    add_train_flags(a, seed=False)  # the same for every run
    add_model_flags(a)  # the same for every design, except what varies
    add_distributed_flags(a)
    a.set_defaults(run=cmd_ablate, compile=False)


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be 0 or more, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a seed")
    return seeds


def make_study(args: argparse.Namespace):
    """The study the flags describe; reads the documents (to fingerprint them) and nothing
    else, so every bad flag or input is reported before any run starts."""
    from microgpt.ablate.plan import (
        BUILT_IN,
        FILE_AXIS,
        Study,
        check_study,
        default_stack,
        parse_vary,
        versions,
    )
    from microgpt.train import read_input

    options = tensor_options(args)
    if options is not None:
        options = replace(options, device=args.device or "cpu", threads=args.threads or 1)
        if importlib.util.find_spec("torch") is None:
            raise UserError(
                "tensor mode needs PyTorch: pip install 'microgpt[tensor]', or use --mode scalar"
            )
        if options.dtype not in TENSOR_DTYPES:
            raise UserError(
                f"unknown --dtype {options.dtype!r}: use one of {', '.join(TENSOR_DTYPES)}"
            )
    files, set_files = _design_files(args)
    if files and args.mode != "tensor":
        from microgpt.modes import SCALAR_DESIGN

        raise UserError(SCALAR_DESIGN)
    default_vary = [] if files else list(DEFAULT_VARY)  # design files: against the built-in
    varied = parse_vary(args.vary or default_vary, files)
    if files:
        varied = {FILE_AXIS: (BUILT_IN, *(f.name for f in files)), **varied}
        _given_file_settings(files, set_files, varied)
    fixed_model, fixed_train = model_args(args), train_args(args)
    _yield_recipe(getattr(args, "from_recipe", frozenset()), varied, args.lr_sweep,
                  fixed_model, fixed_train)  # fmt: skip
    lrs = _lr_sweep(args.lr_sweep, varied, fixed_train)
    # the comparisons use the per-document val loss; the per-token pass costs a scalar-mode run
    # several seconds, so a study makes it only when --eval-docs asks
    fixed_train.setdefault("eval_docs", 0)
    given = _given(varied, fixed_model, fixed_train)
    defaults = ModelConfig(vocab_size=2, **fixed_model)  # validates the flags
    fixed = {k: getattr(defaults, k) for k in SIZE_FLAGS}
    fixed |= {k: v for k, v in defaults.design().items() if k not in varied}
    tc = TrainConfig(**fixed_train)
    if args.log_every and args.mode != "tensor":
        raise UserError("--log-every samples tensor mode's diagnostics: scalar mode has none")
    if lrs and tc.val_docs < 2:
        raise UserError(
            f"--lr-sweep chooses each design's rate on one half of the held-out documents and "
            f"reports it on the other: give --val-docs 2 or more, not {tc.val_docs}"
        )
    seeds = args.seed_list or tuple(range(args.seeds or DEFAULT_SEEDS))
    docs, tokenizer, fingerprint = read_input(args.input, tc.data)
    study = Study(
        mode=args.mode,
        model_args=fixed,
        train=tc,
        tensor=options,
        input_path=args.input,
        fingerprint=fingerprint,
        vocab_size=tokenizer.vocab_size,
        seeds=seeds,
        versions=versions(args.mode),
        varied=varied,
        plan=args.plan,
        lrs=lrs,
        log_every=args.log_every,
        given=given,
        files=files,
    )
    check_study(study)
    if files:
        study = replace(study, checked=_check_files(study, docs, tokenizer))
    if args.mode != "tensor" or args.no_stack:
        return study
    if args.stack_size:
        return replace(study, stack=args.stack_size)
    device = "cpu"  # ablate's default, known without importing torch (1-2 s of every study)
    if options.device != "cpu":
        from microgpt.modes import check_tensor_options

        device = check_tensor_options(options).split(",")[0]  # where it will run: cuda, mps...
    return replace(study, stack=default_stack(study, device))


def _yield_recipe(
    recipe: frozenset, varied: dict, lr_sweep: str | None, fixed_model: dict, fixed_train: dict
) -> None:
    """A `--config` recipe's value gives way to the study's `--vary` (or, for the learning
    rate, `--lr-sweep`) as it gives way to a flag: taken out of the fixed settings, unless it
    is one of a design axis's listed values, where it names the baseline as a flag would
    (`_given`)."""
    for flags in (fixed_model, fixed_train):
        for name in [n for n in flags if n in recipe]:
            swept = name == "learning_rate" and lr_sweep is not None
            if name in varied and not (name in AXES and flags[name] in varied[name]) or swept:
                del flags[name]


def _given(varied: dict, fixed_model: dict, fixed_train: dict) -> dict:
    """The flags given (or set by --config) for varied settings, taken out of `fixed_model`
    and `fixed_train`: a design axis's flag names the baseline's value, and must be one of the
    listed values (else it would be silently dropped); a level's flag is an error."""
    given = {}
    for name, values in varied.items():
        flags = fixed_model if name in fixed_model else fixed_train
        if name not in flags:
            continue
        flag = "--" + name.replace("_", "-")
        if name not in AXES:
            raise UserError(f"{flag} is fixed and varied: give {flag} or --vary {name}, not both")
        value = flags.pop(name)
        if value not in values:
            listed = ",".join(map(_written, values))
            raise UserError(
                f"{flag} {_written(value)} is not among --vary {name}={listed}: list it to make "
                f"it the baseline, or leave {flag} out"
            )
        given[name] = value
    return given


def _written(value: object) -> str:
    """A value as a command line writes it: `true`, `0.1`, `wsd`."""
    if isinstance(value, bool):
        return str(value).lower()
    return number_text(value) if isinstance(value, (int, float)) else str(value)


def _design_files(args: argparse.Namespace) -> tuple[tuple, set[str]]:
    """The --design files as a study's `plan.StudyFile`s, in the order given, each with its
    settings' values (its defaults, or --design-setting's); and the settings --design-setting
    gave (`NAME.SETTING`)."""
    from microgpt.ablate.plan import StudyFile
    from microgpt.design import load

    paths = args.design or []
    twice = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if twice is not None:
        raise UserError(f"--design {twice} is given twice: give each design file once")
    files = [load(path) for path in paths]
    by_name = {}
    for f in files:
        if f.name in by_name:
            raise UserError(
                f"design files {by_name[f.name].path} and {f.path} are both named {f.name!r}: "
                'give one of them another name (name = "..." in it)'
            )
        by_name[f.name] = f
    values: dict[str, dict[str, str]] = {}
    for spec in args.design_setting or []:
        name, eq, text = spec.partition("=")
        file, dot, setting = name.strip().rpartition(".")
        if not (eq and dot and file and setting and text.strip()):
            raise UserError(
                f"--design-setting {spec!r}: write NAME.SETTING=VALUE, NAME a --design file's "
                "name, e.g. softcap.cap=30"
            )
        if file not in by_name:
            given = ", ".join(by_name) or "none"
            raise UserError(f"--design-setting {spec}: no --design file is named {file!r} "
                            f"(given: {given})")  # fmt: skip
        values.setdefault(file, {})[setting] = text
    out = tuple(
        StudyFile(
            f.name, f.module.__file__, f.sha256, f.switches,
            tuple(f.resolve(values.get(f.name)).items()),
        )
        for f in files
    )  # fmt: skip
    return out, {f"{file}.{setting}" for file, given in values.items() for setting in given}


def _given_file_settings(files: tuple, set_files: set[str], varied: dict) -> None:
    """A design file's setting given by --design-setting and varied too names the value its
    designs take first, as a design axis's flag names the baseline's: one of the listed."""
    for f in files:
        for setting, value in f.settings:
            name = f"{f.name}.{setting}"
            if name in set_files and name in varied and value not in varied[name]:
                listed = ",".join(map(_written, varied[name]))
                raise UserError(
                    f"--design-setting {name}={_written(value)} is not among --vary "
                    f"{name}={listed}: list it, or leave --design-setting {name} out"
                )


def _check_files(study, docs: list[str], tokenizer) -> dict:
    """Each design file checked (`design_check.check`) in every model and with every setting
    and dropout the study runs it with, on the first documents of the input: `Study.checked`."""
    from microgpt.ablate.plan import checked_key
    from microgpt.design import load
    from microgpt.tensor.design_check import check_once
    from microgpt.train import check_docs

    texts = check_docs(docs, tokenizer, study.train.data)
    out = {}
    for name, values, model, dropout in study.file_checks():
        design = load(study.file(name).path)
        config = ModelConfig(vocab_size=tokenizer.vocab_size, **model)
        # with its runs' dropout, the runs-apart check again with dropout on
        checked = check_once(design, config, design.resolve(values), texts, dropout=dropout)
        out[checked_key(name, values, model)] = (tuple(checked.shapes), checked.num_params)
    return out


def _lr_sweep(text: str | None, varied: dict, fixed_train: dict) -> tuple[float, ...] | None:
    """The --lr-sweep grid (see `sweep.parse_lr_sweep`), or None; the learning rate cannot be
    swept and also varied or fixed."""
    if text is None:
        return None
    from microgpt.ablate.sweep import parse_lr_sweep

    lrs = parse_lr_sweep(text)
    if "learning_rate" in varied:
        raise UserError(
            "--lr-sweep and --vary learning_rate both set the learning rate: give one of them"
        )
    if "learning_rate" in fixed_train:
        raise UserError(
            "--lr-sweep and --learning-rate both set the learning rate: give one of them"
        )
    return lrs


def _warn_of_warmup(study) -> None:
    """One warning line for the study if a warm-up outlasts its shortest runs (see
    `schedule.warmup_warning`): the longest warm-up of its designs, the fewest steps of its
    levels."""
    from microgpt.schedule import warmup_warning

    trains = [study.configs(lv, d, None)[1] for lv in study.levels() for d in study.designs()]
    warmup, steps = max(t.warmup_steps for t in trains), min(t.steps for t in trains)
    if note := warmup_warning(warmup, steps):
        print(f"microgpt: warning: {note}", file=sys.stderr)


def describe_files(study) -> list[str]:
    """A line per design file: which, its version, and where it was checked."""
    from microgpt.design import shown

    lines = []
    for f in study.files:
        checks = [c for c in study.file_checks() if c[0] == f.name]
        params = sorted({n for k, (_, n) in study.checked.items() if json.loads(k)[0] == f.name})
        counts = ", ".join(f"{n:,}" for n in params)
        lines.append(
            f"design file {shown(f.path)}: {f.name}, sha256 {f.sha256[:12]}, {counts} parameters; "
            f"{len(checks)} check{'s' if len(checks) > 1 else ''} in float64 (each size and "
            "setting it runs with) passed: finite, deterministic, causal, documents and runs "
            "apart"
        )
    return lines


def describe(study, jobs: int, out: Path, ranks: int = 1) -> str:
    designs, levels = study.designs(), study.levels()
    lrs = len(study.lrs) if study.sweep else 1
    n_runs = len(designs) * len(levels) * lrs * len(study.seeds)
    parts = [f"{len(designs)} designs"]
    if len(levels) > 1:
        parts.append(f"{len(levels)} levels ({', '.join(lv.label for lv in levels)})")
    if study.sweep:
        grid = ", ".join(f"{lr:g}" for lr in study.lrs)
        parts.append(f"{lrs} learning rates ({grid})")
    parts.append(f"{len(study.seeds)} seeds")
    steps = "" if "steps" in study.varied else f" of {study.train.steps:,} steps"
    batch = "" if "batch_size" in study.varied else f" (batch {study.train.batch_size})"
    workers = f"up to {jobs} worker{'s' if jobs > 1 else ''}"
    if ranks > 1:
        workers = f"{ranks} ranks × {workers}"
    if study.stack > 1:
        workers = f"stacks of up to {study.stack} runs, {workers}"
    return (
        f"microgpt ablate: {study.mode} mode, {' × '.join(parts)} = {n_runs} runs{steps}{batch}, "
        f"{workers}, results in {out}"
    )


def cmd_ablate(args: argparse.Namespace) -> int:
    """One process, or under torchrun one rank of a study shared out over the ranks (see
    `ablate.ranks`): rank 0 alone prints and writes the report."""
    from microgpt.distributed import world_from_env

    world = world_from_env()
    if world.size == 1:
        return _ablate(args, world, None)
    if args.dry_run and not world.main:
        return 0
    from microgpt.distributed import Group, run_on_ranks

    make_study(args)  # every bad flag is an error before the ranks meet
    kept = "every finished run is kept: the same command trains the rest"
    group = Group(
        world, "cpu", args.dist_timeout, patient=True, then=kept, stall_timeout=args.stall_timeout
    )
    return run_on_ranks(group, _ablate, args, world, group)


def _ablate(args: argparse.Namespace, world, group) -> int:
    from microgpt import tensorfile
    from microgpt.ablate import results
    from microgpt.ablate.analysis import summarize
    from microgpt.ablate.page import write_page
    from microgpt.ablate.plot import MISSING, draw, figure_classes
    from microgpt.ablate.ranks import run_shared
    from microgpt.ablate.runner import dry_run, run_study
    from microgpt.ablate.text import format_report

    start = time.perf_counter()
    study = make_study(args)
    if world.main:
        _warn_of_warmup(study)
    cores = os.cpu_count() or 1
    if group is not None:  # under torchrun the ranks of one machine share its cores
        cores //= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    jobs = args.jobs or max(1, cores)
    out = Path(args.out or study.default_out())
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    if world.main:
        for line in describe_files(study):
            print(line, flush=True)
    if args.dry_run:
        print(describe(study, jobs, out), flush=True)
        print(dry_run(study, out, jobs))
        return 0
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out folder {out}: {e.strerror}") from None

    print(describe(study, jobs, out, world.size), flush=True)
    if world.main:  # import matplotlib while the workers train: the report needs it after
        threading.Thread(target=figure_classes, daemon=True).start()
    if group is None:
        outcome = run_study(study, out, jobs, stall_timeout=args.stall_timeout)
    else:
        outcome = run_shared(study, out, jobs, group, sys.stdout)
        if not world.main:
            return 0
    tasks, records = outcome.tasks, outcome.records
    summary = summarize(study, tasks, records)
    env = {**environment(), "jobs": jobs, "ranks": world.size}
    env["threads_per_run"] = study.tensor.threads if study.tensor else None
    saved = results.write(out / "results.json", study, tasks, records, summary, env)
    tensorfile.write_atomic(out / "results.csv", results.to_csv(study, tasks, records))
    pictures = draw(saved)
    for name, png in (pictures or {}).items():
        tensorfile.write_atomic(out / name, png)
    page = write_page(out, saved, pictures)
    note = MISSING if pictures is None else None

    print()
    print(format_report(saved))
    print()
    if note:
        print(note)
    files = ", ".join(["results.json", "results.csv", *(pictures or {})])
    print(f"wrote {files} and the {len(tasks)} run files to {out}")
    workers = f" ({outcome.workers} worker{'s' if outcome.workers > 1 else ''})"
    if world.size > 1:
        workers = f" ({world.size} ranks, {outcome.workers} workers in all)"
    print(
        f"done in {time.perf_counter() - start:.1f} s: {outcome.ran} runs trained"
        f"{workers if outcome.ran else ''}, {outcome.reused} reused"
    )
    print(f"report: {page}")
    return 0
