"""Loads cnnxfer's compiled library (cnnxfer._C), which registers the torch.ops.cnnxfer ops.

When it cannot load, the error says why and how to fix it, instead of a later
"operator cnnxfer::... does not exist".
"""
from __future__ import annotations

import torch

_REBUILD = (
    "Rebuild it against the torch you run: `pip install --no-build-isolation -e .` in the cnnxfer "
    "checkout (or `./dev.sh test`, which sets everything up)."
)


class ExtensionError(ImportError):
    """cnnxfer's compiled ops are missing or were built for another torch."""


def load() -> None:
    try:
        from . import _C  # noqa: F401  (loading registers the ops)
    except ImportError as error:
        raise ExtensionError(
            f"cnnxfer's compiled library (cnnxfer._C) failed to load: {error}. "
            f"This happens when cnnxfer was not built, or was built against another torch "
            f"(running torch {torch.__version__}). {_REBUILD}"
        ) from error
    built_for = getattr(_C, "torch_version", "unknown")
    if built_for != torch.__version__:
        raise ExtensionError(
            f"cnnxfer's compiled library was built against torch {built_for} but torch "
            f"{torch.__version__} is running; its C++ ABI may differ. {_REBUILD}"
        )


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether op (e.g. "cnnxfer::relu_lrn_maxpool") has a kernel for dispatch_key ("CUDA")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)
