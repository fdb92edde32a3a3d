"""Configuration: frozen dataclasses, validated when they are made.

`ModelConfig` is the architecture (what a checkpoint must agree on); `TrainConfig` is how it is
trained. Both are plain values: to change one, make a new one with `dataclasses.replace`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from microgpt.errors import UserError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _positive_int(name: str, value: object) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16
    tie_lm_head: bool = False  # ablation switch 1: logits use wte, no lm_head matrix
    input_rmsnorm: bool = True  # ablation switch 2: rmsnorm right after the embeddings

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "block_size"):
            _positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        _require(self.vocab_size >= 2, "the vocabulary needs at least one character besides BOS")
        _require(
            self.n_embd % self.n_head == 0,
            f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})",
        )
        for name in ("tie_lm_head", "input_rmsnorm"):
            _require(isinstance(getattr(self, name), bool), f"{name} must be true or false")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        E, V = self.n_embd, self.vocab_size
        heads = 0 if self.tie_lm_head else V * E
        per_layer = 4 * E * E + 2 * 4 * E * E
        return V * E + self.block_size * E + heads + self.n_layer * per_layer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # total steps; also the length of the linear LR decay
    learning_rate: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps: float = 1e-8
    batch_size: int = 1  # documents per step
    seed: int = 42
    val_fraction: float = 0.1  # the last 10% of the shuffled documents are held out
    val_docs: int = 500  # how many held-out documents the validation loss averages over
    last_n: int = 100  # the summary's "mean loss over the last N steps"

    def __post_init__(self) -> None:
        _positive_int("--steps", self.steps)
        _positive_int("--batch-size", self.batch_size)
        _positive_int("--last-n", self.last_n)
        _require(
            isinstance(self.val_docs, int) and self.val_docs >= 0,
            f"--val-docs must be 0 or more, got {self.val_docs!r}",
        )
        _require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"--seed must be a non-negative integer, got {self.seed!r}",
        )
        _require(
            _finite(self.learning_rate) and self.learning_rate > 0,
            f"--learning-rate must be a positive number, got {self.learning_rate!r}",
        )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _require(_finite(value) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        _require(_finite(self.eps) and self.eps > 0, f"eps must be positive, got {self.eps!r}")
        _require(
            _finite(self.val_fraction) and 0 <= self.val_fraction < 1,
            f"--val-fraction must be in [0, 1), got {self.val_fraction!r}",
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
