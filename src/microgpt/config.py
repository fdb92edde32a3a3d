"""Configuration: frozen dataclasses, validated when they are made.

`ModelConfig` is the architecture (what a checkpoint must agree on); `TrainConfig` is how it is
trained. Both are plain values: to change one, make a new one with `dataclasses.replace`.

Every field is declared once, with what the rest of the package derives from it: a design switch
with `switch(...)` (`Switch`, collected in `SWITCHES`), a model size or training setting with
`setting(...)` (`Setting`, collected in `SETTINGS`). From these come the `train` and `ablate`
flags and their help (`flags`), the validation and its messages (here), which settings the
runs of one stack may differ in (`STACK_PER_RUN`), and what `ablate --vary` makes of each: a
design axis, as every switch is, or a level (`Setting.vary`), with its labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from microgpt.errors import UserError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive_int(name: str, value: object) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True}
BOOLEAN_WORDS |= {"false": False, "no": False, "off": False, "0": False}


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
            if text.strip().lower() in BOOLEAN_WORDS:
                return BOOLEAN_WORDS[text.strip().lower()]
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
class Range:
    """Where a number may lie, written as the docs write it: `> 0`, `>= 0`, `[0, 1)`, `(0, 1]`."""

    text: str
    low: float
    low_closed: bool
    high: float = math.inf
    high_closed: bool = False

    @classmethod
    def of(cls, text: str) -> Range:
        t = text.replace(" ", "")
        if t.startswith(">="):
            return cls(text, float(t[2:]), True)
        if t.startswith(">"):
            return cls(text, float(t[1:]), False)
        assert t[0] in "[(" and t[-1] in ")]", text
        low, high = t[1:-1].split(",")
        return cls(text, float(low), t[0] == "[", float(high), t[-1] == "]")

    def __contains__(self, x: float) -> bool:
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def words(self, integer: bool) -> str:
        """As a message says it: "a positive integer", "0 or more", "in [0, 1)"."""
        if self.high < math.inf:
            return f"in {self.text}"
        if self.low_closed:
            return f"{self.low:g} or more"
        if self.low == 0:
            return "a positive integer" if integer else "a positive number"
        return f"more than {self.low:g}"


KINDS = ("name", "int", "real", "bool")  # a setting's kind: a name from a closed set, a number...
# what `ablate --vary` makes of a setting (`Setting.vary`): a design axis (its values make the
# designs, each compared with the baseline, as a switch's do) or a level (each value a level of
# the study, every design trained and compared at each: the sizes and the length of training)
VARY_ROLES = ("design", "level")


def number_text(x: float) -> str:
    """A number as labels and file names show it: `%g` when that reads back as the same number
    (0.1, 1e-05, 100), else in full, so that two values never show alike."""
    short = f"{x:g}"
    return short if float(short) == x else repr(x)


@dataclass(frozen=True)
class Setting:
    """A model size or training setting, declared once as a field of `ModelConfig` or
    `TrainConfig` (see `setting`).

    Derived from it: its flag and help (`flags`), the config's validation and its message, its
    parse from text (a flag's value, an ablation's list), whether the runs of one stack may
    differ in it, and what `ablate --vary` makes of it (`vary`, `value_label`). A setting
    without a flag group is deliberately not a flag (the defaults hold)."""

    name: str
    default: object
    kind: str  # one of KINDS
    help: str
    values: tuple = ()  # kind "name": every allowed value
    within: Range | None = None  # kinds "int" and "real": the allowed numbers
    none: bool = False  # None is allowed too (its meaning is in the help)
    metavar: str | None = None
    group: str | None = None  # the flag group: "model", "data" or "optimizer"; None: no flag
    per_run: bool = False  # the runs of one stack may differ in it (see STACK_PER_RUN)
    applies: tuple[str, object] | None = None  # (setting, value): only used when that setting
    # has that value; a value other than the default is refused otherwise (`modes`)
    vary: str | None = "design"  # what `ablate --vary` makes of it: one of VARY_ROLES, or None
    labels: tuple[str, ...] | str | None = None  # how a design names a value (see value_label)
    config: str = ""  # "model" or "train": the config it is a field of (set by `_settings`)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """How messages name it: its flag, or its name if it has none."""
        return self.flag if self.group is not None else self.name

    @property
    def every(self) -> tuple | None:
        """Every value, for a name or a yes/no (`--vary` takes them all when none is listed);
        None for a number."""
        if self.kind == "name":
            return self.values
        return (False, True) if self.kind == "bool" else None

    def value_label(self, value: object) -> str:
        """A value as a design's label shows it ("muon", "weight decay 0.1", "reshuffled"):
        the declared label of a name or a yes/no, or the declared template ("{}" the value;
        by default the setting's name and the value)."""
        if isinstance(self.labels, tuple):
            return self.labels[self.every.index(value)]
        template = self.labels or (
            "{}" if self.kind == "name" else self.name.replace("_", " ") + " {}"
        )
        return template.format(number_text(value) if self.kind in ("int", "real") else value)

    def allows(self, value: object) -> bool:
        if value is None:
            return self.none
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "name":
            return any(value == v and type(value) is type(v) for v in self.values)
        if self.kind == "int" and not isinstance(value, int):
            return False
        return _finite(value) and value in self.within

    def words(self) -> str:
        """What a value must be, as a message says it."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "name":
            if len(self.values) == 2:
                return " or ".join(map(str, self.values))
            return "one of " + ", ".join(map(str, self.values))
        return self.within.words(self.kind == "int")

    def check(self, value: object) -> None:
        _require(self.allows(value), f"{self.label} must be {self.words()}, got {value!r}")

    def parse(self, text: str) -> object:
        """A value from text (`0.2`, `wsd`, `true`), checked."""
        word, wrong = text.strip(), UserError(f"{self.label} {text!r} is not {self.words()}")
        try:
            if self.kind == "bool":
                value = BOOLEAN_WORDS[word.lower()]
            elif self.kind == "name":
                value = next(v for v in self.values if word == str(v))
            else:
                value = int(word) if self.kind == "int" else float(word)
        except (KeyError, StopIteration, ValueError):
            raise wrong from None
        if not self.allows(value):
            raise wrong
        return value


def setting(
    default: object,
    kind: str,
    help: str,  # noqa: A002
    *,
    values: tuple = (),
    within: str | None = None,
    none: bool = False,
    metavar: str | None = None,
    group: str | None = None,
    per_run: bool = False,
    applies: tuple[str, object] | None = None,
    vary: str | None = "design",
    labels: tuple[str, ...] | str | None = None,
):
    """A `ModelConfig` or `TrainConfig` field declaring a setting (see `Setting`). Unless it
    says otherwise (`vary`), a setting with a flag is a design axis of `ablate --vary`."""
    assert kind in KINDS and (kind == "name") == bool(values)
    assert (kind in ("int", "real")) == (within is not None)
    assert vary in (*VARY_ROLES, None) and (vary is None or group is not None)
    assert not isinstance(labels, tuple) or kind in ("name", "bool")
    declared = dict(kind=kind, help=help, values=values, none=none, metavar=metavar)
    declared |= dict(group=group, per_run=per_run, applies=applies, vary=vary, labels=labels)
    declared["within"] = Range.of(within) if within is not None else None
    return field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # from the data, not a flag
    n_layer: int = setting(
        1,
        "int",
        "transformer blocks (default 1)",
        within="> 0",
        metavar="N",
        group="model",
        vary="level",
    )
    n_embd: int = setting(
        16,
        "int",
        "embedding width (default 16)",
        within="> 0",
        metavar="N",
        group="model",
        vary="level",
    )
    n_head: int = setting(
        4,
        "int",
        "attention heads; must divide --n-embd (4)",
        within="> 0",
        metavar="N",
        group="model",
        vary="level",
    )
    block_size: int = setting(
        16,
        "int",
        "context length in tokens (default 16)",
        within="> 0",
        metavar="N",
        group="model",
        vary="level",
    )
    # a number that changes the model's function (so a checkpoint keeps it), not its size
    logit_softcap: float = setting(
        0.0,
        "real",
        "logit soft-cap: the output logits z become C tanh(z / C) wherever they are used "
        "(training and held-out losses, z-loss, diagnostics, sampling) (default 0: off)",
        within=">= 0",
        metavar="C",
        group="model",
        labels="soft-cap {}",  # a design axis of `ablate --vary`, as every setting but sizes
    )
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
    init: str = switch(
        "gaussian",
        ("gaussian", "zero"),
        ("gaussian init", "zero init"),
        "initial weights: gaussian (every weight N(0, 0.08), the reference's) or zero (the "
        "same draws, then attn_wo and mlp_fc2 set to 0 and lm_head scaled by 1/80, to std "
        "0.001; a tied head is wte, which keeps its draws) (default: gaussian)",
    )

    def __post_init__(self) -> None:
        _positive_int("--vocab-size", self.vocab_size)
        for s in SIZE_SETTINGS.values():
            s.check(getattr(self, s.name))
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


SWITCHES: dict[str, Switch] = {
    f.name: Switch(f.name, **f.metadata["switch"])
    for f in fields(ModelConfig)
    if "switch" in f.metadata
}
REFERENCE_DESIGN = {name: s.reference for name, s in SWITCHES.items()}
DEFAULT_VARY = ("tie_lm_head", "input_rmsnorm")  # what `ablate` varies by default: the seed's 2 × 2


DATA_KINDS = ("lines", "stream")
OPTIMIZERS = ("adamw", "muon")
LR_SCHEDULES = ("linear", "cosine", "constant", "wsd")  # `schedule.lr_at`
LOSS_AVERAGES = ("document", "token")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: every field a `Setting`, in the order of its flags. Beyond the
    reference's own settings, each default leaves the reference algorithm unchanged."""

    # the optimizer and its schedule: flags in "optimizer (defaults: the reference's)"
    steps: int = setting(
        1000,
        "int",
        "total steps, also the length of the LR schedule (1000)",
        within="> 0",
        metavar="N",
        group="optimizer",
        vary="level",
    )
    seed: int = setting(
        42,
        "int",
        "seed of the one RNG stream (default 42)",
        within=">= 0",
        metavar="S",
        group="optimizer",
        per_run=True,  # a run's data order and initial weights, its own in a stack
        vary=None,  # ablate's seeds: --seeds, --seed-list
    )
    batch_size: int = setting(
        1,
        "int",
        "documents per step (default 1)",
        within="> 0",
        metavar="B",
        group="optimizer",
        vary="level",
    )
    optimizer: str = setting(
        "adamw",
        "name",
        "adamw: Adam, AdamW with --weight-decay, on every weight (default); muon: Muon "
        "(momentum, then Newton-Schulz orthogonalisation) on the hidden matrices and AdamW on "
        "the embeddings and head, both at one learning rate",
        values=OPTIMIZERS,
        group="optimizer",
    )
    # the schedule (`schedule.lr_at`): each run of a stack computes its own rate, a column of
    # the stack's update, so all of it may differ between the runs of one stack
    learning_rate: float = setting(
        0.01,
        "real",
        "peak learning rate (0.01); with muon, of both groups: a Muon update is scaled to "
        "an RMS of about 0.2, that of an AdamW update",
        within="> 0",
        metavar="LR",
        group="optimizer",
        per_run=True,
        vary="level",  # or ablate's --lr-sweep
    )
    lr_schedule: str = setting(
        "linear",
        "name",
        "after the warm-up: linear decay (default), cosine decay, constant, or wsd (constant, "
        "then a linear decay over the last --decay-fraction of the steps)",
        values=LR_SCHEDULES,
        group="optimizer",
        per_run=True,
        labels=("linear decay", "cosine decay", "constant lr", "wsd"),
    )
    warmup_steps: int = setting(
        0,
        "int",
        "linear warm-up steps (0); more than --steps trains, with a warning: the rate never "
        "reaches its peak",
        within=">= 0",
        metavar="N",
        group="optimizer",
        per_run=True,
    )
    decay_fraction: float = setting(
        0.2,
        "real",
        "wsd: the share of all the steps, at the end, over which the rate decays to --min-lr "
        "(default 0.2)",
        within="(0, 1]",
        metavar="F",
        group="optimizer",
        per_run=True,
        applies=("lr_schedule", "wsd"),
    )
    min_lr: float = setting(
        0.0,
        "real",
        "where the linear, cosine and wsd decays end (0)",
        within=">= 0",  # and at most learning_rate: see __post_init__
        metavar="LR",
        group="optimizer",
        per_run=True,
    )
    # Adam's (AdamW's) constants
    beta1: float = setting(
        0.85, "real", "Adam's beta1 (0.85)", within="[0, 1)", metavar="B", group="optimizer"
    )
    beta2: float = setting(
        0.99, "real", "Adam's beta2 (0.99)", within="[0, 1)", metavar="B", group="optimizer"
    )
    eps: float = setting(
        1e-8, "real", "Adam's epsilon, the reference's (not a flag)", within="> 0", vary=None
    )
    muon_momentum: float = setting(
        0.95,
        "real",
        "Muon's Nesterov momentum (0.95); --optimizer muon only",  # Keller Jordan's default
        within="[0, 1)",
        metavar="B",
        group="optimizer",
        applies=("optimizer", "muon"),
    )
    # regularisation
    weight_decay: float = setting(
        0.0,
        "real",
        "decoupled weight decay (AdamW's) on every weight matrix, with either optimizer (0)",
        within=">= 0",
        metavar="W",
        group="optimizer",
    )
    grad_clip: float = setting(
        0.0,
        "real",
        "clip the gradient's global L2 norm to C (default 0: off)",
        within=">= 0",
        metavar="C",
        group="optimizer",
    )
    z_loss: float = setting(
        0.0,
        "real",
        "add C (log Z)^2 per predicted token to the training loss, Z the softmax's "
        "normaliser, weighted as that token's loss; the reported training loss includes it, "
        "the held-out losses do not (default 0: off)",  # PaLM's auxiliary loss
        within=">= 0",
        metavar="C",
        group="optimizer",
        vary="level",
    )
    dropout: float = setting(
        0.0,
        "real",
        "tensor mode: dropout on the embeddings, attention weights and residual branches (0)",
        within="[0, 1)",
        metavar="P",
        group="optimizer",
    )
    reshuffle: bool = setting(
        False,
        "bool",
        "lines: put every epoch after the first in its own order, drawn from the seed "
        "(default: every epoch in the first's order, as the reference)",
        group="optimizer",
        labels=("one epoch order", "reshuffled"),
    )
    loss_average: str = setting(
        "document",
        "name",
        "a batch's training loss: the mean over its documents of each one's mean "
        "(default, the reference's) or the mean over all its predicted tokens (makemore's; "
        "the per-token validation loss is that mean)",
        values=LOSS_AVERAGES,
        group="optimizer",
        labels=("per-document loss", "per-token loss"),
    )
    last_n: int = setting(
        100,
        "int",
        "summary: mean loss of the last N steps (100)",
        within="> 0",
        metavar="N",
        group="optimizer",
        vary=None,  # a reporting choice, not a run's
    )
    # the data and the held-out figures: flags in "data"; a study's, the same for every one of
    # its runs (none is varied)
    data: str = setting(
        "lines",
        "name",
        "lines: one document per line (default); stream: the whole file as one text, "
        "trained on windows of block_size + 1 characters, the last 10% held out",
        values=DATA_KINDS,
        group="data",
        vary=None,
    )
    val_fraction: float = setting(
        0.1,
        "real",
        "share of the documents held out for validation (default 0.1)",  # the last ones
        within="[0, 1)",
        metavar="F",
        group="data",
        vary=None,
    )
    val_docs: int = setting(
        500,
        "int",
        "held-out documents the per-document val loss averages over (default 500)",
        within=">= 0",
        metavar="N",
        group="data",
        vary=None,
    )
    eval_docs: int | None = setting(
        None,
        "int",
        "held-out documents (stream: windows) of the per-token val loss (default: all; "
        "0: none, the default of ablate)",
        within=">= 0",
        none=True,
        metavar="N",
        group="data",
        vary=None,
    )
    eval_every: int = setting(
        0,
        "int",
        "evaluate the per-token val loss every K steps (default 0: at the end only)",
        within=">= 0",
        metavar="K",
        group="data",
        vary=None,
    )

    def __post_init__(self) -> None:
        for s in TRAIN_SETTINGS.values():
            s.check(getattr(self, s.name))
        _require(
            self.min_lr <= self.learning_rate,
            f"--min-lr must be in [0, --learning-rate], got {self.min_lr!r}",
        )
        _require(
            not (self.reshuffle and self.data == "stream"),
            "--reshuffle applies to --data lines (a stream's windows are drawn at random)",
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From `to_dict` output; a setting missing from `d` (an older checkpoint) takes its
        default, which is the reference's."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _settings(config: type) -> dict[str, Setting]:
    owner = {ModelConfig: "model", TrainConfig: "train"}[config]
    declared = [
        Setting(f.name, f.default, **f.metadata["setting"], config=owner)
        for f in fields(config)
        if "setting" in f.metadata
    ]
    assert all(s.allows(s.default) for s in declared)
    return {s.name: s for s in declared}


SIZE_SETTINGS = _settings(ModelConfig)  # the sizes but vocab_size (the data's), and the soft-cap
TRAIN_SETTINGS = _settings(TrainConfig)  # every TrainConfig field
SETTINGS = SIZE_SETTINGS | TRAIN_SETTINGS  # every setting, by name: what `ablate` may vary
assert set(TRAIN_SETTINGS) == {f.name for f in fields(TrainConfig)}


def in_use(s: Setting, values: dict) -> bool:
    """Whether a run whose settings are `values` (name: value, the one `s.applies` names among
    them) uses `s`: always, unless its `applies` names a value that run does not have."""
    return s.applies is None or values[s.applies[0]] == s.applies[1]


def unused(values: dict) -> dict:
    """The settings among `values` that such a run leaves unused, each at its default
    (`name: default`): what `ablate` gives a design that does not use a setting the study
    fixes for the designs that do (--decay-fraction for the wsd runs, not the cosine ones)."""
    return {
        name: s.default
        for name, s in SETTINGS.items()
        if name in values and not in_use(s, values) and values[name] != s.default
    }


# what the runs of a stack (many runs trained as one computation: `ablate.plan.stacks`,
# `tensor.stack`) may differ in: each run's seed (its data order and initial
# weights) and its learning-rate schedule (a column of the update); every other setting changes
# the arithmetic of a step and is the stack's
STACK_PER_RUN = tuple(name for name, s in TRAIN_SETTINGS.items() if s.per_run)


def stack_shared(train: TrainConfig) -> dict:
    """The settings of `train` that every run of its stack must share (all but STACK_PER_RUN)."""
    return {k: v for k, v in train.to_dict().items() if k not in STACK_PER_RUN}


TENSOR_DTYPES = ("float32", "float64", "bfloat16")  # tensor mode's --dtype (`tensor.device`)


@dataclass(frozen=True)
class TensorOptions:
    """How tensor mode runs; scalar mode always computes in Python floats (float64)."""

    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = "float32"  # float32 | float64 | bfloat16
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    compile: bool = False  # torch.compile the training step


# added to the gradient norm when clipping, as torch.nn.utils.clip_grad_norm_ does:
# g <- g * min(1, grad_clip / (|g| + GRAD_CLIP_EPS))
GRAD_CLIP_EPS = 1e-6
