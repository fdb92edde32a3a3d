"""What an ablation runs: the four designs, the settings they share, one task per design × seed.

Every run of a study shares the mode, model size, optimizer, data and tensor options; only the
two design switches and the seed vary, and a seed fixes the train/validation split and the data
order for every design alike. `Study.settings()` is everything a run's numbers depend on besides
design and seed, the code that computes them included: a saved run is reused only if its
settings match exactly, and their hash names the default output folder, so running the same
command again resumes in place (and a changed engine starts afresh).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import microgpt
from microgpt.config import TrainConfig
from microgpt.modes import TensorOptions

NOT_SETTINGS = ("seed", "last_n")  # per run, and a reporting choice: neither names the folder
RUN_CODE = ("config.py", "data.py", "init.py", "modes.py", "train.py")  # and the mode's package


@dataclass(frozen=True)
class Design:
    tie_lm_head: bool
    input_rmsnorm: bool

    @property
    def label(self) -> str:
        head = "tied head" if self.tie_lm_head else "untied head"
        norm = "input norm" if self.input_rmsnorm else "no input norm"
        return f"{head}, {norm}"

    @property
    def slug(self) -> str:  # for file names
        head = "tied" if self.tie_lm_head else "untied"
        return f"{head}-{'norm' if self.input_rmsnorm else 'nonorm'}"

    def flags(self) -> dict[str, bool]:
        return {"tie_lm_head": self.tie_lm_head, "input_rmsnorm": self.input_rmsnorm}


REFERENCE = Design(tie_lm_head=False, input_rmsnorm=True)  # the reference algorithm's choices
DESIGNS = (REFERENCE, Design(True, True), Design(False, False), Design(True, False))


@dataclass(frozen=True)
class Task:
    """One run, with everything a worker process needs to do it and save it."""

    mode: str
    design: Design
    seed: int
    model_args: dict  # the ModelConfig fields but vocab_size, the design flags included
    train: TrainConfig  # with this run's seed
    tensor: TensorOptions | None
    input_path: str | None
    fingerprint: str  # of the documents, checked again by the worker
    settings: dict  # what a saved run must match exactly (JSON values)
    path: str  # the run's own JSON file


@dataclass(frozen=True)
class Study:
    mode: str
    model_args: dict  # n_layer, n_embd, n_head, block_size: resolved, defaults included
    train: TrainConfig  # its seed is ignored: each run gets its own
    tensor: TensorOptions | None  # None in scalar mode
    input_path: str | None  # None: the bundled names
    fingerprint: str
    vocab_size: int
    seeds: tuple[int, ...]
    versions: dict  # see `versions`

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
        text = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def default_out(self) -> str:
        """`runs/ablate-<mode>-<hash>`: the seeds are not in the hash, so a study with more
        seeds lands in the same folder and reuses the runs it shares with a smaller one."""
        return str(Path("runs") / f"ablate-{self.mode}-{self.settings_hash()}")

    def tasks(self, out_dir: str | Path) -> list[Task]:
        """Design-major, reference first, seeds in the order given."""
        base = self.settings()
        return [
            Task(
                mode=self.mode,
                design=design,
                seed=seed,
                model_args={**self.model_args, **design.flags()},
                train=replace(self.train, seed=seed),
                tensor=self.tensor,
                input_path=self.input_path,
                fingerprint=self.fingerprint,
                settings=normalized({**base, **design.flags(), "seed": seed}),
                path=str(Path(out_dir) / f"run-{design.slug}-seed{seed}.json"),
            )
            for design in DESIGNS
            for seed in self.seeds
        ]


def versions(mode: str) -> dict:
    """The package version, a hash of the source a run's numbers come from (the training code and
    the mode's engine), and in tensor mode torch's version: a run is reused only on the same."""
    root = Path(microgpt.__file__).parent
    files = [root / name for name in RUN_CODE] + sorted((root / mode).glob("*.py"))
    code = hashlib.sha256()
    for path in files:
        code.update(path.name.encode() + b"\0" + path.read_bytes())
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
