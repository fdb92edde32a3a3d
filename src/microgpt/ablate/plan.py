"""What a study runs: designs × levels × seeds.

A study varies its *design axes* and, optionally, its *levels* (`--vary`, `parse_vary`). The
design axes are every design switch (`config.SWITCHES`) and every setting declared a design
axis (`config.Setting.vary`: the optimizer, the schedule and its warm-up, decay and floor, Adam's
betas, weight decay, clipping, dropout...); a design is one combination of their values
(`designs_of`), compared with the baseline design. The levels are the settings declared levels
(the sizes, the steps, the batch size, the learning rate and the z-loss): every design is trained
and compared at every level, and the report asks whether the comparison holds across them. What
is an axis and what a level is read from the declarations (`AXES`, `LEVELS`): nothing here names
a setting. Design files (`--design FILE`, `microgpt.design`) are one more kind of design axis
(`file_axes`): `design_file`, whose values are the built-in model (`BUILT_IN`, the baseline's)
and each file by its name, and each file's settings, `NAME.SETTING` (`--vary softcap.cap=5,30`),
used by that file's designs only. A learning-rate sweep (`--lr-sweep`, `Study.lrs`) is an axis of
its own: every design at every level is trained at every rate of the grid, and compared at its
own best rate (see `ablate.sweep`). Every other setting is shared by every run. A seed fixes the
train/validation split and the data order for every design, level and rate alike, so differences
between designs are paired by seed. The baseline of every comparison is the baseline design
(`designs_of`) at the same level and seed.

`Study.settings()` is everything a run's numbers depend on besides its own design, level and
seed, the code that computes them included: a saved run is reused only if its settings match
exactly, and their hash names the default output folder, so running the same command again
resumes in place (and a changed engine starts afresh).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from importlib import metadata
from pathlib import Path

import microgpt
from microgpt.config import (
    REFERENCE_DESIGN,
    SETTINGS,
    SWITCHES,
    ModelConfig,
    Setting,
    Switch,
    TensorOptions,
    TrainConfig,
    in_use,
    number_text,
    stack_shared,
    unused,
)
from microgpt.design import DesignRun, check_switches, parse_setting
from microgpt.errors import UserError

NOT_SETTINGS = ("seed", "last_n")  # per run, and a reporting choice: neither names the folder
FILE_AXIS = "design_file"  # the design axis of a study's design files (`file_axes`) ...
BUILT_IN = "built-in"  # ... and its value for the built-in model, the baseline's
PLANS = ("full", "one-at-a-time")


# what may vary: design axes and levels, from their declarations -------------------------------


@dataclass(frozen=True)
class Axis:
    """A design axis: a switch or a setting declared `vary="design"`, as a study sees it. Made
    from the declaration (`switch_axis`, `setting_axis`), so that a new declaration is an axis
    with nothing to add here; any other kind of design choice is one more maker of an Axis (a
    design file: `file_axes`)."""

    name: str
    config: str  # "model" or "train": the config whose field it sets ("design": a design file's)
    default: object  # the study's value when no flag gives one (a switch's: the reference's)
    every: tuple | None  # every value, taken when none is listed; None: numbers, to be listed
    per_run: bool  # runs that differ in it may share a stack (config.STACK_PER_RUN)
    applies: tuple[str, object] | None  # (setting, value): only used with that value
    flag: str
    parse: Callable[[str], object]  # text -> value, or the declaration's UserError
    label: Callable[[object], str]  # value -> how a design's label shows it
    numeric: bool = False  # its values are numbers: their slugs are name and value, as a level's
    leads: bool = False  # its label leads a design's, and at its default names a design only
    # alone (a design file: the model the other axes change; the built-in model, `built-in`)
    joins: bool = False  # its label joins the label of the axis it applies to (a design
    # file's setting, after the file's name: `softcap cap=5`)

    def used_by(self, values: dict) -> bool:
        """Whether a run whose settings are `values` (name: value) uses it (`applies`)."""
        return self.applies is None or values[self.applies[0]] == self.applies[1]

    def slug(self, value: object) -> str:
        """A value in file names: `weight_decay0.1` for a number, else its label's slug."""
        if self.numeric:
            return f"{self.name}{number_text(value)}"
        return _slug(self.label(value))


def switch_axis(s: Switch) -> Axis:
    return Axis(s.name, "model", s.reference, s.values, False, None, s.flag, s.parse, s.label)


def setting_axis(s: Setting) -> Axis:
    numeric = s.every is None
    return Axis(s.name, s.config, s.default, s.every, s.per_run, s.applies, s.flag, s.parse,
                s.value_label, numeric)  # fmt: skip


def _axes() -> dict[str, Axis]:
    """Every design axis, in declaration order: ModelConfig's fields, then TrainConfig's."""
    out = {}
    for config in (ModelConfig, TrainConfig):
        for f in fields(config):
            if f.name in SWITCHES:
                out[f.name] = switch_axis(SWITCHES[f.name])
            elif f.name in SETTINGS and SETTINGS[f.name].vary == "design":
                out[f.name] = setting_axis(SETTINGS[f.name])
    return out


AXES = _axes()
LEVELS = tuple(name for name, s in SETTINGS.items() if s.vary == "level")
DEFAULTS = {**REFERENCE_DESIGN, **{name: s.default for name, s in SETTINGS.items()}}
# a setting used only with another's value is used or not by a design, never by a level
assert all(a.applies is None or a.applies[0] not in LEVELS for a in AXES.values())


def parse_vary(specs: list[str], files: tuple[StudyFile, ...] = ()) -> dict[str, tuple]:
    """`--vary NAME[=V1,V2,...]` flags as `name: values`, design axes and levels alike, and the
    settings of a study's design files (`files`), `FILE.SETTING=V1,V2,...` (`file_axes`).

    A switch, a name (the optimizer, the schedule) or a yes/no varies over every value it has
    unless a list is given; a number and a file's setting need a list. Each value is parsed and
    checked by its declaration (a file's setting: as its default's type). Dashes or underscores
    both name a setting (a file's setting is named as written)."""
    axes = {**AXES, **file_axes(files)}
    out: dict[str, tuple] = {}
    for spec in specs:
        name, _, listed = spec.partition("=")
        name = name.strip()
        name = name if "." in name else name.replace("-", "_")
        if name in out:
            raise UserError(f"--vary {name} is given twice: give it once with all its values")
        texts = listed.split(",") if listed else []
        if listed and any(not t.strip() for t in texts):
            raise UserError(f"--vary {spec!r} has an empty value: write NAME=V1,V2,...")
        if name in axes and name != FILE_AXIS:  # the files are --design's
            every, parse = axes[name].every, axes[name].parse
        elif name in LEVELS:
            every, parse = None, SETTINGS[name].parse
        else:
            raise UserError(_not_varied(name, files))
        if not texts and every is None:
            raise UserError(f"--vary {name} needs its values: e.g. --vary {name}={_example(name)}")
        try:
            values = tuple(parse(t) for t in texts) if texts else every
        except UserError as e:
            raise UserError(f"--vary {name}: {e}") from None
        if len(set(values)) != len(values):
            raise UserError(f"--vary {spec!r} repeats a value")
        if len(values) < 2:
            raise UserError(f"--vary {spec!r} gives one value: give two or more, or use its flag")
        out[name] = values
    return out


def _not_varied(name: str, files: tuple[StudyFile, ...] = ()) -> str:
    if name == "seed":
        return "--vary seed: a study's seeds are --seeds K or --seed-list S,S,..."
    if name == FILE_AXIS:
        return f"--vary {name}: a study's design files are its --design FILE flags"
    if "." in name:
        file, _, setting = name.rpartition(".")
        f = next((f for f in files if f.name == file), None)
        if f is None:
            given = ", ".join(f.name for f in files) or "none"
            return f"--vary {name}: no design file is named {file!r} (the --design files: {given})"
        known = ", ".join(k for k, _ in f.settings) or "none"
        return f"--vary {name}: design {file} has no setting {setting!r} (its: {known})"
    if name in SETTINGS:
        return f"--vary {name}: {SETTINGS[name].label} is the study's, the same for every run"
    known = ", ".join([*AXES, *LEVELS])
    return f"--vary {name!r} is not a setting a study varies: use one of {known}"


def _example(name: str) -> str:
    """Two values of a number for a message: its default and another."""
    if name not in SETTINGS:  # a design file's setting
        return "V1,V2"
    s = SETTINGS[name]
    a = s.default
    b = a * 2 if a else (1 if s.kind == "int" else 0.1)
    b = b if s.allows(b) else a / 2
    return f"{number_text(a)},{number_text(b)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("²", "2")).strip("-")


@dataclass(frozen=True)
class Design:
    """The values of the design axes a design has, in the order of its study's axes (`AXES`,
    declaration order); an axis the design does not use (its `applies`: a decay fraction
    without wsd) is left out. It carries its axes (the declared ones unless given), which
    name its values; two designs are equal when their values are."""

    values: tuple[tuple[str, object], ...]
    axes: tuple[Axis, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.values):
            object.__setattr__(self, "axes", tuple(AXES[n] for n, _ in self.values))

    def flags(self) -> dict:
        """Every axis's value, `name: value`."""
        return dict(self.values)

    def of(self, config: str) -> dict:
        """The values of the axes that are fields of `config` ("model" or "train")."""
        return {n: v for a, (n, v) in zip(self.axes, self.values) if a.config == config}

    def switches(self) -> dict:
        """The values of its switches alone (what records called a design before other axes)."""
        return {n: v for n, v in self.values if n in SWITCHES}

    def _parts(self) -> list[tuple[str, str]]:
        """Its label's parts and their slugs: each axis's in order, a leading axis's first (at
        its default, only when there is no other part), a joining axis's added to the part of
        the axis it applies to."""
        parts = {n: [a.label(v), a.slug(v)] for a, (n, v) in zip(self.axes, self.values)}
        for a, (n, _) in zip(self.axes, self.values):
            if a.joins and a.applies[0] in parts:
                part = parts.pop(n)
                parts[a.applies[0]][0] += f" {part[0]}"
                parts[a.applies[0]][1] += f"-{part[1]}"
        lead, rest, quiet = [], [], []
        for a, (n, v) in zip(self.axes, self.values):
            if n in parts:
                (quiet if a.leads and v == a.default else lead if a.leads else rest).append(n)
        return [tuple(parts[n]) for n in (lead + rest or quiet)]

    @property
    def label(self) -> str:
        return ", ".join(label for label, _ in self._parts())

    @property
    def slug(self) -> str:  # for file names
        return "_".join(slug for _, slug in self._parts()) or "design"


@dataclass(frozen=True)
class Level:
    """The values of the varied levels (empty when none varies)."""

    values: tuple[tuple[str, int | float], ...]

    def flags(self) -> dict:
        return dict(self.values)

    def of(self, config: str) -> dict:
        """The values of the settings that are fields of `config` ("model" or "train")."""
        return {n: v for n, v in self.values if SETTINGS[n].config == config}

    @property
    def label(self) -> str:
        return ", ".join(f"{name} {number_text(value)}" for name, value in self.values)

    @property
    def slug(self) -> str:
        return "_".join(f"{name}{number_text(value)}" for name, value in self.values)


def baseline_values(
    varied: dict[str, tuple], given: dict | None = None, axes: dict[str, Axis] = AXES
) -> dict:
    """The baseline's value of every varied axis (of `axes`, in their order): the study's own
    (`given`: its flag's, else its default) when it is listed, else the first listed."""
    given = given or {}
    out = {}
    for name in (n for n in axes if n in varied):
        own = given.get(name, axes[name].default)
        out[name] = own if own in varied[name] else varied[name][0]
    return out


def designs_of(
    varied: dict[str, tuple],
    plan: str,
    given: dict | None = None,
    fixed: dict | None = None,
    axes: dict[str, Axis] = AXES,
) -> tuple[list[Design], Design]:
    """The designs of a plan and its baseline (first): `full` crosses every varied axis (of
    `axes`: the declared ones, or a study's with more); `one-at-a-time` changes one axis at a
    time from the baseline (`baseline_values`). An axis that a combination does not use (its
    `applies`, with `fixed`, the study's values of what does not vary: default, the defaults)
    is left out of that design, and the combinations it made alike are one design: with
    `--vary lr_schedule=linear,wsd --vary decay_fraction=0.1,0.3`, "linear decay" once, "wsd,
    decay fraction 0.1" and "wsd, decay fraction 0.3"."""
    base = baseline_values(varied, given, axes)
    names = list(base)  # the axes' order
    if plan == "full":
        # the baseline's value first for every axis, so the baseline is the first design;
        # the first axis changes fastest, as the seed's four designs were ordered
        orders = [[base[n], *(v for v in varied[n] if v != base[n])] for n in reversed(names)]
        combos = [dict(zip(names, reversed(c))) for c in itertools.product(*orders)]
    else:
        combos = [base] + [{**base, n: v} for n in names for v in varied[n] if v != base[n]]
    study = {**DEFAULTS, **(fixed or {})}
    designs = list(dict.fromkeys(_used(combo, study, axes) for combo in combos))
    return designs, designs[0]


def _used(combo: dict, study: dict, axes: dict[str, Axis]) -> Design:
    """The design of one combination of values: the axes it uses, given the study's values."""
    values = {**study, **combo}
    kept = [n for n in combo if axes[n].used_by(values)]
    return Design(tuple((n, combo[n]) for n in kept), tuple(axes[n] for n in kept))


def levels_of(varied: dict[str, tuple]) -> list[Level]:
    """Every combination of the varied levels, in the order given."""
    names = [n for n in varied if n in LEVELS]
    return [
        Level(tuple(zip(names, combo))) for combo in itertools.product(*(varied[n] for n in names))
    ]


# design files: one more kind of design axis -----------------------------------------------------


@dataclass(frozen=True)
class StudyFile:
    """A design file of a study (`--design`): its name (its designs' label), the file (absolute
    path, sha256), the built-in switches it honours and its settings' values where the study
    does not vary them (each default, or --design-setting's)."""

    name: str
    path: str
    sha256: str
    switches: tuple[str, ...]
    settings: tuple[tuple[str, object], ...]

    def entry(self) -> dict:
        """As a study's settings name it (an edited file is another study)."""
        return {"path": self.path, "sha256": self.sha256, "settings": dict(self.settings)}


def file_axes(files: tuple[StudyFile, ...]) -> dict[str, Axis]:
    """A study's design files as design axes (none without files): each file's settings,
    `NAME.SETTING`, used by that file's designs only, each labelled after the file's name
    (`softcap cap=5`), its default the file's value in this study; then `design_file`, whose
    values are the built-in model (the baseline's) and each file by its name, leading a
    design's label. Last in a study's axes, so that `designs_of` lists the built-in model's
    designs first, then each file's, and a file's settings change faster than the file."""
    if not files:
        return {}
    out = {}
    for f in files:
        for setting, value in f.settings:
            name = f"{f.name}.{setting}"
            out[name] = Axis(name, "design", value, None, False, (FILE_AXIS, f.name),
                             f"--design-setting {name}", partial(parse_setting, f.name, setting,
                             value), partial(_setting_label, setting), joins=True)  # fmt: skip
    names = (BUILT_IN, *(f.name for f in files))
    out[FILE_AXIS] = Axis(FILE_AXIS, "design", BUILT_IN, names, False, None, "--design",
                          partial(_one_of, names), str, leads=True)  # fmt: skip
    return out


def _one_of(names: tuple[str, ...], text: str) -> str:
    if text not in names:
        raise UserError(f"{text!r} is not one of the study's designs: {', '.join(names)}")
    return text


def _setting_label(setting: str, value: object) -> str:
    """A design file's setting in a label: `cap=5`, `affine=true`."""
    if isinstance(value, bool):
        return f"{setting}={str(value).lower()}"
    return f"{setting}={number_text(value) if isinstance(value, (int, float)) else value}"


def _check_files(study: Study) -> None:
    """A study's design files, before anything else is checked: each name apart from the
    other files', the built-in model's and every named value and label of a design axis (a
    table's row, a column or a --vary name must say which design it is); every varied switch
    honoured by every file (else its runs would be the same under two labels)."""
    taken = {BUILT_IN: "the built-in model's label"}
    for axis in AXES.values():
        for value in axis.every or ():
            taken.setdefault(str(value).lower(), f"a value of {axis.flag}")
            taken.setdefault(axis.label(value).lower(), f"a label of {axis.flag}")
    for f in study.files:
        clash = taken.get(f.name.lower())
        if clash:
            raise UserError(
                f"design file {f.path}: its name {f.name!r} is {clash}: give the file another "
                'name (name = "..." in it)'
            )
        taken[f.name.lower()] = f"design file {f.path}'s name"
        for switch in (n for n in SWITCHES if n in study.varied):
            if switch not in f.switches:
                honoured = ", ".join(f.switches) or "none"
                raise UserError(
                    f"design {f.name} ({f.path}) does not honour {switch}: --vary {switch} "
                    f"would train it unchanged under two labels (it honours: {honoured})"
                )


def checked_key(name: str, settings: dict, model_args: dict) -> str:
    """`Study.checked`'s key: a design file's name, its settings' values and the model."""
    return json.dumps([name, settings, model_args], sort_keys=True)


def design_settings(run: DesignRun) -> dict:
    """A file design's run as its settings name it: the file's version and settings."""
    return {"name": run.name, "sha256": run.sha256, "settings": run.values()}


# the study --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One run, with everything a worker process needs to do it and save it."""

    mode: str
    design: Design
    level: Level
    seed: int
    lr: float | None  # the rate of a learning-rate sweep (None: no sweep)
    log_every: int  # tensor mode: the run's diagnostics every K steps and at the end (0: none)
    model_args: dict  # the ModelConfig fields but vocab_size, this run's switches and sizes
    train: TrainConfig  # with this run's seed, design and level
    tensor: TensorOptions | None
    input_path: str | None
    fingerprint: str  # of the documents, checked again by the worker
    settings: dict  # what a saved run must match exactly (JSON values)
    path: str  # the run's own JSON file
    design_run: DesignRun | None = None  # its design file as it runs it (None: the built-in)
    params: int | None = None  # its design's parameter count (None: unknown, the config's)

    @property
    def label(self) -> str:
        return _label(self.level, self.design, self.lr)

    @property
    def parts(self) -> tuple[str, ...]:
        """What its file name is made of: level, design, rate and seed (see `Study.tasks`)."""
        return _parts(self.level, self.design, self.lr) + (f"seed{self.seed}",)


def _label(level: Level, design: Design, lr: float | None) -> str:
    rate = f"lr {number_text(lr)}" if lr is not None else ""
    return ", ".join(x for x in (level.label, design.label, rate) if x)


def _parts(level: Level, design: Design, lr: float | None) -> tuple[str, ...]:
    rate = f"lr{number_text(lr)}" if lr is not None else ""
    return tuple(x for x in (level.slug, design.slug, rate) if x)


@dataclass(frozen=True)
class Study:
    mode: str
    model_args: dict  # sizes and the switches that do not vary: resolved, defaults included
    train: TrainConfig  # its seed is ignored: each run gets its own; a varied axis: its default
    tensor: TensorOptions | None  # None in scalar mode
    input_path: str | None  # None: the bundled names
    fingerprint: str
    vocab_size: int
    seeds: tuple[int, ...]
    versions: dict  # see `versions`
    varied: dict  # name: values, design axes and levels (see parse_vary)
    plan: str = "full"
    stack: int = 1  # at most this many runs of one shape trained as one computation (1: alone)
    lrs: tuple[float, ...] | None = None  # a learning-rate sweep's grid, ascending (see sweep.py)
    log_every: int | None = None  # tensor mode: each run's diagnostics every K steps and at
    # the end (None: every tenth of its steps); scalar mode has none
    given: dict = field(default_factory=dict)  # a varied axis's flag, when given: one of its
    # listed values, the baseline's (see `baseline_values`)
    files: tuple[StudyFile, ...] = ()  # design files (`--design`), in the order given
    checked: dict = field(default_factory=dict)  # `checked_key` -> (used weights, params):
    # what `design_check` found of each file, with its settings, in each level's model

    @property
    def sweep(self) -> bool:
        return self.lrs is not None

    def diagnostics_every(self, steps: int) -> int:
        """Every how many steps a run of `steps` samples its diagnostics (0: never, scalar
        mode): --log-every, or a tenth of the steps."""
        if self.mode != "tensor":
            return 0
        return self.log_every or max(1, steps // 10)

    def axis_table(self) -> dict[str, Axis]:
        """Every design axis this study knows, by name, in order: the declared ones (`AXES`),
        then its design files' (`file_axes`)."""
        return {**AXES, **file_axes(self.files)} if self.files else AXES

    @property
    def axes(self) -> list[str]:
        """The varied design axes, in order."""
        return [n for n in self.axis_table() if n in self.varied]

    @property
    def numeric(self) -> list[str]:
        """The varied levels, in the order given."""
        return [n for n in self.varied if n in LEVELS]

    def fixed(self) -> dict:
        """The study's value of every setting and switch that does not vary (and of a varied
        training setting, its default: each design has its own)."""
        return {**self.model_args, **self.train.to_dict()}

    def designs(self) -> list[Design]:
        return self._designs()[0]

    @property
    def baseline(self) -> Design:
        return self._designs()[1]

    def _designs(self) -> tuple[list[Design], Design]:
        return designs_of(self.varied, self.plan, self.given, self.fixed(), self.axis_table())

    def levels(self) -> list[Level]:
        return levels_of(self.varied)

    def file(self, name: str) -> StudyFile:
        return next(f for f in self.files if f.name == name)

    def file_checks(self) -> list[tuple[str, dict, dict, float]]:
        """Every (file, settings' values, model args, dropout) a study's design files run
        with: what `design_check` checks before the study trains (see `checked`)."""
        out = []
        for level, design in itertools.product(self.levels(), self.designs()):
            model_args, train, run = self.configs(level, design, None)
            entry = (run.name, run.values(), model_args, train.dropout) if run else None
            if entry and entry not in out:
                out.append(entry)
        return out

    def settings(self) -> dict:
        train = {k: v for k, v in self.train.to_dict().items() if k not in NOT_SETTINGS}
        if self.sweep:
            del train["learning_rate"]  # each run's own: see "lr_sweep"
        files = {"designs": {f.name: f.entry() for f in self.files}} if self.files else {}
        return {
            "versions": dict(self.versions),
            "mode": self.mode,
            "model": dict(self.model_args),
            "train": train,
            "tensor": asdict(self.tensor) if self.tensor else None,
            "data": self.fingerprint,
            # stacked or alone: in float32 the last digits may differ (see `stacks`)
            "stack": self.stack,
            "lr_sweep": list(self.lrs) if self.sweep else None,
            "log_every": self.log_every,
            **files,
        }

    def settings_hash(self) -> str:
        """Of the shared settings and of what varies (the seeds left out)."""
        what = {**self.settings(), "varied": self.varied, "plan": self.plan}
        text = json.dumps(what, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def default_out(self) -> str:
        """`runs/ablate-<mode>-<hash>`: the seeds are not in the hash, so a study with more
        seeds lands in the same folder and reuses the runs it shares with a smaller one."""
        return str(Path("runs") / f"ablate-{self.mode}-{self.settings_hash()}")

    def configs(
        self, level: Level, design: Design, lr: float | None, seed: int | None = None
    ) -> tuple[dict, TrainConfig, DesignRun | None]:
        """A run's ModelConfig fields (but vocab_size), TrainConfig and design file: the
        study's, with its design's, level's and rate's values; a setting the run does not use
        (`config.unused`: --decay-fraction in a cosine design) at its default; a design file
        with its settings (the study's, and the design's values of those that vary) and, once
        checked for this model (`checked`), the weights it uses (None: the built-in model)."""
        model_args = {**self.model_args, **design.of("model"), **level.of("model")}
        knobs = {**design.of("train"), **level.of("train")}
        if lr is not None:
            knobs["learning_rate"] = lr
        if seed is not None:
            knobs["seed"] = seed
        train = replace(self.train, **knobs)
        reset = unused({**model_args, **train.to_dict()})
        model_args |= {k: v for k, v in reset.items() if k in model_args}
        train = replace(train, **{k: v for k, v in reset.items() if k not in model_args})
        return model_args, train, self._design_run(design, model_args)

    def _design_run(self, design: Design, model_args: dict) -> DesignRun | None:
        own = design.of("design")
        if own.get(FILE_AXIS, BUILT_IN) == BUILT_IN:
            return None
        f = self.file(own[FILE_AXIS])
        varied = {n.rpartition(".")[2]: v for n, v in own.items() if n != FILE_AXIS}
        values = {**dict(f.settings), **varied}
        checked = self.checked.get(checked_key(f.name, values, model_args))
        used = None if checked is None else tuple(checked[0])
        return DesignRun(f.path, f.sha256, f.name, tuple(values.items()), used)

    def params(self, model_args: dict, run: DesignRun | None) -> int | None:
        """The parameter count of a run of `model_args` and design file `run` (None: a design
        file not yet checked)."""
        if run is None:
            return ModelConfig(vocab_size=self.vocab_size, **model_args).num_params()
        checked = self.checked.get(checked_key(run.name, run.values(), model_args))
        return None if checked is None else checked[1]

    def tasks(self, out_dir: str | Path) -> list[Task]:
        """Level-major, then design (baseline first), then learning rate (ascending, in a
        sweep), then seeds in the order given."""
        base = self.settings()
        tasks = []
        lrs = self.lrs if self.sweep else (None,)
        for level, design, lr in itertools.product(self.levels(), self.designs(), lrs):
            for seed in self.seeds:
                model_args, train, run = self.configs(level, design, lr, seed)
                settings = {**base, "model": model_args}
                settings["train"] = {
                    k: v for k, v in train.to_dict().items() if k not in NOT_SETTINGS
                }
                if self.files:  # a run names its own file's version, not the others'
                    del settings["designs"]
                    settings["design"] = None if run is None else design_settings(run)
                name = "-".join(("run", *_parts(level, design, lr), f"seed{seed}"))
                tasks.append(
                    Task(
                        mode=self.mode,
                        design=design,
                        level=level,
                        seed=seed,
                        lr=lr,
                        log_every=self.diagnostics_every(train.steps),
                        model_args=model_args,
                        train=train,
                        tensor=self.tensor,
                        input_path=self.input_path,
                        fingerprint=self.fingerprint,
                        settings=normalized({**settings, "seed": seed}),
                        path=str(Path(out_dir) / f"{name}.json"),
                        design_run=run,
                        params=self.params(model_args, run),
                    )
                )
        return tasks


def check_study(study: Study) -> None:
    """Every combination of what varies that cannot run, as one UserError line, before any
    run starts: a design file's name that clashes, or a varied switch it does not honour
    (`_check_files`); an axis no design uses, a listed value no design has, a fixed setting that
    no design uses; then each design's, level's and rate's configs, as its runs will make them
    (a design file's with the switches it honours). A design file's own code is checked later,
    on documents (`tensor.design_check`, run by `ablate.cli`)."""
    from microgpt.modes import check_train_options

    _check_files(study)
    designs, fixed, axes = study.designs(), study.fixed(), study.axis_table()
    for name in study.axes:
        applies = axes[name].applies
        had = [d.flags()[name] for d in designs if name in d.flags()]
        if applies is not None and not had:
            flag, value = _flag(applies[0], axes), applies[1]
            raise UserError(
                f"--vary {name}: it applies to {flag} {value}, which no design of this study "
                f"has: give {flag} {value}, or vary {applies[0]} with {value} among its values"
            )
        for value in study.varied[name]:
            if value not in had:  # --plan one-at-a-time, from a baseline that does not use it
                flag, needs = _flag(applies[0], axes), applies[1]
                raise UserError(
                    f"--vary {name}: --plan one-at-a-time changes one setting at a time from "
                    f"the baseline, which does not use {name} (only {flag} {needs} does), so "
                    f"{axes[name].label(value)} would never run: use --plan full"
                )
    for name, s in SETTINGS.items():  # a flag that only a design could use
        if s.applies is None or name in study.varied or fixed.get(name, s.default) == s.default:
            continue
        if not any(in_use(s, {**DEFAULTS, **fixed, **d.flags()}) for d in designs):
            raise UserError(f"{s.flag} applies to {SETTINGS[s.applies[0]].flag} {s.applies[1]}")
    check_train_options(study.mode, study.configs(Level(()), Design(()), None)[1])
    lrs = study.lrs if study.sweep else (None,)
    for level, design, lr in itertools.product(study.levels(), designs, lrs):
        try:
            model_args, train, run = study.configs(level, design, lr)
            config = ModelConfig(vocab_size=2, **model_args)
            check_train_options(study.mode, train)
            if run is not None:  # a switch the file does not honour at the reference's value
                f = study.file(run.name)
                check_switches(f.name, f.path, f.switches, config)
        except UserError as e:
            raise UserError(f"{_label(level, design, lr)}: {e}") from None


def _flag(name: str, axes: dict[str, Axis]) -> str:
    return axes[name].flag if name in axes else SETTINGS[name].flag


# stacks: runs trained as one computation ---------------------------------------------------------

CPU_STACK_BYTES = 16 * 2**20  # the default stack's estimated working set on a CPU (see below)
GPU_STACK_SHARE = 0.25  # ... and its share of the GPU's memory
MAX_STACK = 256


def stack_key(task: Task) -> str:
    """Tasks with the same key may share a stack: tensor mode, the same sizes and model (the
    same design file, its version and settings), and the same training but for what
    `config.STACK_PER_RUN` lets each run have its own (the seed, the learning rate and the rest
    of the schedule)."""
    train = stack_shared(task.train)  # all but config.STACK_PER_RUN
    what = [task.mode, task.model_args, train, asdict(task.tensor) if task.tensor else None]
    if task.design_run is not None:
        what.append(design_settings(task.design_run))
    return json.dumps(what, sort_keys=True)


def stacks(tasks: list[Task], size: int) -> list[list[Task]]:
    """`tasks` grouped into stacks of at most `size` runs, in order: each key's runs (see
    `stack_key`) in the order given, cut into pieces of `size` (the last may be smaller);
    scalar mode, or size 1, runs each alone. The same tasks always give the same stacks, and
    any whole stacks of them again give themselves."""
    if size <= 1 or not tasks or tasks[0].mode != "tensor":
        return [[t] for t in tasks]
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(stack_key(task), []).append(task)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def stack_split(study: Study) -> tuple[list[str], list[str]]:
    """What splits a study's stacks (the varied settings whose runs cannot share one) and
    what the runs of one stack may differ in (the seed, a sweep's rate and the varied per-run
    settings), as `--dry-run` says it."""
    axes = study.axis_table()
    per_run = {n: axes[n].per_run if n in axes else SETTINGS[n].per_run for n in study.varied}
    split = [n for n in [*study.axes, *study.numeric] if not per_run[n]]
    within = ["seed", *(["learning_rate (the sweep)"] if study.sweep else [])]
    within += [n for n in [*study.axes, *study.numeric] if per_run[n]]
    return split, within


def run_bytes(model_args: dict, vocab_size: int, train: TrainConfig, dtype: str) -> int:
    """A rough upper bound on one run's memory in a stack: weights, gradient and Adam moments
    (4 x params, plus a compute copy under bfloat16), and the activations of a step of
    batch_size x block_size positions (about 16 C per layer, the logits, and each layer's
    attention weights)."""
    config = ModelConfig(vocab_size=vocab_size, **model_args)
    C, T, L = config.n_embd, config.block_size, config.n_layer
    size = 8 if dtype == "float64" else 4
    positions = train.batch_size * T
    activations = positions * (L * (16 * C + 3 * config.n_head * T) + 3 * vocab_size)
    return size * (5 * config.num_params() + activations)


def default_stack(study: Study, device: str) -> int:
    """The default cap on a stack: as many runs as keep the largest level's runs within
    `CPU_STACK_BYTES` on a CPU (past a cache-sized working set a stack gains nothing there:
    measured, a 4-layer n_embd 64 model at batch 32 ran no faster stacked), or within a quarter
    of the GPU's memory; never more than `MAX_STACK`. A function of the settings and the
    device kind only, so the same command makes the same stacks."""
    if study.mode != "tensor":
        return 1
    if device == "cuda":
        import torch

        budget = int(GPU_STACK_SHARE * torch.cuda.get_device_properties(0).total_memory)
    else:
        budget = CPU_STACK_BYTES
    largest = max(
        run_bytes(t.model_args, study.vocab_size, t.train, study.tensor.dtype)
        for t in study.tasks(".")
    )
    return max(1, min(MAX_STACK, budget // largest))


def versions(mode: str) -> dict:
    """The package version, a hash of every module of the package (whatever a run's numbers
    come from), and in tensor mode torch's version: a run is reused only on the same."""
    root = Path(microgpt.__file__).parent
    code = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        code.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    out = {"microgpt": microgpt.__version__, "code": code.hexdigest()[:16]}
    if mode == "tensor":
        try:
            out["torch"] = metadata.version("torch")
        except metadata.PackageNotFoundError:
            out["torch"] = None
    return out


def normalized(value: dict) -> dict:
    """As it reads back from JSON (tuples become lists), so that equality is exact."""
    return json.loads(json.dumps(value))
