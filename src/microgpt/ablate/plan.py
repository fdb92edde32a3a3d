"""What a study runs: designs (values of the varied switches) × numeric levels × seeds.

A study varies design switches (declared in `ModelConfig`, see `config.SWITCHES`) and, optionally,
numeric settings (model size, steps, learning rate, batch size, z-loss). Every other setting is
shared by every run. A seed fixes the train/validation split and the data order for every design
and level alike, so differences between designs are paired by seed. The baseline of every
comparison is the design whose varied switches take their reference values, at the same level and
seed.

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
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import microgpt
from microgpt.config import SWITCHES, TensorOptions, TrainConfig
from microgpt.errors import UserError

NOT_SETTINGS = ("seed", "last_n")  # per run, and a reporting choice: neither names the folder
PLANS = ("full", "one-at-a-time")
MODEL_LEVELS = ("n_layer", "n_embd", "n_head", "block_size")
TRAIN_LEVELS = ("steps", "learning_rate", "batch_size", "z_loss")
NUMERIC = MODEL_LEVELS + TRAIN_LEVELS  # the numeric settings --vary accepts (a list is required)
REAL = ("learning_rate", "z_loss")  # numbers; the other numeric settings are integers
MAY_BE_ZERO = ("z_loss",)  # 0 is its off value; every other numeric setting must be positive


# what varies ------------------------------------------------------------------------------------


def parse_vary(specs: list[str]) -> dict[str, tuple]:
    """`--vary NAME[=V1,V2,...]` flags as `name: values`, switches and numeric settings alike.

    A switch varies over every value it has unless a list is given; a numeric setting needs a
    list. Dashes or underscores both name a setting."""
    out: dict[str, tuple] = {}
    for spec in specs:
        name, _, listed = spec.partition("=")
        name = name.strip().replace("-", "_")
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
    """The values of the varied switches, in declaration order."""

    values: tuple[tuple[str, object], ...]

    def flags(self) -> dict:
        return dict(self.values)

    @property
    def label(self) -> str:
        return ", ".join(SWITCHES[name].label(value) for name, value in self.values)

    @property
    def slug(self) -> str:  # for file names
        return "_".join(_slug(SWITCHES[n].label(v)) for n, v in self.values) or "design"


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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("²", "2")).strip("-")


def designs_of(varied: dict[str, tuple], plan: str) -> tuple[list[Design], Design]:
    """The designs of a plan and its baseline (first): `full` crosses every varied switch;
    `one-at-a-time` changes one switch at a time from the baseline. The baseline takes each
    switch's reference value, or its first listed value when the list leaves the reference out."""
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
    model_args: dict  # the ModelConfig fields but vocab_size, this run's switches and sizes
    train: TrainConfig  # with this run's seed and level
    tensor: TensorOptions | None
    input_path: str | None
    fingerprint: str  # of the documents, checked again by the worker
    settings: dict  # what a saved run must match exactly (JSON values)
    path: str  # the run's own JSON file

    @property
    def label(self) -> str:
        return ", ".join(x for x in (self.level.label, self.design.label) if x)


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
    varied: dict  # name: values, switches and numeric settings (see parse_vary)
    plan: str = "full"

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

    def settings(self) -> dict:
        train = {k: v for k, v in self.train.to_dict().items() if k not in NOT_SETTINGS}
        return {
            "versions": dict(self.versions),
            "mode": self.mode,
            "model": dict(self.model_args),
            "train": train,
            "tensor": asdict(self.tensor) if self.tensor else None,
            "data": self.fingerprint,
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
        """Level-major, then design (baseline first), then seeds in the order given."""
        base = self.settings()
        tasks = []
        for level, design, seed in itertools.product(self.levels(), self.designs(), self.seeds):
            knobs = level.flags()
            model_args = {**self.model_args, **design.flags()}
            model_args.update({k: v for k, v in knobs.items() if k in MODEL_LEVELS})
            train = replace(
                self.train, seed=seed, **{k: v for k, v in knobs.items() if k in TRAIN_LEVELS}
            )
            settings = {**base, "model": model_args}
            settings["train"] = {k: v for k, v in train.to_dict().items() if k not in NOT_SETTINGS}
            name = "-".join(x for x in ("run", level.slug, design.slug, f"seed{seed}") if x)
            tasks.append(
                Task(
                    mode=self.mode,
                    design=design,
                    level=level,
                    seed=seed,
                    model_args=model_args,
                    train=train,
                    tensor=self.tensor,
                    input_path=self.input_path,
                    fingerprint=self.fingerprint,
                    settings=normalized({**settings, "seed": seed}),
                    path=str(Path(out_dir) / f"{name}.json"),
                )
            )
        return tasks


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
