"""Loads cnnxfer's compiled library (cnnxfer._C) on the first op call, not at import.

Loading it defines the torch.ops.cnnxfer ops (their schemas and C++/CUDA kernels); the Python
side then adds their fake kernels and autograd (cnnxfer.ops.registrations). Nothing above this
module imports cnnxfer._C itself, so `import cnnxfer` and every module that needs no kernel
(grids, images, feature files) work without a build. When the library cannot load, the error says
why and how to fix it, instead of a later "operator cnnxfer::... does not exist".
"""
from __future__ import annotations

import torch

from . import compat

_REBUILD = (
    "Rebuild it against the torch you run: `pip install --no-build-isolation -e .` in the cnnxfer "
    "checkout (or `./dev.sh test`, which sets everything up)."
)

_loaded = False


class ExtensionError(ImportError):
    """cnnxfer's compiled ops are missing or were built for another torch."""


def load() -> None:
    """Loads the compiled ops once; later calls return at once. Raises ExtensionError when the
    library is missing or was built against another torch. Under torch.compile the imports run
    at trace time (dynamo executes import statements), so a compiled first call works too."""
    global _loaded
    if _loaded:
        return
    try:
        from cnnxfer import _C
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
    _loaded = True  # the ops exist: registrations (which calls load() first) may attach to them
    # Importing it registers the fake kernels and autograd formulas of the ops just defined.
    from cnnxfer.ops import registrations  # noqa: F401


def has_native_kernel(op: str, device: torch.device) -> bool:
    """Whether the compiled op `op` (e.g. "relu_lrn_maxpool") has a kernel for `device` in this
    build: always on the CPU, on GPUs only in CUDA builds. Loads the library."""
    load()
    if device.type == "cpu":
        return True
    return compat.op_has_kernel(getattr(torch.ops.cnnxfer, op).default, device.type.upper())
