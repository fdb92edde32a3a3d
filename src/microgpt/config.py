"""Configuration: frozen dataclasses, validated when they are made.

`ModelConfig` is the architecture (what a checkpoint must agree on); `TrainConfig` is how it is
trained. Both are plain values: to change one, make a new one with `dataclasses.replace`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

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
class Switch:
    """A design choice of the architecture, declared once as a field of `ModelConfig`.

    Everything else derives from the declaration: the `train` and `ablate` flags and their help,
    the ablation grid, run labels and file names, result columns and checkpoint fields. A switch
    with two values that are `False` and `True` is a boolean flag (`--x / --no-x`); any other is
    an enumeration (`--x VALUE`)."""

    name: str
    reference: object  # the reference algorithm's value, also the default
    values: tuple  # every allowed value, the reference first
    labels: tuple[str, ...]  # a short phrase per value, for tables and plots
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def boolean(self) -> bool:
        return set(self.values) == {False, True} and all(isinstance(v, bool) for v in self.values)

    def label(self, value: object) -> str:
        return self.labels[self.values.index(value)]

    def parse(self, text: str) -> object:
        """A value as written on a command line or in a list (`relu2`, `true`, `no` ...)."""
        if self.boolean:
            words = {"true": True, "yes": True, "on": True, "1": True}
            words |= {"false": False, "no": False, "off": False, "0": False}
            if text.strip().lower() in words:
                return words[text.strip().lower()]
        else:
            for v in self.values:
                if text.strip() == str(v):
                    return v
        allowed = ", ".join(str(v).lower() for v in self.values)
        raise UserError(f"{self.flag} {text!r} is not one of: {allowed}")


def switch(reference: object, values: tuple, labels: tuple[str, ...], help: str):  # noqa: A002
    """A `ModelConfig` field declaring a design switch (see `Switch`)."""
    assert values[0] == reference and len(labels) == len(values)
    return field(
        default=reference,
        metadata={"switch": dict(reference=reference, values=values, labels=labels, help=help)},
    )


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16
    # design switches: the reference's value first; each is read once in each mode's model
    tie_lm_head: bool = switch(
        False,
        (False, True),
        ("untied head", "tied head"),
        "logits use wte instead of a separate lm_head (default: untied)",
    )
    input_rmsnorm: bool = switch(
        True,
        (True, False),
        ("input norm", "no input norm"),
        "rmsnorm right after the embeddings (default: on)",
    )
    final_rmsnorm: bool = switch(
        False,
        (False, True),
        ("no final norm", "final norm"),
        "rmsnorm of the last hidden state before the head, as GPT-2 (default: off)",
    )
    mlp_activation: str = switch(
        "relu",
        ("relu", "relu2", "gelu"),
        ("relu", "relu²", "gelu"),
        "MLP activation: relu, relu2 (squared relu) or gelu (tanh form) (default: relu)",
    )
    qk_norm: bool = switch(
        False,
        (False, True),
        ("no qk-norm", "qk-norm"),
        "rmsnorm of each head's query and key before their dot product (default: off)",
    )
    position: str = switch(
        "learned",
        ("learned", "rope"),
        ("learned positions", "rope"),
        "position encoding: learned (a wpe matrix) or rope (rotary q and k, base 10000, "
        "no wpe) (default: learned)",
    )

    def __post_init__(self) -> None:
        for name in SIZES:
            _positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        _require(self.vocab_size >= 2, "the vocabulary needs at least one character besides BOS")
        _require(
            self.n_embd % self.n_head == 0,
            f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})",
        )
        for s in SWITCHES.values():
            value = getattr(self, s.name)
            ok = any(value == v and type(value) is type(v) for v in s.values)
            allowed = ", ".join(str(v).lower() for v in s.values)
            _require(ok, f"{s.name} must be one of {allowed}, got {value!r}")
        _require(
            self.position != "rope" or self.head_dim % 2 == 0,
            f"--position rope needs an even head size, got {self.head_dim} "
            "(n_embd / n_head): change --n-embd or --n-head",
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def design(self) -> dict:
        """The switches' values, `name: value`, in declaration order."""
        return {name: getattr(self, name) for name in SWITCHES}

    def param_shapes(self) -> dict[str, tuple[int, int]]:
        """Every weight matrix as `name: (rows, cols)`, in the order the RNG draws them (the
        reference's). A tied head has no `lm_head` and RoPE no `wpe`: their draws are skipped,
        so the later matrices move up in the stream. The norms have no weights."""
        V, E, T = self.vocab_size, self.n_embd, self.block_size
        shapes = {"wte": (V, E)}
        if self.position == "learned":
            shapes["wpe"] = (T, E)
        if not self.tie_lm_head:
            shapes["lm_head"] = (V, E)
        for i in range(self.n_layer):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
                shapes[f"layer{i}.{name}"] = (E, E)
            shapes[f"layer{i}.mlp_fc1"] = (4 * E, E)
            shapes[f"layer{i}.mlp_fc2"] = (E, 4 * E)
        return shapes

    def num_params(self) -> int:
        return sum(rows * cols for rows, cols in self.param_shapes().values())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From `to_dict` output; a switch missing from `d` (an older checkpoint) takes its
        reference value, and an unknown key is an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"unknown model settings {', '.join(unknown)}: use a newer microgpt")
        return cls(**d)


SIZES = ("vocab_size", "n_layer", "n_embd", "n_head", "block_size")
SWITCHES: dict[str, Switch] = {
    f.name: Switch(f.name, **f.metadata["switch"])
    for f in fields(ModelConfig)
    if "switch" in f.metadata
}
REFERENCE_DESIGN = {name: s.reference for name, s in SWITCHES.items()}
DEFAULT_VARY = ("tie_lm_head", "input_rmsnorm")  # what `ablate` varies by default: the seed's 2 × 2


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
    # beyond the reference: each default leaves the reference algorithm unchanged
    data: str = "lines"  # lines: one document per line | stream: the file as one text
    lr_schedule: str = "linear"  # linear (to min_lr at the end) | cosine | constant
    warmup_steps: int = 0  # linear warm-up from 0 to learning_rate over the first steps
    min_lr: float = 0.0  # where linear and cosine end
    weight_decay: float = 0.0  # decoupled (AdamW), on every weight matrix
    grad_clip: float = 0.0  # clip the gradient's global L2 norm to this; 0: off
    z_loss: float = 0.0  # adds z_loss * (log Z)² per predicted token to the training loss, Z
    # the softmax's normaliser (PaLM's auxiliary loss); weighted as that position's loss, not
    # in the held-out losses; 0: off
    dropout: float = 0.0  # tensor mode only: on attention weights and residual branches
    reshuffle: bool = False  # lines: each epoch in its own order (False: all in the first's)
    loss_average: str = "document"  # document: mean over documents of each one's mean loss (the
    # reference's batch loss) | token: mean over every predicted token of the batch (makemore's)
    eval_every: int = 0  # evaluate on held-out data every K steps; 0: only at the end
    eval_docs: int | None = None  # held-out documents (windows) of the per-token loss; None: all,
    # 0: no per-token evaluation

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
        _require(self.data in DATA_KINDS, f"--data must be lines or stream, got {self.data!r}")
        _require(
            isinstance(self.reshuffle, bool),
            f"reshuffle must be true or false, got {self.reshuffle!r}",
        )
        _require(
            not (self.reshuffle and self.data == "stream"),
            "--reshuffle applies to --data lines (a stream's windows are drawn at random)",
        )
        _require(
            self.loss_average in LOSS_AVERAGES,
            f"--loss-average must be document or token, got {self.loss_average!r}",
        )
        _require(
            self.lr_schedule in LR_SCHEDULES,
            f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        for name in ("warmup_steps", "eval_every"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"--{name.replace('_', '-')} must be 0 or more, got {value!r}",
            )
        _require(
            self.eval_docs is None
            or (
                isinstance(self.eval_docs, int)
                and not isinstance(self.eval_docs, bool)
                and self.eval_docs >= 0
            ),
            f"--eval-docs must be 0 or more, got {self.eval_docs!r}",
        )
        _require(
            _finite(self.min_lr) and 0 <= self.min_lr <= self.learning_rate,
            f"--min-lr must be in [0, --learning-rate], got {self.min_lr!r}",
        )
        for name in ("weight_decay", "grad_clip", "z_loss"):
            value = getattr(self, name)
            _require(
                _finite(value) and value >= 0,
                f"--{name.replace('_', '-')} must be 0 or more, got {value!r}",
            )
        _require(
            _finite(self.dropout) and 0 <= self.dropout < 1,
            f"--dropout must be in [0, 1), got {self.dropout!r}",
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From `to_dict` output; a setting missing from `d` (an older checkpoint) takes its
        default, which is the reference's."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# what the runs of a stack (many runs trained as one computation: `ablate.plan.stacks`,
# `tensor.stack`) may differ in: each run's seed (its data order and initial weights) and its
# schedule's peak and floor; every other setting is the stack's
STACK_PER_RUN = ("seed", "learning_rate", "min_lr")


def stack_shared(train: TrainConfig) -> dict:
    """The settings of `train` that every run of its stack must share (all but STACK_PER_RUN)."""
    return {k: v for k, v in train.to_dict().items() if k not in STACK_PER_RUN}


DATA_KINDS = ("lines", "stream")
LOSS_AVERAGES = ("document", "token")


TENSOR_DTYPES = ("float32", "float64", "bfloat16")  # tensor mode's --dtype (`tensor.device`)


@dataclass(frozen=True)
class TensorOptions:
    """How tensor mode runs; scalar mode always computes in Python floats (float64)."""

    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "float32"  # float32 | float64 | bfloat16
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    compile: bool = False  # torch.compile the training step


LR_SCHEDULES = ("linear", "cosine", "constant")
# added to the gradient norm when clipping, as torch.nn.utils.clip_grad_norm_ does:
# g <- g * min(1, grad_clip / (|g| + GRAD_CLIP_EPS))
GRAD_CLIP_EPS = 1e-6


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
