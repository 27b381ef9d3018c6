"""Loads cnnxfer's compiled library (cnnxfer._C) on the first op call, not at import.

Loading it defines the torch.ops.cnnxfer ops (their schemas and C++/CUDA kernels); the Python
side then adds their fake kernels and autograd (cnnxfer.ops.registrations). Nothing above this
module imports cnnxfer._C itself, so `import cnnxfer` and every module that needs no kernel
(grids, images, feature files) work without a build. When the library cannot load, the error says
why and how to fix it, instead of a later "operator cnnxfer::... does not exist".
"""
from __future__ import annotations

import threading

import torch

_REBUILD = (
    "Rebuild it against the torch you run: `pip install --no-build-isolation -e .` in the cnnxfer "
    "checkout (or `./dev.sh test`, which sets everything up)."
)

_loaded = False
_lock = threading.Lock()


class ExtensionError(ImportError):
    """cnnxfer's compiled ops are missing or were built for another torch."""


def load() -> None:
    """Loads the compiled ops and their Python registrations once; later calls return at once.

    Raises ExtensionError when the library is missing or was built against another torch. Under
    torch.compile a first call works too: dynamo runs import statements at trace time (and a lock
    cannot be traced, nor is one needed while tracing)."""
    if _loaded:
        return
    if torch.compiler.is_compiling():
        _load()
    else:
        with _lock:
            _load()


def _load() -> None:
    global _loaded
    if _loaded:
        return
    compiled()
    # Importing it registers the fake kernels and autograd formulas of the ops just defined.
    from cnnxfer.ops import registrations  # noqa: F401

    _loaded = True  # only now: a failed registration is retried by the next call


def compiled():
    """The compiled library's module (cnnxfer._C), importing it (and so defining the ops) if
    needed, after checking it was built for the running torch."""
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
    return _C


def has_native_kernel(device: torch.device) -> bool:
    """Whether the compiled ops have kernels for `device` in this build: always on the CPU, on
    GPUs only in CUDA builds. Loads the library."""
    load()
    if device.type == "cpu":
        return True
    return device.type == "cuda" and bool(compiled().cuda_kernels)
