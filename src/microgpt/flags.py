"""The command-line flags that several commands share, derived from the configs.

Torch-free and free of command logic, so that `cli` and `ablate.cli` both import it and neither
imports the other. A design switch's flag comes from its declaration in `ModelConfig`
(`config.SWITCHES`), a size's or training setting's from its declaration in `ModelConfig` or
`TrainConfig` (`config.SETTINGS`): nothing here names a switch or a setting.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

from microgpt.config import (
    SIZE_SETTINGS,
    SWITCHES,
    TRAIN_SETTINGS,
    ModelConfig,
    Setting,
    TensorOptions,
)
from microgpt.errors import UserError

MODES = ("scalar", "tensor")
SIZE_FLAGS = tuple(SIZE_SETTINGS)  # n_layer, n_embd, n_head, block_size
MODEL_FLAGS = SIZE_FLAGS + tuple(SWITCHES)  # every ModelConfig field but vocab_size
TRAIN_FLAGS = tuple(name for name, s in TRAIN_SETTINGS.items() if s.group is not None)
assert set(MODEL_FLAGS) == {f.name for f in fields(ModelConfig)} - {"vocab_size"}
GROUPS = {  # a flag group's title
    "model": "model (defaults: the reference's)",
    "data": "data",
    "optimizer": "optimizer (defaults: the reference's)",
}


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


def add_setting_flag(g: argparse._ArgumentGroup, s: Setting) -> None:
    """The flag of a declared setting (`config.Setting`): `--x / --no-x` for a boolean, a
    choice for a name, a number otherwise (an integer's lower bound checked here, a real's
    range when the config is made)."""
    text = s.help.replace("%", "%%")  # argparse formats help with %
    if s.kind == "bool":
        g.add_argument(s.flag, action=argparse.BooleanOptionalAction, help=text)
    elif s.kind == "name":
        g.add_argument(s.flag, choices=s.values, help=text)
    elif s.kind == "int":
        assert s.within.high == math.inf, "an integer flag has a lower bound only"
        lowest = math.ceil(s.within.low) if s.within.low_closed else math.floor(s.within.low) + 1
        g.add_argument(s.flag, metavar=s.metavar, type=int_at_least(lowest), help=text)
    else:
        g.add_argument(s.flag, metavar=s.metavar, type=number, help=text)


def add_model_flags(p: argparse.ArgumentParser, switches: bool = True) -> None:
    """The architecture flags: sizes, then one flag per design switch (`switches=False`
    leaves those out)."""
    g = p.add_argument_group(GROUPS["model"])
    for s in SIZE_SETTINGS.values():
        add_setting_flag(g, s)
    if not switches:
        return
    g = p.add_argument_group("design switches (defaults: the reference's)")
    for s in SWITCHES.values():
        if s.boolean:
            g.add_argument(s.flag, action=argparse.BooleanOptionalAction, help=s.help)
        else:
            g.add_argument(s.flag, choices=[str(v) for v in s.values], help=s.help)


def add_train_flags(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """The data and optimizer flags, one per `TrainConfig` setting with a flag group, and
    --input; `seed=False` leaves out --seed (ablate sets the seeds)."""
    g = p.add_argument_group(GROUPS["data"])
    g.add_argument(
        "--input",
        metavar="PATH",
        help="a UTF-8 text file (default: the bundled names)",
    )
    for group in ("data", "optimizer"):
        if group != "data":
            g = p.add_argument_group(GROUPS[group])
        for s in TRAIN_SETTINGS.values():
            if s.group == group and (seed or s.name != "seed"):
                add_setting_flag(g, s)


def add_mode_flags(
    p: argparse.ArgumentParser,
    default_mode: str | None,
    compile: bool = True,
    default_text: str | None = None,
) -> argparse._ArgumentGroup:
    """--mode (default `default_mode`, or with `default_text` None, resolved by the command)
    and tensor mode's placement flags."""
    g = p.add_argument_group("mode")
    g.add_argument(
        "--mode",
        default=default_mode,
        help="scalar (pure Python) or tensor (PyTorch) "
        f"(default: {default_text or default_mode or 'the mode that wrote the checkpoint'})",
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


def add_design_flags(p: argparse.ArgumentParser, settings: bool = True) -> None:
    """--design FILE (a design file of the user's own, `microgpt.design`) and, with
    `settings`, --design-setting NAME=VALUE."""
    g = p.add_argument_group("a design file of your own (tensor mode; docs/designs.md)")
    g.add_argument(
        "--design",
        metavar="FILE",
        help="a design file: its forward, written in PyTorch, in place of the built-in model's "
        "(it runs your code: load only files you trust); checked in float64 before it trains",
    )
    if settings:
        g.add_argument(
            "--design-setting",
            action="append",
            metavar="NAME=VALUE",
            help="a value for one of the design file's settings (default: its own); repeatable",
        )


def design_settings(specs: list[str] | None) -> dict[str, str]:
    """--design-setting NAME=VALUE flags as `name: text` (the design file parses each)."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, eq, value = spec.partition("=")
        name = name.strip()
        if not eq or not name or not value.strip():
            raise UserError(f"--design-setting {spec!r}: write NAME=VALUE, e.g. cap=30")
        if name in out:
            raise UserError(f"--design-setting {name} is given twice")
        out[name] = value
    return out


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
