"""What a study runs: designs (values of the varied switches) × numeric levels × seeds.

A study varies design switches (declared in `ModelConfig`, see `config.SWITCHES`) and, optionally,
numeric settings (model size, steps, learning rate, batch size, z-loss). Design files
(`--design FILE`, `microgpt.design`) are one more design axis, `design_file`, whose values are
the built-in model (`BUILT_IN`, the baseline's) and each file by its name; a file's settings
are further axes, `NAME.SETTING` (`--vary softcap.cap=10,30`), that only its own designs take.
A file crosses with the switches that vary (each must be one it honours). A learning-rate sweep
(`--lr-sweep`, `Study.lrs`) is an axis of its own: every design at every level is trained at
every rate of the grid, and compared at its own best rate (see `ablate.sweep`). Every other
setting is shared by every run. A seed fixes the train/validation split and the data order for
every design, level and rate alike, so differences between designs are paired by seed. The
baseline of every comparison is the design whose varied switches take their reference values,
at the same level and seed.

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
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import microgpt
from microgpt.config import (
    SETTINGS,
    SIZE_SETTINGS,
    SWITCHES,
    TensorOptions,
    TrainConfig,
    stack_shared,
)
from microgpt.errors import UserError

NOT_SETTINGS = ("seed", "last_n")  # per run, and a reporting choice: neither names the folder
FILE_AXIS = "design_file"  # the design axis of design files: its values are their names
BUILT_IN = "built-in"  # ... and the built-in model's (the baseline's)
PLANS = ("full", "one-at-a-time")
MODEL_LEVELS = tuple(SIZE_SETTINGS)  # n_layer, n_embd, n_head, block_size
TRAIN_LEVELS = ("steps", "learning_rate", "batch_size", "z_loss")
NUMERIC = MODEL_LEVELS + TRAIN_LEVELS  # the numeric settings --vary accepts (a list is required)
# from their declarations (`config.SETTINGS`): which are real numbers (the others are integers),
# and which may be 0 (every other must be positive)
REAL = tuple(n for n in NUMERIC if SETTINGS[n].kind == "real")
MAY_BE_ZERO = tuple(n for n in NUMERIC if 0 in SETTINGS[n].within)


# what varies ------------------------------------------------------------------------------------


def parse_vary(specs: list[str], files: tuple[DesignFileAxis, ...] = ()) -> dict[str, tuple]:
    """`--vary NAME[=V1,V2,...]` flags as `name: values`, switches and numeric settings alike,
    and the settings of design files (`files`), `FILE.SETTING=V1,V2,...`.

    A switch varies over every value it has unless a list is given; a numeric setting and a
    file's setting need a list. Dashes or underscores both name a setting."""
    out: dict[str, tuple] = {}
    by_name = {f.name: f for f in files}
    for spec in specs:
        name, _, listed = spec.partition("=")
        name = name.strip()
        if "." in name:
            out.update(_file_setting(name, listed, spec, by_name, out))
            continue
        name = name.replace("-", "_")
        if name in out:
            raise UserError(f"--vary {name} is given twice: give it once with all its values")
        texts = [t for t in listed.split(",")] if listed else []
        if listed and any(not t.strip() for t in texts):
            raise UserError(f"--vary {spec!r} has an empty value: write NAME=V1,V2,...")
        if name in SWITCHES:
            s = SWITCHES[name]
            values = tuple(s.parse(t) for t in texts) if texts else s.values
        elif name in NUMERIC:
            if not texts:
                raise UserError(f"--vary {name} needs its values: e.g. --vary {name}=16,32,64")
            values = tuple(_number(name, t) for t in texts)
        else:
            known = ", ".join([*SWITCHES, *NUMERIC])
            raise UserError(
                f"--vary {name!r} is not a switch or numeric setting: use one of {known}"
            )
        if len(set(values)) != len(values):
            raise UserError(f"--vary {spec!r} repeats a value")
        if len(values) < 2:
            raise UserError(f"--vary {spec!r} gives one value: give two or more, or use its flag")
        out[name] = values
    return out


def _file_setting(name: str, listed: str, spec: str, files: dict, out: dict) -> dict:
    """`--vary FILE.SETTING=V1,V2,...`: a design file's setting, its values parsed as the
    file's default's type."""
    from microgpt.design import parse_setting

    file, _, setting = name.rpartition(".")
    if file not in files:
        given = ", ".join(files) or "none"
        raise UserError(
            f"--vary {name}: no design file is named {file!r} (the --design files: {given})"
        )
    default = dict(files[file].settings).get(setting)
    if default is None:
        known = ", ".join(k for k, _ in files[file].settings) or "none"
        raise UserError(f"--vary {name}: design {file} has no setting {setting!r} (its: {known})")
    if name in out:
        raise UserError(f"--vary {name} is given twice: give it once with all its values")
    texts = listed.split(",") if listed else []
    if not texts or any(not t.strip() for t in texts):
        raise UserError(f"--vary {name} needs its values: e.g. --vary {name}=V1,V2")
    values = tuple(parse_setting(file, setting, default, t) for t in texts)
    if len(set(values)) != len(values):
        raise UserError(f"--vary {spec!r} repeats a value")
    if len(values) < 2:
        raise UserError(
            f"--vary {spec!r} gives one value: give two or more, or use --design-setting"
        )
    return {name: values}


@dataclass(frozen=True)
class DesignFileAxis:
    """A design file of a study, as a value of the `design_file` axis: its name (a label), the
    file (absolute path, sha256), the built-in switches it honours and its settings'
    values where the study does not vary them (each default, or --design-setting's)."""

    name: str
    path: str
    sha256: str
    switches: tuple[str, ...]
    settings: tuple[tuple[str, object], ...]

    def entry(self) -> dict:
        """As a study's settings name it (an edited file is another study)."""
        return {"path": self.path, "sha256": self.sha256, "settings": dict(self.settings)}


def check_files(files: tuple[DesignFileAxis, ...], varied: dict[str, tuple]) -> None:
    """Design files' names apart from each other, the built-in's and the switches' values and
    labels (a table row, a column or a --vary name must say which design it is); and every
    varied switch honoured by every file (else its runs would be the same under two labels)."""
    taken = {BUILT_IN: "the built-in model's label"}
    for name, s in SWITCHES.items():
        for value in s.values:
            taken.setdefault(str(value).lower(), f"a value of --{name.replace('_', '-')}")
            taken.setdefault(s.label(value).lower(), f"a label of --{name.replace('_', '-')}")
    for f in files:
        clash = taken.get(f.name.lower())
        if clash:
            raise UserError(
                f"design file {f.path}: its name {f.name!r} is {clash}: give the file another "
                'name (name = "..." in it)'
            )
        taken[f.name.lower()] = f"design file {f.path}'s name"
        for switch in (n for n in SWITCHES if n in varied):
            if switch not in f.switches:
                honoured = ", ".join(f.switches) or "none"
                raise UserError(
                    f"design {f.name} ({f.path}) does not honour {switch}: --vary {switch} "
                    f"would train it unchanged under two labels (it honours: {honoured})"
                )


def _number(name: str, text: str) -> int | float:
    try:
        value = float(text) if name in REAL else int(text)
    except ValueError:
        kind = "a number" if name in REAL else "an integer"
        raise UserError(f"--vary {name}: {text.strip()!r} is not {kind}") from None
    if name in MAY_BE_ZERO and value < 0:
        raise UserError(f"--vary {name}: values must be 0 or more, got {text.strip()!r}")
    if name not in MAY_BE_ZERO and value <= 0:
        raise UserError(f"--vary {name}: values must be positive, got {text.strip()!r}")
    return value


@dataclass(frozen=True)
class Design:
    """The values of the varied switches, in declaration order; with design files, the
    `design_file` axis's value and that file's varied settings' values (`FILE.SETTING`)."""

    values: tuple[tuple[str, object], ...]

    def flags(self) -> dict:
        """The switches' values, `name: value` (what the model's config takes)."""
        return {n: v for n, v in self.values if n in SWITCHES}

    def columns(self) -> dict:
        """Every axis's value, `name: value` (a results row's columns)."""
        return dict(self.values)

    @property
    def file(self) -> str | None:
        """The design file's name (None: the built-in model)."""
        name = dict(self.values).get(FILE_AXIS, BUILT_IN)
        return None if name == BUILT_IN else name

    def file_settings(self) -> dict:
        """The varied settings of its design file, `setting: value`."""
        return {n.rpartition(".")[2]: v for n, v in self.values if "." in n}

    def _parts(self) -> list[str]:
        """Its label's parts: the file with its settings (if any), then the switches."""
        settings = self.file_settings().items()
        parts = [f"{self.file} " + " ".join(f"{k}={_shown(v)}" for k, v in settings)]
        parts = [p.strip() for p in parts] if self.file else []
        return parts + [SWITCHES[n].label(v) for n, v in self.values if n in SWITCHES]

    @property
    def label(self) -> str:
        if FILE_AXIS not in dict(self.values):
            return ", ".join(SWITCHES[name].label(value) for name, value in self.values)
        return ", ".join(self._parts()) or BUILT_IN

    @property
    def slug(self) -> str:  # for file names
        if FILE_AXIS not in dict(self.values):
            return "_".join(_slug(SWITCHES[n].label(v)) for n, v in self.values) or "design"
        return "_".join(_slug(p) for p in self._parts()) or _slug(BUILT_IN)


@dataclass(frozen=True)
class Level:
    """The values of the varied numeric settings (empty when none varies)."""

    values: tuple[tuple[str, int | float], ...]

    def flags(self) -> dict:
        return dict(self.values)

    @property
    def label(self) -> str:
        return ", ".join(f"{name} {value:g}" for name, value in self.values)

    @property
    def slug(self) -> str:
        return "_".join(f"{name}{value:g}" for name, value in self.values)


def _shown(value: object) -> str:
    """A setting's value in a label: a number as %g, a truth value as true or false."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("²", "2")).strip("-")


def designs_of(varied: dict[str, tuple], plan: str) -> tuple[list[Design], Design]:
    """The designs of a plan and its baseline (first): `full` crosses every varied switch;
    `one-at-a-time` changes one switch at a time from the baseline. The baseline takes each
    switch's reference value, or its first listed value when the list leaves the reference out.
    With design files (`FILE_AXIS`), the built-in model's designs come first, then each file's:
    `full` crosses it with the switches and its own varied settings, `one-at-a-time` takes it
    at the baseline's switches with each combination of its settings."""
    designs, baseline = _switch_designs(varied, plan)
    if FILE_AXIS not in varied:
        return designs, baseline
    mark = ((FILE_AXIS, BUILT_IN),)
    out = [Design(d.values + mark) for d in designs]
    for file in varied[FILE_AXIS][1:]:
        names = [n for n in varied if n.rpartition(".")[0] == file]
        for combo in itertools.product(*(varied[n] for n in names)):
            own = ((FILE_AXIS, file), *zip(names, combo))
            crossed = designs if plan == "full" else [baseline]
            out += [Design(d.values + own) for d in crossed]
    return out, Design(baseline.values + mark)


def _switch_designs(varied: dict[str, tuple], plan: str) -> tuple[list[Design], Design]:
    """`designs_of` of the varied switches alone."""
    switches = [n for n in SWITCHES if n in varied]  # declaration order
    base = {n: (s if (s := SWITCHES[n].reference) in varied[n] else varied[n][0]) for n in switches}
    baseline = Design(tuple(base.items()))
    if plan == "full":
        # the baseline's value first for every switch, so the baseline is the first design
        # the first switch changes fastest, as the seed's four designs were ordered
        orders = [[base[n], *(v for v in varied[n] if v != base[n])] for n in reversed(switches)]
        combos = (reversed(combo) for combo in itertools.product(*orders))
        designs = [Design(tuple(zip(switches, combo))) for combo in combos]
    else:
        designs = [baseline]
        for n in switches:
            designs += [Design(tuple({**base, n: v}.items())) for v in varied[n] if v != base[n]]
    return designs, baseline


def levels_of(varied: dict[str, tuple]) -> list[Level]:
    """Every combination of the varied numeric settings, in the order given."""
    names = [n for n in varied if n in NUMERIC]
    return [
        Level(tuple(zip(names, combo))) for combo in itertools.product(*(varied[n] for n in names))
    ]


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
    train: TrainConfig  # with this run's seed and level
    tensor: TensorOptions | None
    input_path: str | None
    fingerprint: str  # of the documents, checked again by the worker
    settings: dict  # what a saved run must match exactly (JSON values)
    path: str  # the run's own JSON file
    design_run: object = None  # a design file's `design.DesignRun` (None: the built-in model)
    params: int | None = None  # its parameter count (None: unknown, the config's)

    @property
    def label(self) -> str:
        lr = f"lr {self.lr:g}" if self.lr is not None else ""
        return ", ".join(x for x in (self.level.label, self.design.label, lr) if x)


@dataclass(frozen=True)
class Study:
    mode: str
    model_args: dict  # sizes and the switches that do not vary: resolved, defaults included
    train: TrainConfig  # its seed is ignored: each run gets its own
    tensor: TensorOptions | None  # None in scalar mode
    input_path: str | None  # None: the bundled names
    fingerprint: str
    vocab_size: int
    seeds: tuple[int, ...]
    versions: dict  # see `versions`
    varied: dict  # name: values, switches and numeric settings (see parse_vary), design files
    plan: str = "full"
    stack: int = 1  # at most this many runs of one shape trained as one computation (1: alone)
    lrs: tuple[float, ...] | None = None  # a learning-rate sweep's grid, ascending (see sweep.py)
    log_every: int | None = None  # tensor mode: each run's diagnostics every K steps and at
    # the end (None: every tenth of its steps); scalar mode has none
    files: tuple[DesignFileAxis, ...] = ()  # design files (`--design`), in the order given
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

    @property
    def switches(self) -> list[str]:
        return [n for n in SWITCHES if n in self.varied]

    @property
    def numeric(self) -> list[str]:
        return [n for n in self.varied if n in NUMERIC]

    def designs(self) -> list[Design]:
        return designs_of(self.varied, self.plan)[0]

    @property
    def baseline(self) -> Design:
        return designs_of(self.varied, self.plan)[1]

    def levels(self) -> list[Level]:
        return levels_of(self.varied)

    def params(self, design: Design, model_args: dict) -> int:
        """The parameter count of `design` in a model of `model_args`."""
        if design.file is not None:
            f = self.file(design.file)
            values = {**dict(f.settings), **design.file_settings()}
            return self.checked[checked_key(f.name, values, model_args)][1]
        from microgpt.config import ModelConfig

        return ModelConfig(vocab_size=self.vocab_size, **model_args).num_params()

    def file_models(self) -> list[tuple[str, dict, dict]]:
        """Every (file, settings' values, model args) a study's design files run with: what
        `design_check` checks before the study trains."""
        out = []
        for level, design in itertools.product(self.levels(), self.designs()):
            if design.file is None:
                continue
            f = self.file(design.file)
            model_args = {**self.model_args, **design.flags()}
            model_args.update({k: v for k, v in level.flags().items() if k in MODEL_LEVELS})
            entry = (f.name, {**dict(f.settings), **design.file_settings()}, model_args)
            if entry not in out:
                out.append(entry)
        return out

    def file(self, name: str) -> DesignFileAxis:
        return next(f for f in self.files if f.name == name)

    def design_run(self, design: Design, model_args: dict):
        """A file design's `design.DesignRun` for a run of `model_args` (None: the built-in
        model): the file, its version, its settings and the weights its check found used."""
        if design.file is None:
            return None
        from microgpt.design import DesignRun

        f = self.file(design.file)
        values = {**dict(f.settings), **design.file_settings()}
        used, _ = self.checked[checked_key(f.name, values, model_args)]
        return DesignRun(f.path, f.sha256, f.name, tuple(values.items()), tuple(used))

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

    def tasks(self, out_dir: str | Path) -> list[Task]:
        """Level-major, then design (baseline first), then learning rate (ascending, in a
        sweep), then seeds in the order given."""
        base = self.settings()
        tasks = []
        lrs = self.lrs if self.sweep else (None,)
        for level, design, lr, seed in itertools.product(
            self.levels(), self.designs(), lrs, self.seeds
        ):
            knobs = level.flags()
            if lr is not None:
                knobs["learning_rate"] = lr
            model_args = {**self.model_args, **design.flags()}
            model_args.update({k: v for k, v in knobs.items() if k in MODEL_LEVELS})
            train = replace(
                self.train, seed=seed, **{k: v for k, v in knobs.items() if k in TRAIN_LEVELS}
            )
            settings = {**base, "model": model_args}
            settings["train"] = {k: v for k, v in train.to_dict().items() if k not in NOT_SETTINGS}
            run = self.design_run(design, model_args)
            if self.files:  # a run names its own file's version, not the others'
                del settings["designs"]
                settings["design"] = None if run is None else design_settings(run)
            rate = f"lr{lr:g}" if lr is not None else ""
            name = "-".join(x for x in ("run", level.slug, design.slug, rate, f"seed{seed}") if x)
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
                    params=self.params(design, model_args),
                )
            )
        return tasks


def checked_key(name: str, settings: dict, model_args: dict) -> str:
    """`Study.checked`'s key: a design file's name, its settings' values and the model."""
    return json.dumps([name, settings, model_args], sort_keys=True)


def design_settings(run) -> dict:
    """A file design's run as its settings name it: the file's version and settings."""
    return {"name": run.name, "sha256": run.sha256, "settings": run.values()}


# stacks: runs trained as one computation ---------------------------------------------------------

CPU_STACK_BYTES = 16 * 2**20  # the default stack's estimated working set on a CPU (see below)
GPU_STACK_SHARE = 0.25  # ... and its share of the GPU's memory
MAX_STACK = 256


def stack_key(task: Task) -> str:
    """Tasks with the same key may share a stack: tensor mode, the same design (switches and
    design file), sizes and training but for seed and learning rate."""
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


def run_bytes(model_args: dict, vocab_size: int, train: TrainConfig, dtype: str) -> int:
    """A rough upper bound on one run's memory in a stack: weights, gradient and Adam moments
    (4 x params, plus a compute copy under bfloat16), and the activations of a step of
    batch_size x block_size positions (about 16 C per layer, the logits, and each layer's
    attention weights)."""
    from microgpt.config import ModelConfig

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
