"""The small interface both modes implement, and the one place that picks a mode.

Everything else (training loop, sampling, checkpoints, CLI, ablate) talks only to `GPT`, so the
two modes cannot drift apart in anything but the arithmetic.
"""

from __future__ import annotations

from typing import Protocol

from microgpt.config import (
    SETTINGS,
    TRAIN_SETTINGS,
    ModelConfig,
    TensorOptions,
    TrainConfig,
    in_use,
)
from microgpt.errors import UserError
from microgpt.flags import MODES
from microgpt.init import Matrix

__all__ = [
    "GPT",
    "MODES",
    "TensorOptions",
    "check_tensor_options",
    "check_train_options",
    "make_gpt",
]


class GPT(Protocol):
    mode: str
    config: ModelConfig
    step: int  # optimizer updates done so far

    def train_step(self, docs: list[list[int]], lr: float) -> float:
        """One optimizer update on encoded documents (`[BOS] + ids + [BOS]` each); returns the loss
        before the update: the mean over documents of each document's mean loss."""

    def eval_loss(self, docs: list[list[int]]) -> float:
        """The same loss, without gradients or an update."""

    def eval_token_loss(self, docs: list[list[int]]) -> tuple[float, int]:
        """The sum over every predicted token of every document (each cut to block_size
        predictions, as in training) of -log p(token), and how many tokens that is: their
        ratio is the per-token loss. No gradients, no update."""

    def logits(self, tokens: list[int]) -> list[float]:
        """Next-token logits after the context `tokens` (1 to block_size tokens)."""

    def export_state(self) -> dict[str, dict[str, Matrix]]:
        """{"weights": ..., "adam_m": ..., "adam_v": ...}, each `name: rows of floats`; with
        --optimizer muon also "momentum", of Muon's matrices (`microgpt.muon`) alone."""

    def load_state(self, state: dict[str, dict[str, Matrix]], step: int) -> None:
        """Set weights and optimizer state (from export_state or a checkpoint) and the step."""


def make_gpt(
    mode: str,
    config: ModelConfig,
    weights: dict[str, Matrix],
    train: TrainConfig | None = None,
    tensor: TensorOptions | None = None,
    design=None,
) -> GPT:
    """A model of `mode`; `design`: a design file's `design_check.Checked`, whose net replaces
    the built-in one (tensor mode only)."""
    train = train or TrainConfig()
    if design is not None and mode != "tensor":
        raise UserError(SCALAR_DESIGN)
    if mode == "scalar":
        from microgpt.scalar.model import ScalarGPT

        if tensor is not None and tensor != TensorOptions():
            raise UserError(
                "--device, --dtype, --threads and --compile apply to --mode tensor only"
            )
        check_train_options(mode, train)
        return ScalarGPT(config, weights, train)
    if mode == "tensor":
        from microgpt.tensor import TensorGPT  # imports torch, with a clear error if missing

        options = tensor or TensorOptions()
        net = None if design is None else design.net(options)
        return TensorGPT(config, weights, train, options, net)
    raise UserError(f"unknown mode {mode!r}: use --mode scalar or --mode tensor")


SCALAR_DESIGN = (
    "--mode scalar runs the built-in designs only (it is their readable rendering): a design "
    "file runs in --mode tensor"
)


def check_train_options(mode: str, train: TrainConfig) -> None:
    """Raise the UserError for a training option that `mode` lacks (dropout is tensor mode's
    alone) or that another setting leaves unused (a setting's
    declared `applies`: --muon-momentum without --optimizer muon, --decay-fraction without
    --lr-schedule wsd); make_gpt calls it, and a command can call it before it prints anything."""
    if mode == "scalar" and train.dropout > 0:
        raise UserError("--dropout applies to --mode tensor only")
    values = train.to_dict()
    for s in TRAIN_SETTINGS.values():
        if values[s.name] != s.default and not in_use(s, values):
            name, value = s.applies
            raise UserError(f"{s.flag} applies to {SETTINGS[name].flag} {value}")


def check_tensor_options(options: TensorOptions) -> str:
    """Raise now the UserError that make_gpt would raise later (torch missing, a device this
    machine lacks, a bad dtype), so that a command fails before it prints or writes anything.
    Returns where it will run, e.g. "cpu, float32"."""
    from microgpt.tensor import TensorGPT  # noqa: F401 (imports torch, or says how to install it)
    from microgpt.tensor.device import resolve

    return f"{resolve(options).device.type}, {options.dtype}"
