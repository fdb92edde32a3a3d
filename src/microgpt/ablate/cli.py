"""`microgpt ablate`: the four designs (tie_lm_head × input_rmsnorm) on the same seeds.

Each (design, seed) run is `microgpt train` with those settings; seed s gives every design the
same train/validation split and data order. Finished runs are saved one by one in --out, whose
default name is derived from the settings, so running the same command again resumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from microgpt.config import ModelConfig, TrainConfig
from microgpt.errors import UserError
from microgpt.flags import MODES, add_model_flags, add_train_flags, int_at_least, tensor_options

MODEL_ARGS = ("n_layer", "n_embd", "n_head", "block_size")
TRAIN_ARGS = ("steps", "learning_rate", "batch_size", "last_n", "val_fraction", "val_docs")
DEFAULT_SEEDS = 5


def add_ablate_parser(sub) -> None:
    a = sub.add_parser(
        "ablate",
        help="compare the four designs (tied head × input rmsnorm) over seeds",
        description="Train the four designs (tie_lm_head in {no, yes} × input_rmsnorm in "
        "{yes, no}) on the same seeds, data split and data order; print a table of losses and "
        "speed with the seed spread, and each design's validation loss against the reference "
        "(untied, input rmsnorm) with a paired 95% t-interval. Writes results.json, "
        "results.csv and loss_curves.png to --out; finished runs are saved as they complete "
        "and reused when the same command runs again.",
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
    add_model_flags(a, switches=False)  # the same for every design
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
    from microgpt.ablate.plan import Study, versions
    from microgpt.data import Tokenizer, read_documents
    from microgpt.train import fingerprint

    options = tensor_options(args)
    if options is not None:
        options = replace(options, device=args.device or "cpu", threads=args.threads or 1)
        if importlib.util.find_spec("torch") is None:
            raise UserError(
                "tensor mode needs PyTorch: pip install 'microgpt[tensor]', or use --mode scalar"
            )
    given = {k: getattr(args, k) for k in MODEL_ARGS if getattr(args, k) is not None}
    defaults = ModelConfig(vocab_size=2, **given)  # validates the flags
    model_args = {k: getattr(defaults, k) for k in MODEL_ARGS}
    tc = TrainConfig(**{k: getattr(args, k) for k in TRAIN_ARGS if getattr(args, k) is not None})
    seeds = args.seed_list or tuple(range(args.seeds or DEFAULT_SEEDS))
    docs = read_documents(args.input)
    return Study(
        mode=args.mode,
        model_args=model_args,
        train=tc,
        tensor=options,
        input_path=args.input,
        fingerprint=fingerprint(docs),
        vocab_size=Tokenizer.from_documents(docs).vocab_size,
        seeds=seeds,
        versions=versions(args.mode),
    )


def cmd_ablate(args: argparse.Namespace) -> int:
    from microgpt import tensorfile
    from microgpt.ablate.plot import plot_curves
    from microgpt.ablate.report import format_table, results_csv, results_json, summarize
    from microgpt.ablate.runner import run_study

    start = time.perf_counter()
    study = make_study(args)
    jobs = args.jobs or os.cpu_count() or 1
    out = Path(args.out or study.default_out())
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --out folder {out}: {e.strerror}") from None

    n_runs = 4 * len(study.seeds)
    print(
        f"microgpt ablate: {study.mode} mode, 4 designs × {len(study.seeds)} seeds = {n_runs} runs "
        f"of {study.train.steps:,} steps (batch {study.train.batch_size}), up to {jobs} workers, "
        f"results in {out}",
        flush=True,
    )
    outcome = run_study(study, out, jobs)
    summaries = summarize(study, outcome.records)
    env = environment(study, jobs)
    tensorfile.write_atomic(
        out / "results.json", results_json(study, outcome.records, summaries, env)
    )
    tensorfile.write_atomic(out / "results.csv", results_csv(study, outcome.records))
    note = plot_curves(study, outcome.records, out / "loss_curves.png")

    print()
    print(format_table(study, summaries))
    print()
    if note:
        print(note)
    files = "results.json, results.csv" + ("" if note else ", loss_curves.png")
    print(f"wrote {files} and the {n_runs} run files to {out}")
    workers = f" ({outcome.workers} worker{'s' if outcome.workers > 1 else ''})"
    print(
        f"done in {time.perf_counter() - start:.1f} s: {outcome.ran} runs trained"
        f"{workers if outcome.ran else ''}, {outcome.reused} reused"
    )
    return 0


def environment(study, jobs: int) -> dict:
    from microgpt import __version__
    from microgpt.ablate.worker import cpu_model

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "microgpt": __version__,
        "python": platform.python_version(),
        "torch": torch_version,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "threads_per_run": study.tensor.threads if study.tensor else None,
    }
