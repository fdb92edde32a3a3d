"""The command-line flags that several commands share, derived from the configs.

Torch-free and free of command logic, so that `cli` and `ablate.cli` both import it and neither
imports the other. A design switch's flag comes from its declaration in `ModelConfig`
(`config.SWITCHES`): nothing here names a switch.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from microgpt.config import OPTIMIZERS, SWITCHES, ModelConfig, TensorOptions, TrainConfig
from microgpt.errors import UserError

MODES = ("scalar", "tensor")
SIZE_FLAGS = ("n_layer", "n_embd", "n_head", "block_size")
MODEL_FLAGS = SIZE_FLAGS + tuple(SWITCHES)  # every ModelConfig field but vocab_size
TRAIN_FLAGS = tuple(f.name for f in fields(TrainConfig))
assert set(MODEL_FLAGS) == {f.name for f in fields(ModelConfig)} - {"vocab_size"}


# argument types: each rejects a bad value with a message argparse prints on one line ---------


def int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {lo}")
        return value

    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_number(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own status)
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


# flag groups -----------------------------------------------------------------------------------


def add_model_flags(p: argparse.ArgumentParser, switches: bool = True) -> None:
    """The architecture flags: sizes, then one flag per design switch (`switches=False`
    leaves those out)."""
    g = p.add_argument_group("model (defaults: the reference's)")
    g.add_argument(
        "--n-layer", metavar="N", type=int_at_least(1), help="transformer blocks (default 1)"
    )
    g.add_argument(
        "--n-embd", metavar="N", type=int_at_least(1), help="embedding width (default 16)"
    )
    g.add_argument(
        "--n-head",
        metavar="N",
        type=int_at_least(1),
        help="attention heads; must divide --n-embd (4)",
    )
    g.add_argument(
        "--block-size",
        metavar="N",
        type=int_at_least(1),
        help="context length in tokens (default 16)",
    )
    if not switches:
        return
    g = p.add_argument_group("design switches (defaults: the reference's)")
    for s in SWITCHES.values():
        if s.boolean:
            g.add_argument(s.flag, action=argparse.BooleanOptionalAction, help=s.help)
        else:
            g.add_argument(s.flag, choices=[str(v) for v in s.values], help=s.help)


def add_train_flags(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """The data and optimizer flags; `seed=False` leaves out --seed (ablate sets the seeds)."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--input",
        metavar="PATH",
        help="a UTF-8 text file (default: the bundled names)",
    )
    g.add_argument(
        "--data",
        choices=("lines", "stream"),
        help="lines: one document per line (default); stream: the whole file as one text, "
        "trained on windows of block_size + 1 characters, the last 10%% held out",
    )
    g.add_argument(
        "--val-fraction",
        metavar="F",
        type=number,
        help="share of the documents held out for validation (default 0.1)",
    )
    g.add_argument(
        "--val-docs",
        metavar="N",
        type=int_at_least(0),
        help="held-out documents the per-document val loss averages over (default 500)",
    )
    g.add_argument(
        "--eval-docs",
        metavar="N",
        type=int_at_least(0),
        help="held-out documents (stream: windows) of the per-token val loss (default: all; "
        "0: none, the default of ablate)",
    )
    g.add_argument(
        "--eval-every",
        metavar="K",
        type=int_at_least(0),
        help="evaluate the per-token val loss every K steps (default 0: at the end only)",
    )

    g = p.add_argument_group("optimizer (defaults: the reference's)")
    g.add_argument(
        "--steps",
        metavar="N",
        type=int_at_least(1),
        help="total steps, also the length of the LR schedule (1000)",
    )
    if seed:
        g.add_argument(
            "--seed",
            metavar="S",
            type=int_at_least(0),
            help="seed of the one RNG stream (default 42)",
        )
    g.add_argument(
        "--batch-size", metavar="B", type=int_at_least(1), help="documents per step (default 1)"
    )
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="adamw: Adam, AdamW with --weight-decay, on every weight (default); muon: Muon "
        "(momentum, then Newton-Schulz orthogonalisation) on the hidden matrices and AdamW on "
        "the embeddings and head, both at one learning rate (scalar mode for now)",
    )
    g.add_argument(
        "--learning-rate",
        metavar="LR",
        type=number,
        help="peak learning rate (0.01); with muon, of both groups: a Muon update is scaled to "
        "an RMS of about 0.2, that of an AdamW update",
    )
    g.add_argument(
        "--lr-schedule",
        choices=("linear", "cosine", "constant"),
        help="after the warm-up: linear decay (default), cosine decay, or constant",
    )
    g.add_argument(
        "--warmup-steps", metavar="N", type=int_at_least(0), help="linear warm-up steps (0)"
    )
    g.add_argument(
        "--min-lr", metavar="LR", type=number, help="where linear and cosine decay end (0)"
    )
    g.add_argument("--beta1", metavar="B", type=number, help="Adam's beta1 (0.85)")
    g.add_argument("--beta2", metavar="B", type=number, help="Adam's beta2 (0.99)")
    g.add_argument(
        "--muon-momentum",
        metavar="B",
        type=number,
        help="Muon's Nesterov momentum (0.95); --optimizer muon only",
    )
    g.add_argument(
        "--weight-decay",
        metavar="W",
        type=number,
        help="decoupled weight decay (AdamW's) on every weight matrix, with either optimizer (0)",
    )
    g.add_argument(
        "--grad-clip",
        metavar="C",
        type=number,
        help="clip the gradient's global L2 norm to C (default 0: off)",
    )
    g.add_argument(
        "--z-loss",
        metavar="C",
        type=number,
        help="add C (log Z)^2 per predicted token to the training loss, Z the softmax's "
        "normaliser, weighted as that token's loss; the reported training loss includes it, "
        "the held-out losses do not (default 0: off)",
    )
    g.add_argument(
        "--dropout",
        metavar="P",
        type=number,
        help="tensor mode: dropout on the embeddings, attention weights and residual branches (0)",
    )
    g.add_argument(
        "--reshuffle",
        action=argparse.BooleanOptionalAction,
        help="lines: put every epoch after the first in its own order, drawn from the seed "
        "(default: every epoch in the first's order, as the reference)",
    )
    g.add_argument(
        "--loss-average",
        choices=("document", "token"),
        help="a batch's training loss: the mean over its documents of each one's mean "
        "(default, the reference's) or the mean over all its predicted tokens (makemore's; "
        "the per-token validation loss is that mean)",
    )
    g.add_argument(
        "--last-n",
        metavar="N",
        type=int_at_least(1),
        help="summary: mean loss of the last N steps (100)",
    )


def add_mode_flags(
    p: argparse.ArgumentParser, default_mode: str | None, compile: bool = True
) -> argparse._ArgumentGroup:
    g = p.add_argument_group("mode")
    g.add_argument(
        "--mode",
        default=default_mode,
        help="scalar (pure Python) or tensor (PyTorch) "
        f"(default: {default_mode or 'the mode that wrote the checkpoint'})",
    )
    g.add_argument("--device", help="tensor mode: auto, cpu, cuda or mps (default auto)")
    g.add_argument("--dtype", help="tensor mode: float32, float64 or bfloat16 (default float32)")
    g.add_argument(
        "--threads", metavar="N", type=int_at_least(1), help="tensor mode: torch CPU threads"
    )
    if compile:
        g.add_argument("--compile", action="store_true", help="tensor mode: torch.compile the step")
    else:
        p.set_defaults(compile=False)
    return g


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("under torchrun (several processes or machines)")
    g.add_argument(
        "--dist-timeout",
        metavar="S",
        type=positive_number,
        default=120.0,
        help="seconds a rank waits for the others to meet, or in a collective, before it stops "
        "with an error (default 120)",
    )


def add_config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="NAME|PATH",
        help="a recipe: a bundled one by name (names, shakespeare) or a TOML file whose keys "
        "are flag names; flags given here override it",
    )


# flags to configs ------------------------------------------------------------------------------


def model_args(args: argparse.Namespace) -> dict:
    """The model flags given, `name: value` (switch values parsed), without vocab_size."""
    out = {}
    for name in MODEL_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        parse = name in SWITCHES and isinstance(value, str)  # boolean flags give bools
        out[name] = SWITCHES[name].parse(value) if parse else value
    return out


def train_args(args: argparse.Namespace) -> dict:
    """The training flags given, `name: value`."""
    return {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}


def tensor_options(args: argparse.Namespace) -> TensorOptions | None:
    """The tensor-mode flags as TensorOptions; an error if they are given to scalar mode."""
    given = {k: getattr(args, k) for k in ("device", "dtype", "threads") if getattr(args, k)}
    if getattr(args, "compile", False):
        given["compile"] = True
    if args.mode not in MODES:
        raise UserError(f"unknown mode {args.mode!r}: use --mode scalar or --mode tensor")
    if given and args.mode != "tensor":
        raise UserError(f"--{next(iter(given))} applies to --mode tensor only")
    return TensorOptions(**given) if args.mode == "tensor" else None
