"""Tensor mode: microGPT on PyTorch, a batch of documents per step.

Importing this package does no work; torch is imported when `TensorGPT` (one run) or `Stack`
(many runs as one computation) is first asked for, and its absence is a one-line `UserError`
that says how to install it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt.errors import UserError

if TYPE_CHECKING:
    from microgpt.tensor.model import TensorGPT
    from microgpt.tensor.stack import Stack

__all__ = ["Stack", "TensorGPT"]

INSTALL_HINT = "tensor mode needs PyTorch: pip install 'microgpt[tensor]' (see docs/tensor.md)"


def __getattr__(name: str):
    if name in __all__:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        if name == "Stack":
            from microgpt.tensor.stack import Stack

            return Stack
        from microgpt.tensor.model import TensorGPT

        return TensorGPT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
