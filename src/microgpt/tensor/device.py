"""Where and in what precision tensor mode runs: `TensorOptions` checked against this machine."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from microgpt.config import TENSOR_DTYPES, TensorOptions
from microgpt.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
assert tuple(DTYPES) == TENSOR_DTYPES


@dataclass(frozen=True)
class Placement:
    device: torch.device
    compute_dtype: torch.dtype  # activations and matmuls
    master_dtype: torch.dtype  # weights, gradients and Adam moments (float32 under bfloat16)
    loss_dtype: torch.dtype  # log-softmax over the vocabulary and the per-position weights


def _cuda_ok() -> bool:
    return torch.cuda.is_available()


def _mps_ok() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve(options: TensorOptions) -> Placement:
    """Check `options` and pick the device; every problem is a one-line UserError."""
    if options.device not in DEVICES:
        raise UserError(f"unknown --device {options.device!r}: use one of {', '.join(DEVICES)}")
    if options.dtype not in DTYPES:
        raise UserError(f"unknown --dtype {options.dtype!r}: use one of {', '.join(DTYPES)}")
    threads = options.threads
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
    ):
        raise UserError(f"--threads must be a positive integer, got {threads!r}")

    name = options.device
    if name == "auto":
        name = "cuda" if _cuda_ok() else "mps" if _mps_ok() else "cpu"
    elif name == "cuda" and not _cuda_ok():
        raise UserError(
            "--device cuda: this PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}): use --device cpu, or install a CUDA build of torch"
        )
    elif name == "mps" and not _mps_ok():
        raise UserError(
            "--device mps: Apple's Metal backend is not available here: use --device cpu"
        )
    if name == "mps" and options.dtype == "float64":
        raise UserError("--dtype float64 is not supported on mps: use --dtype float32")

    dtype = DTYPES[options.dtype]
    master = torch.float32 if dtype == torch.bfloat16 else dtype
    return Placement(torch.device(name), dtype, master, master)
