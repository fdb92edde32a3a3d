"""Recipes: a TOML file of flag values, `--config NAME|PATH`.

A recipe's keys are the command's flag names (`n_layer = 4` or `"n-layer" = 4`); its values become
the command's defaults, so a flag given on the command line overrides the recipe. A bundled
recipe is named without a path (`--config names`); anything with a `/` or ending in `.toml` is a
file. Unknown keys, values of the wrong type and unreadable files are one-line errors.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from microgpt.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NOT_IN_RECIPES = ("config", "resume", "help", "run")  # flags a recipe may not set


def bundled() -> list[str]:
    """The names of the recipes that ship with the package."""
    folder = resources.files("microgpt.recipes")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def read(spec: str) -> tuple[str, dict]:
    """`(where, table)` of a bundled recipe's name or a TOML file's path."""
    if "/" not in spec and not spec.endswith(".toml"):
        if spec not in bundled():
            raise UserError(
                f"--config {spec!r} is not a bundled recipe ({', '.join(bundled())}): "
                "give one of those, or the path of a .toml file"
            )
        where, blob = (
            f"recipe {spec}",
            resources.files("microgpt.recipes").joinpath(f"{spec}.toml").read_bytes(),
        )
    else:
        path = Path(spec)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"--config file {path} does not exist: give a .toml file") from None
        except OSError as e:
            raise UserError(f"cannot read --config file {path}: {e.strerror}") from None
        where = f"--config file {path}"
    try:
        return where, tomllib.loads(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where} is not valid TOML ({e}): fix it") from None


def apply(parser: argparse.ArgumentParser, spec: str) -> set[str]:
    """Make the recipe's values the defaults of `parser` (a subcommand's), each checked as the
    command line would check it; returns the names (`dest`s) it set."""
    where, table = read(spec)
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_IN_RECIPES}
    defaults = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise UserError(
                f"{where}: unknown key {key!r}: use the names of `{parser.prog}` flags, "
                "e.g. n_layer = 4"
            )
        defaults[dest] = _convert(where, key, value, action)
    parser.set_defaults(**defaults)
    return set(defaults)


def _convert(where: str, key: str, value: object, action: argparse.Action) -> object:
    flag = action.option_strings[0] if action.option_strings else key
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise UserError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(value, (dict, list)) or isinstance(value, bool) and action.type is not None:
        raise UserError(f"{where}: {key} = {value!r} is not a value {flag} takes")
    text = str(value)
    if action.type is not None:
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise UserError(f"{where}: {key}: {e}") from None
    if action.choices is not None and value not in action.choices:
        allowed = ", ".join(map(str, action.choices))
        raise UserError(f"{where}: {key} = {value!r} is not one of {allowed}")
    return value
