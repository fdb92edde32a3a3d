"""The `microgpt` command: `train`, `sample`, `ablate`, `report` and `plot`.

`main(argv)` is a plain function (tests call it directly). Bad input of any kind ends in one
line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import replace
from pathlib import Path

from microgpt import __version__, checkpoint
from microgpt.ablate.cli import add_ablate_parser
from microgpt.config import ModelConfig, TrainConfig
from microgpt.distributed import error_line
from microgpt.errors import UserError
from microgpt.flags import (
    MODEL_FLAGS,
    Parser,
    add_config_flag,
    add_design_flags,
    add_distributed_flags,
    add_mode_flags,
    add_model_flags,
    add_train_flags,
    design_settings,
    int_at_least,
    model_args,
    number,
    tensor_options,
    train_args,
)
from microgpt.modes import SCALAR_DESIGN, check_tensor_options, check_train_options


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="microgpt", description="The smallest complete GPT: train, sample, ablate.")
    p.add_argument("--version", action="version", version=f"microgpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser(
        "train",
        help="train one model, then print a summary and samples",
        description="Train one model, then print a summary and samples.",
    )
    add_config_flag(t)
    add_mode_flags(t, None, default_text="scalar; tensor with --design")
    add_train_flags(t)
    add_model_flags(t)
    add_design_flags(t)
    g = t.add_argument_group("output")
    g.add_argument("--out", metavar="CKPT", help="write the checkpoint here (.safetensors)")
    g.add_argument(
        "--save-every", type=int_at_least(1), metavar="K", help="also save every K steps"
    )
    g.add_argument(
        "--keep-best",
        action="store_true",
        help="also keep CKPT's best version, CKPT with .best before its suffix: rewritten "
        "whenever a held-out evaluation (--eval-every, and the end) is the lowest so far",
    )
    g.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue the run saved in CKPT exactly (and save to it, unless --out)",
    )
    g.add_argument("--metrics", metavar="PATH", help="write per-step JSON Lines and a summary")
    g.add_argument(
        "--log-every",
        type=int_at_least(1),
        metavar="K",
        help="print a plain line every K steps (default: a live line on a terminal, "
        "else every 5%% of the run)",
    )
    add_sampling_flags(g)
    add_distributed_flags(t)

    s = sub.add_parser(
        "sample", help="sample from a checkpoint", description="Sample documents from a checkpoint."
    )
    s.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint from --out")
    add_mode_flags(s, None)
    s.add_argument(
        "--design",
        metavar="FILE",
        help="a design file's checkpoint: the file it was trained with, in that version "
        "(default: the path the checkpoint names)",
    )
    add_sampling_flags(s)
    s.add_argument(
        "--seed",
        metavar="S",
        type=int_at_least(0),
        help="seed a fresh RNG (default: continue the run's own RNG stream, which "
        "repeats the samples `train` printed)",
    )

    pl = sub.add_parser(
        "plot",
        help="plot training and validation curves of --metrics files",
        description="Plot the smoothed training loss and the held-out loss of one or more "
        "runs' --metrics files on one PNG.",
    )
    pl.add_argument("metrics", nargs="+", metavar="METRICS.jsonl", help="--metrics files")
    pl.add_argument("--out", default="curves.png", metavar="PNG", help="(default curves.png)")

    add_ablate_parser(sub)
    r = sub.add_parser(
        "report",
        help="(re)write a study's report.html from its results.json",
        description="Write DIR/report.html, one self-contained page (tables, verdicts, plots), "
        "from DIR/results.json alone: for a study folder that microgpt ablate wrote (its "
        "--out), old, copied or moved.",
    )
    r.add_argument("dir", metavar="DIR", help="a study folder: microgpt ablate's --out")
    t.set_defaults(run=cmd_train)
    s.set_defaults(run=cmd_sample)
    pl.set_defaults(run=cmd_plot)
    r.set_defaults(run=cmd_report)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, over the `--config` recipe's values if one is given; `from_recipe`:
    the settings whose value is the recipe's (not given on the command line), which a study's
    `--vary` or `--lr-sweep` may then replace (`ablate.cli`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        from microgpt import recipe

        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = commands.choices[args.command]
        before = {dest: command.get_default(dest) for dest in vars(args)}
        set_by_recipe = recipe.apply(command, args.config)
        given = {d for d in set_by_recipe if getattr(args, d, None) != before.get(d)}
        args = parser.parse_args(argv)
        args.from_recipe = frozenset(set_by_recipe - given)
    return args


DEFAULT_LENGTH = 200  # characters a stream sample continues its prompt by


def add_sampling_flags(g) -> None:
    g.add_argument(
        "--num-samples",
        metavar="K",
        type=int_at_least(0),
        help="how many samples (default: 20 names; 1 in stream mode)",
    )
    g.add_argument(
        "--temperature", metavar="T", type=number, default=0.5, help="sampling temperature (0.5)"
    )
    g.add_argument(
        "--top-k",
        metavar="K",
        type=int_at_least(1),
        help="draw each token from the K most likely only (default: all)",
    )
    g.add_argument(
        "--prompt",
        help="text every sample starts with (default: none; in stream mode a newline)",
    )
    g.add_argument(
        "--length",
        metavar="N",
        type=int_at_least(1),
        help=f"stream mode: characters to sample after the prompt (default {DEFAULT_LENGTH})",
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        return args.run(args)
    except UserError as e:
        line = error_line(e)  # under torchrun, the first rank to fail alone prints it
        if line is not None:
            print(f"microgpt: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microgpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`microgpt ... | head`): not an error
        sys.stdout = None  # nothing more to flush at exit
        return 0


# train -----------------------------------------------------------------------------------------


def resolve_configs(
    args: argparse.Namespace, ckpt: checkpoint.Checkpoint | None
) -> tuple[dict, TrainConfig]:
    """The model flags (without vocab_size) and the TrainConfig: the flags given over the
    defaults, or, on --resume, the checkpoint's, which given flags must not contradict. The
    one exception: `--steps` beyond the saved run's total extends it (the schedule is then
    computed over the new total)."""
    model, train = model_args(args), train_args(args)
    if ckpt is None:
        ModelConfig(vocab_size=2, **model)  # validate the flags before reading any data
        return model, TrainConfig(**train)
    saved_model, saved_train = ckpt.model.to_dict(), ckpt.train.to_dict()
    extend = train.get("steps", ckpt.train.steps) > ckpt.train.steps
    for given, saved in ((model, saved_model), (train, saved_train)):
        for k, v in given.items():
            if v != saved[k] and not (k == "steps" and extend):
                flag = "--" + k.replace("_", "-")
                more = f", give more than {saved[k]} to extend it" if k == "steps" else ""
                raise UserError(
                    f"{flag} {v} differs from the checkpoint's {saved[k]}: "
                    f"drop {flag} to resume{more}, or start a new run without --resume"
                )
    tc = replace(ckpt.train, steps=train["steps"]) if extend else ckpt.train
    return {k: saved_model[k] for k in MODEL_FLAGS}, tc


def cmd_train(args: argparse.Namespace) -> int:
    """One process, or under torchrun one rank of a data-parallel run: every rank trains alike,
    rank 0 alone prints, writes the metrics and the checkpoint, and samples."""
    from microgpt.distributed import world_from_env

    world = world_from_env()
    if args.mode is None:  # tensor for a design file (or under torchrun, its checkpoint)
        design = args.design or (world.size == 1 and _design_checkpoint(args.resume))
        args.mode = "tensor" if design else "scalar"
    if world.size == 1:
        return _train(args, world, None)
    if args.mode != "tensor":
        raise UserError(
            f"--mode {args.mode} trains in one process: under torchrun use --mode tensor "
            "(microgpt ablate shares its runs over the ranks in either mode)"
        )
    from microgpt.distributed import Group, run_on_ranks
    from microgpt.tensor.device import resolve

    options = tensor_options(args)
    check_tensor_options(options)
    kept = (
        f"what was saved to {args.out or args.resume} is kept: continue with --resume"
        if args.save_every or args.resume
        else "train again (--out CKPT --save-every K keep checkpoints to resume from)"
    )
    group = Group(world, resolve(options).device.type, args.dist_timeout, then=kept)
    return run_on_ranks(group, _train, args, world, group)


def _train(args: argparse.Namespace, world, group) -> int:
    from microgpt.progress import Progress
    from microgpt.sample import check_temperature
    from microgpt.schedule import warmup_warning
    from microgpt.train import MetricsWriter, bits, prepare, train

    if args.design and args.mode != "tensor":
        raise UserError(SCALAR_DESIGN)
    options = tensor_options(args)
    check_temperature(args.temperature)
    args.out = args.out or args.resume  # a resumed run goes on saving where it was saved
    if args.save_every and not args.out:
        raise UserError("--save-every needs --out CKPT to save to")
    if args.keep_best and not args.out:
        raise UserError("--keep-best needs --out CKPT: the best checkpoint goes beside it")
    best_path = best_checkpoint_path(args.out) if args.keep_best else None
    for path in (args.out, args.metrics, best_path):
        if path and world.main:  # only rank 0 writes
            _check_writable(path)
    where = f" ({check_tensor_options(options)})" if options is not None else ""
    if group is not None:
        where = f" ({check_tensor_options(options)}, {world.size} processes, {group.backend})"
    ckpt = _load_checkpoint(args.resume, group) if args.resume else None
    model_args, tc = resolve_configs(args, ckpt)
    check_train_options(args.mode, tc)
    design = _design_run(args, ckpt)
    if design is not None and args.mode != "tensor":
        raise UserError(SCALAR_DESIGN)
    if world.main and (note := warmup_warning(tc.warmup_steps, tc.steps)):
        print(f"microgpt: warning: {note}", file=sys.stderr)
    input_path = args.input if args.input is not None else (ckpt.input_path if ckpt else None)
    config, prep = prepare(input_path, model_args, tc, design)
    if prep.design is not None:
        if group is not None:  # every rank must run the same version of the file
            hashes = group.gather_json(prep.design.design.sha256)
            group.on_main(lambda: _same_design(hashes, prep.design.design))
        if world.main:
            print(describe_design(prep.design, checked_now=ckpt is None), flush=True)
    if ckpt is not None:
        if (prep.fingerprint, prep.tokenizer.chars) != (ckpt.data_fingerprint, ckpt.chars):
            raise UserError(
                f"the documents differ from those the checkpoint was trained on: "
                f"pass --input {ckpt.input_path or '(omit it: the bundled names)'}"
            )
        if ckpt.step >= tc.steps:
            raise UserError(
                f"checkpoint {args.resume} has finished all {tc.steps} steps: "
                "pass a larger --steps to extend it"
            )

    sampler = Sampler(args, tc.data, prep.tokenizer)
    if tc.data == "stream":
        data = (
            f"{len(prep.split.train[0]):,} training characters / {len(prep.split.val):,} "
            f"held-out windows of {config.block_size + 1}"
        )
    else:
        data = f"{len(prep.split.train):,} training / {len(prep.split.val):,} held-out documents"
    params = config.num_params() if prep.design is None else prep.design.num_params
    print(
        f"microgpt train: {args.mode} mode{where}, {params:,} parameters, {data}, "
        f"vocabulary {config.vocab_size}" + (f", resuming at step {ckpt.step}" if ckpt else ""),
        flush=True,
    )
    if ckpt is not None and tc.steps != ckpt.train.steps:
        print(
            f"extending the run from {ckpt.train.steps:,} to {tc.steps:,} steps: the learning-rate "
            f"schedule is recomputed over {tc.steps:,} steps from step {ckpt.step + 1} on"
        )
    metrics = MetricsWriter(args.metrics) if args.metrics and world.main else None
    progress = Progress(tc.steps, every=args.log_every)

    def on_eval(step: int, val_loss: float) -> None:
        progress.note(
            f"step {step:{len(str(tc.steps))}d}/{tc.steps} | val loss {val_loss:.6f} "
            f"| {bits(val_loss):.4f} bits/char (per token, held out)"
        )

    try:
        gpt, result = train(
            args.mode,
            config,
            tc,
            prep,
            tensor=options,
            resume=ckpt,
            out=args.out if world.main else None,
            save_every=args.save_every or 0,
            metrics=metrics,
            on_step=progress.update,
            on_eval=on_eval,
            keep_best=best_path if world.main else None,
            group=group,
        )
    except BaseException:
        progress.close()
        if metrics:
            metrics.abandon()
        raise
    progress.close()

    s = result.summary()
    print(f"final loss     {s['final_loss']:.6f}  (step {tc.steps})")
    print(f"mean last {s['last_n']:<4d} {s['mean_last_n']:.6f}")
    unit = "windows" if tc.data == "stream" else "documents"
    if s["val_loss"] is not None:
        n_val = min(tc.val_docs, len(prep.split.val))
        print(f"val loss       {s['val_loss']:.6f}  ({n_val} held-out {unit})")
    if s["val_loss_per_token"] is not None:
        n_eval = len(prep.split.val[: tc.eval_docs])
        print(
            f"val per token  {s['val_loss_per_token']:.6f}  = {s['val_bpc']:.4f} bits/char "
            f"({s['val_tokens']:,} tokens of {n_eval:,} held-out {unit})"
        )
    print(
        f"speed          {s['steps_per_s']:,.1f} steps/s, {s['tokens_per_s']:,.0f} tokens/s "
        "(training loop only)"
    )
    if args.out:
        print(f"checkpoint     {args.out}")
    if best_path and result.best_val_loss is not None:
        print(f"best           {best_path}  (val per token {result.best_val_loss:.6f})")
    samples = sampler.draw(gpt, prep.rng) if world.main else []
    if tc.data == "stream":
        for i, text in enumerate(samples, 1):
            print(f"sample {i} ({len(text) - len(sampler.prompt)} characters after the prompt):")
            print(text)
    else:
        for i, name in enumerate(samples, 1):
            print(f"sample {i:2d}: {name}")
    if metrics:
        metrics.finish({**s, "samples": samples})
    return 0


def _design_checkpoint(path: str | None) -> bool:
    """Whether the checkpoint at `path` (--resume) is a design file's; False if unreadable
    (its error comes when the run loads it)."""
    if not path:
        return False
    try:
        return checkpoint.load(path).design is not None
    except UserError:
        return False


def _design_run(args: argparse.Namespace, ckpt: checkpoint.Checkpoint | None):
    """The design file a run trains (`design.DesignRun`), or None: the built-in model. A new
    run's from --design and --design-setting; a resumed run's is its checkpoint's, in the
    version it names (--design: where the file is now)."""
    from microgpt.design import DesignRun, load

    values = design_settings(args.design_setting)
    if ckpt is None:
        if not args.design:
            if values:
                raise UserError("--design-setting sets a design file's setting: give --design")
            return None
        file = load(args.design)
        return file.run(file.resolve(values))
    if ckpt.design is None:
        if args.design or values:
            raise UserError(
                f"checkpoint {args.resume} was trained with the built-in model, not a design "
                "file: drop --design and --design-setting to resume it"
            )
        return None
    run = DesignRun.of_checkpoint(ckpt.design, args.resume, args.design)
    saved = run.values()
    for name, text in values.items():
        if name not in saved or run.load().resolve({name: text})[name] != saved[name]:
            raise UserError(
                f"--design-setting {name}={text} differs from the checkpoint's "
                f"{name}={saved.get(name)}: drop it to resume"
            )
    return run


def describe_design(checked, checked_now: bool = True) -> str:
    """A line on the design file a run trains: which, what it uses, and that it was checked."""
    from microgpt.design import shown

    file, unused = checked.design, checked.unused
    settings = ", ".join(f"{k}={v}" for k, v in checked.settings.items())
    line = f"design file {shown(file.path)}: {file.name}" + (f" ({settings})" if settings else "")
    line += f", sha256 {file.sha256[:12]}, {len(checked.shapes)} weights"
    if unused:
        line += f" ({len(unused)} unused, not trained: {', '.join(unused)})"
    if checked_now:
        return line + "; checked: finite, deterministic, causal, documents and runs apart"
    return line + "; the version its checkpoint was trained with"


def _same_design(hashes: list[str], file) -> None:
    odd = [rank for rank, h in enumerate(hashes) if h != hashes[0]]
    if odd:
        raise UserError(
            f"rank{'s' if len(odd) > 1 else ''} {', '.join(map(str, odd))} read another version "
            f"of design file {file.path} than rank 0: give every machine the same file"
        )


def best_checkpoint_path(out: str) -> str:
    """`run.safetensors` -> `run.best.safetensors` (`run` -> `run.best`)."""
    root, ext = os.path.splitext(out)
    return f"{root}.best{ext}"


def _load_checkpoint(path: str, group) -> checkpoint.Checkpoint:
    """`checkpoint.load`; under torchrun rank 0 reads the file and sends it to the others, so
    that the other nodes need no copy of it (nor a shared filesystem)."""
    if group is None:
        return checkpoint.load(path)
    group.on_main(lambda: checkpoint.load(path) and None)  # rank 0's error stops every rank
    blob = group.broadcast_bytes(Path(path).read_bytes() if group.world.main else None)
    return checkpoint.loads(blob, path)


def _check_writable(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory: give a file path")
    if not os.path.isdir(parent):
        raise UserError(f"folder {parent} does not exist: create it or choose another path")


# sample ----------------------------------------------------------------------------------------


class Sampler:
    """The sampling flags, checked before any work: `draw(gpt, rng)` gives the samples."""

    def __init__(self, args: argparse.Namespace, data: str, tokenizer):
        from microgpt.sample import check_temperature

        check_temperature(args.temperature)
        self.data, self.tokenizer = data, tokenizer
        self.temperature, self.top_k = args.temperature, args.top_k
        stream = data == "stream"
        if args.length is not None and not stream:
            raise UserError("--length applies to stream mode only (--data stream)")
        self.num_samples = args.num_samples if args.num_samples is not None else 1 if stream else 20
        self.length = args.length or DEFAULT_LENGTH
        self.prompt = args.prompt if args.prompt is not None else "\n" if stream else ""
        if stream and not self.prompt:
            raise UserError("in stream mode --prompt needs at least one character")
        tokenizer.encode(self.prompt)  # an unknown character is an error before any work

    def draw(self, gpt, rng: random.Random) -> list[str]:
        from microgpt.sample import sample, sample_stream

        if self.data == "stream":
            args = (self.temperature, self.prompt, self.length, self.top_k)
            return [sample_stream(gpt, self.tokenizer, rng, *args) for _ in range(self.num_samples)]
        args = (self.temperature, self.prompt, self.top_k)
        return [sample(gpt, self.tokenizer, rng, *args) for _ in range(self.num_samples)]


def cmd_sample(args: argparse.Namespace) -> int:
    from microgpt.data import Tokenizer
    from microgpt.modes import make_gpt

    ckpt = checkpoint.load(args.checkpoint)
    args.mode = args.mode or ckpt.mode
    sampler = Sampler(args, ckpt.train.data, Tokenizer.for_data(ckpt.chars, ckpt.train.data))
    # sampling only runs the forward: a training-only option of the run that wrote the
    # checkpoint (dropout, tensor mode's alone) must not stop the other mode from sampling it
    train = replace(ckpt.train, dropout=0.0)
    options = tensor_options(args)
    design = None
    if ckpt.design is not None:
        if args.mode != "tensor":
            raise UserError(SCALAR_DESIGN)
        from microgpt.design import DesignRun
        from microgpt.tensor.design_check import unchecked

        run = DesignRun.of_checkpoint(ckpt.design, args.checkpoint, args.design)
        design = unchecked(run, ckpt.model, f"checkpoint {args.checkpoint}")
    elif args.design:
        raise UserError(
            f"checkpoint {args.checkpoint} is of the built-in model, not a design file: drop "
            "--design"
        )
    gpt = make_gpt(args.mode, ckpt.model, ckpt.state["weights"], train, options, design)
    rng = random.Random(args.seed)
    if args.seed is None:
        rng.setstate(ckpt.rng_state)
    for i, text in enumerate(sampler.draw(gpt, rng)):
        if sampler.data == "stream" and i:
            print("---")
        print(text)
    return 0


# plot ------------------------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    from microgpt.curves import plot_runs, read_run

    _check_writable(args.out)
    runs = [read_run(path) for path in args.metrics]
    plot_runs(runs, args.out)
    print(f"wrote {args.out} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    return 0


# report ----------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """Reads DIR/results.json, draws its plots and writes DIR/report.html (not the PNG files:
    the page holds its plots)."""
    from microgpt.ablate.page import write_page
    from microgpt.ablate.plot import draw
    from microgpt.ablate.results import read

    folder = Path(args.dir)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{folder} {what}: give a study folder (microgpt ablate's --out)")
    saved = read(folder / "results.json")
    print(f"wrote {write_page(folder, saved, draw(saved))}")
    return 0
