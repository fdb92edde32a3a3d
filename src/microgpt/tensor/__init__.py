"""Tensor mode: microGPT on PyTorch, a batch of documents per step.

Importing this package does no work; torch is imported when `TensorGPT` is first asked for, and
its absence is a one-line `UserError` that says how to install it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt.errors import UserError

if TYPE_CHECKING:
    from microgpt.tensor.model import TensorGPT

__all__ = ["TensorGPT"]

INSTALL_HINT = "tensor mode needs PyTorch: pip install 'microgpt[tensor]' (see docs/tensor.md)"


def __getattr__(name: str):
    if name == "TensorGPT":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        from microgpt.tensor.model import TensorGPT

        return TensorGPT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
