"""A design file: a model design of the user's own, as a short Python file.

The file is plain Python. It defines `forward`, and may define `name`, `settings`, `switches`
and `weights`:

    '''Logit soft-capping (Gemma 2): logits -> cap * tanh(logits / cap).'''
    import torch
    from microgpt.tensor.blocks import reference_forward

    settings = {"cap": 15.0}  # each setting and its default; `ablate --vary` can vary it
    switches = "all"  # the built-in switches it honours (reference_forward reads them all)

    def forward(w, batch, config, s):
        logits = reference_forward(w, batch, config)
        return s.cap * torch.tanh(logits / s.cap)

- `forward(w, batch, config, s)`: the logits (*S, N, V) of a packed batch, written with torch
  ops and `microgpt.tensor.blocks`. `w` maps each weight's name to its matrix (*S, rows,
  cols): the reference's (`wte`, `wpe`, `lm_head`, `layer{i}.attn_wq` ...,
  `ModelConfig.param_shapes`) and the file's own. `batch` is a `blocks.DesignBatch`; `config`
  the `ModelConfig` (sizes and switches); `s` the settings (`s.cap`). No backward: torch
  autograd derives it.
- `name`: the design's label in tables and plots (default: the file's name without `.py`).
- `settings`: `{name: default}`, each default a bool, int, float or str; a value given for a
  setting is read as the default's type.
- `switches`: the built-in switches (`config.SWITCHES`) the forward honours, a list of names
  or "all"; a switch it does not honour must keep the reference's value (default: none).
- `weights(config, s)`: `{name: spec}` of the weights the file adds, with their shape as a
  function of the model's sizes and their initialisation (`normal`, `zeros`, `ones`,
  `constant`); a reference weight listed there keeps its shape and is re-initialised
  (zero-initialised projections), or rescaled (`scaled`: its own draws times a factor). A
  weight the forward does not use (a reference weight a design replaces) is neither trained
  nor counted: `tensor.design_check` finds which by autograd. The built-in `init` switch
  (`--init zero`) acts on the reference's draws before the file's specs, in a file that
  honours it.
- `--logit-softcap` caps the logits of every design, a file's too, after its forward (as the
  built-in net's): a head's setting, as z-loss is.

Initial weights (`initial_weights`): the whole reference set is drawn first, in the
reference's order from the run's seeded stream, so that every weight a design keeps is the
reference's own for the same seed; then the file's weights, in the order `weights` lists
them. `sha256` (of the file's bytes) names the version of the file a study or a checkpoint was
made with.

A design file runs the user's code, with the user's rights: load only files you trust.
This module imports neither torch nor the file's own imports until `load`.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from microgpt.config import SWITCHES, ModelConfig
from microgpt.errors import UserError
from microgpt.init import INIT_STD, Matrix, init_weights

SETTING_TYPES = (bool, int, float, str)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a design's label, a weight's name
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


# weights: shape and initialisation ---------------------------------------------------------------


@dataclass(frozen=True)
class Weight:
    """A matrix of `rows` x `cols`, initialised with gauss(0, std) draws row by row (`std`), or
    to a constant (`value`, drawing nothing). `muon`: with --optimizer muon, whether Muon trains
    it (True) or AdamW (False); None: as `microgpt.muon.muon_matrices` decides by default (a
    hidden matrix, more than one row and column, goes to Muon; a reference weight keeps its
    group)."""

    rows: int
    cols: int
    std: float | None = None
    value: float = 0.0
    muon: bool | None = None

    def __post_init__(self) -> None:
        for n in (self.rows, self.cols):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise UserError(f"a weight's rows and cols must be positive integers, got {n!r}")
        if self.muon is not None and not isinstance(self.muon, bool):
            raise UserError(f"a weight's muon must be True, False or None, got {self.muon!r}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def draw(self, rng: random.Random) -> Matrix:
        if self.std is None:
            return [[float(self.value)] * self.cols for _ in range(self.rows)]
        return [[rng.gauss(0, self.std) for _ in range(self.cols)] for _ in range(self.rows)]


def normal(rows: int, cols: int, std: float = INIT_STD, muon: bool | None = None) -> Weight:
    """Drawn as the reference draws its weights: gauss(0, std), row by row."""
    return Weight(rows, cols, std=float(std), muon=muon)


def zeros(rows: int, cols: int, muon: bool | None = None) -> Weight:
    return Weight(rows, cols, value=0.0, muon=muon)


def ones(rows: int, cols: int, muon: bool | None = None) -> Weight:
    return Weight(rows, cols, value=1.0, muon=muon)


def constant(rows: int, cols: int, value: float, muon: bool | None = None) -> Weight:
    return Weight(rows, cols, value=float(value), muon=muon)


@dataclass(frozen=True)
class Scaled:
    """A reference weight re-initialised as its own draws times `factor`, drawing nothing
    more (nanochat's small head: `scaled(1 / 80)` of lm_head's gauss(0, 0.08), std 0.001)."""

    factor: float
    muon: bool | None = None


def scaled(factor: float, muon: bool | None = None) -> Scaled:
    return Scaled(float(factor), muon)


# settings ----------------------------------------------------------------------------------------


class Settings(Mapping):
    """A design's settings, read-only: `s.cap` (or `s["cap"]`)."""

    def __init__(self, values: Mapping):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("a design's settings are read-only")

    def __getitem__(self, name: str):
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def parse_setting(design: str, name: str, default, value):
    """`value` (a string from a command line, or a value) read as the type of `default`."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if kind is bool:
            if text.lower() in TRUE + FALSE:
                return text.lower() in TRUE
        else:
            try:
                return kind(text)
            except ValueError:
                pass
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    raise UserError(
        f"design {design}: setting {name} must be {what} (its default is {default!r}), "
        f"got {value!r}"
    )


# the file ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesignFile:
    """A loaded design file (`load`): its interface, checked, and its content hash."""

    path: str
    name: str
    sha256: str  # of the file's bytes
    settings: dict  # each setting's default
    switches: tuple[str, ...]  # the built-in switches it honours
    module: types.ModuleType

    def __repr__(self) -> str:
        return f"DesignFile({self.name!r}, {self.path!r}, sha256={self.sha256[:12]})"

    def resolve(self, values: Mapping | None = None) -> Settings:
        """The settings: each default, or the value given for it (a string is parsed)."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.settings))
        if unknown:
            known = ", ".join(self.settings) or "none"
            raise UserError(
                f"design {self.name} has no setting {unknown[0]!r} (its settings: {known})"
            )
        return Settings(
            {
                k: parse_setting(self.name, k, d, values[k]) if k in values else d
                for k, d in self.settings.items()
            }
        )

    def check_config(self, config: ModelConfig) -> None:
        """A switch the file does not honour must keep the reference's value."""
        check_switches(self.name, self.path, self.switches, config)

    def weight_specs(self, config: ModelConfig, settings: Settings) -> dict[str, Weight]:
        """The file's `weights(config, s)`, checked: its own and re-initialised weights."""
        make = getattr(self.module, "weights", None)
        if make is None:
            return {}
        specs = self.call(make, "weights", config, settings)
        if not isinstance(specs, dict):
            raise self.error(f"weights(config, s) returned {type(specs).__name__}, not a dict")
        reference = config.param_shapes()
        for name, spec in specs.items():
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise self.error(f"weights(): {name!r} is not a weight name (letters, digits, _.)")
            if isinstance(spec, Scaled):
                if name not in reference:
                    raise self.error(
                        f"weights(): scaled() multiplies a reference weight's own draws: "
                        f"{name} is not one (give it normal(rows, cols, std) instead)"
                    )
                continue
            if not isinstance(spec, Weight):
                raise self.error(
                    f"weights(): {name} is {type(spec).__name__}: give normal(rows, cols), "
                    "zeros(rows, cols), ones(rows, cols), constant(rows, cols, value) or "
                    "scaled(factor) from microgpt.design"
                )
            if name in reference and spec.shape != reference[name]:
                rows, cols = reference[name]
                raise self.error(
                    f"weights(): {name} is the reference's {rows}x{cols} weight: "
                    f"re-initialised it keeps that shape; give a {spec.rows}x{spec.cols} "
                    "weight a new name"
                )
        return specs

    def shapes(self, config: ModelConfig, settings: Settings) -> dict[str, tuple[int, int]]:
        """Every weight the forward may use, `name: (rows, cols)`, in draw order: the
        reference's, then the file's new ones."""
        out = dict(config.param_shapes())
        for name, spec in self.weight_specs(config, settings).items():
            if name not in out:
                out[name] = spec.shape
        return out

    def initial_weights(
        self,
        config: ModelConfig,
        settings: Settings,
        rng: random.Random,
        reference: dict[str, Matrix] | None = None,
    ) -> dict[str, Matrix]:
        """Every weight's initial values, in `shapes` order: the reference's (drawn from `rng`
        now, or `reference` if already drawn from it), then the file's weights, drawn from
        `rng` after them in the order `weights` lists them."""
        out = dict(reference if reference is not None else init_weights(config, rng))
        for name, spec in self.weight_specs(config, settings).items():
            if isinstance(spec, Scaled):
                out[name] = [[x * spec.factor for x in row] for row in out[name]]
            else:
                out[name] = spec.draw(rng)
        return out

    def declared_muon(self, config: ModelConfig, settings: Settings) -> dict[str, bool]:
        """The weights whose optimizer group the file declares (`Weight.muon`): name: whether
        Muon trains it."""
        specs = self.weight_specs(config, settings)
        return {name: spec.muon for name, spec in specs.items() if spec.muon is not None}

    def run(self, settings: Settings, used: tuple[str, ...] | None = None) -> DesignRun:
        """What a run needs to use this file with `settings` in another process, or later."""
        path = self.module.__file__  # absolute: a checkpoint may be read from elsewhere
        return DesignRun(path, self.sha256, self.name, tuple(settings.items()), used)

    def bind(self, config: ModelConfig, settings: Settings) -> Callable:
        """The file's forward with config and settings bound: (w, batch) -> logits."""
        forward = self.module.forward

        def bound(w, batch):
            return forward(w, batch, config, settings)

        return bound

    def call(self, f: Callable, what: str, *args):
        """f(*args), any exception as a one-line `UserError` naming the file and its line."""
        try:
            return f(*args)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code: any error is theirs to fix
            raise self.error(f"{what} failed: {describe(e, self.module.__file__)}") from None

    def error(self, what: str) -> UserError:
        return UserError(f"design file {self.path}: {what}")


def check_switches(name: str, path: str, switches: tuple[str, ...], config: ModelConfig) -> None:
    """A switch that design `name` (at `path`) does not honour (not among `switches`) must
    keep the reference's value in `config`: else a one-line error."""
    for switch, s in SWITCHES.items():
        value = getattr(config, switch)
        if switch not in switches and value != s.reference:
            honoured = ", ".join(switches) or "none"
            raise UserError(
                f"design {name} ({path}) does not honour {s.flag} {str(value).lower()}: it "
                f"declares switches: {honoured}"
            )


class DesignError(UserError):
    """A design file's own code failed while a model trained or evaluated (its forward or
    backward): the message names the file and the line."""


@dataclass(frozen=True)
class DesignRun:
    """A design file as a run uses it, in plain values (a worker process gets it pickled, a
    checkpoint keeps it): the file, the version it must be (`sha256`), its name, its settings'
    values and, once checked for the run's model, the weights it uses (`used`, draw order)."""

    path: str
    sha256: str
    name: str
    settings: tuple[tuple[str, object], ...]
    used: tuple[str, ...] | None = None

    def load(self, what: str = "the study") -> DesignFile:
        """The file, which must be the version this run was made with: else a one-line error
        that says so (`what` made it: "the study", "checkpoint run.safetensors")."""
        if not Path(self.path).is_file():
            raise UserError(
                f"design file {self.path} ({self.name}) is missing: {what} was made with it; "
                "restore it, or give its new place with --design FILE"
            )
        file = load(self.path)
        if file.sha256 != self.sha256:
            raise UserError(
                f"design file {self.path} is not the version {what} was made with (its sha256 "
                f"is {file.sha256[:12]}, not {self.sha256[:12]}): restore that version"
                + (
                    ", or run the study again: it checks the file again"
                    if what == "the study"
                    else ""
                )  # fmt: skip
            )
        return file

    @classmethod
    def of_checkpoint(cls, entry: dict, path: str, given: str | None) -> DesignRun:
        """The design a checkpoint at `path` was trained with (its `design` metadata,
        `checkpoint.design_entry`), from the file `given` (--design) or the path it names,
        which must be the version it names."""
        run = cls(
            given or entry["path"],
            entry["sha256"],
            entry["name"],
            tuple(entry["settings"].items()),
            tuple(entry["weights"]),
        )
        run.load(f"checkpoint {path}")
        return run

    def values(self) -> dict:
        return dict(self.settings)


def shown(path: str) -> str:
    """A design file's path as a line shows it: under the working folder, relative to it."""
    p, here = Path(path), Path.cwd()
    return str(p.relative_to(here)) if p.is_absolute() and p.is_relative_to(here) else str(p)


def describe(e: BaseException, path: str) -> str:
    """`Type: first line of the message (line N)`, N the last line of `path` in the trace."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    if isinstance(e, SyntaxError) and e.filename == path and e.lineno:
        lines.append(e.lineno)
    return f"{text} (line {lines[-1]})" if lines else text


def load(path: str | Path) -> DesignFile:
    """Read, hash and run the design file at `path`; check its interface."""
    p = Path(path)
    shown = str(path)
    if not p.is_file():
        raise UserError(f"design file {shown}: no such file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"design file {shown}: cannot read it ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"design file {shown}: not UTF-8 text") from None
    sha = hashlib.sha256(data).hexdigest()
    resolved = str(p.resolve())
    # a name of its own (file and content), so that the file's classes and dataclasses work
    # and no other module's name is taken
    key = hashlib.sha256(f"{resolved}\0{sha}".encode()).hexdigest()[:16]
    module_name = f"_microgpt_design_{key}"
    module = sys.modules.get(module_name)
    if module is None:
        module = types.ModuleType(module_name)
        module.__file__ = resolved
        sys.modules[module_name] = module
        try:
            exec(compile(text, resolved, "exec"), module.__dict__)  # noqa: S102 - the user's file
        except BaseException as e:
            del sys.modules[module_name]
            if not isinstance(e, Exception):
                raise
            raise UserError(
                f"design file {shown} does not import: {describe(e, resolved)}"
            ) from None
    return _interface(module, shown, resolved, sha)


def _interface(module: types.ModuleType, shown: str, resolved: str, sha: str) -> DesignFile:
    def error(what: str) -> UserError:
        return UserError(f"design file {shown}: {what}")

    forward = getattr(module, "forward", None)
    if not callable(forward):
        raise error("it defines no forward(w, batch, config, s) (see microgpt.design)")
    try:
        inspect.signature(forward).bind(None, None, None, None)
    except (TypeError, ValueError):
        raise error("forward must take four arguments: (w, batch, config, s)") from None
    name = getattr(module, "name", Path(shown).stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise error(f"name {name!r} is not a label (letters, digits, _ . + -)")
    settings = getattr(module, "settings", {})
    if not isinstance(settings, dict):
        raise error(f"settings must be a dict of name: default, not {type(settings).__name__}")
    for k, v in settings.items():
        if not isinstance(k, str) or not k.isidentifier() or k.startswith("_"):
            raise error(f"setting {k!r} is not a name (a Python identifier)")
        if hasattr(Settings, k):
            raise error(f"setting {k!r}: the name is taken (by Settings.{k}); rename it")
        if not isinstance(v, SETTING_TYPES):
            raise error(f"setting {k}'s default must be a bool, int, float or str, got {v!r}")
    switches = getattr(module, "switches", ())
    if switches == "all":
        switches = tuple(SWITCHES)
    if isinstance(switches, str) or not isinstance(switches, (list, tuple)):
        raise error('switches must be a list of switch names, or "all"')
    unknown = [s for s in switches if s not in SWITCHES]
    if unknown:
        raise error(f"switches: {unknown[0]!r} is not one of {', '.join(SWITCHES)}")
    weights = getattr(module, "weights", None)
    if weights is not None and not callable(weights):
        raise error("weights must be a function weights(config, s) -> {name: spec}")
    ordered = tuple(s for s in SWITCHES if s in switches)
    return DesignFile(shown, name, sha, dict(settings), ordered, module)
