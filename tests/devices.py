"""The one place that decides which devices and backends the tests run on.

GPU presence is torch.cuda.is_available(), read once here. Without a GPU, Triton kernels run in
Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set here before triton is imported: the
conftest imports this module first). With a GPU the interpreter is off, so Triton on CPU tensors
is skipped, and Triton runs on the GPU instead.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

# Where Triton kernels run in this session: the GPU, else the interpreter on the CPU.
TRITON_DEVICE = "cuda" if HAS_CUDA and not TRITON_INTERPRETER else "cpu"


@functools.cache
def cuda_kernels_built() -> bool:
    """Whether this build of cnnxfer has its CUDA kernels (a CUDA torch with nvcc, or
    FORCE_CUDA=1). Loads the compiled library."""
    from cnnxfer.ops import library

    return HAS_CUDA and library.has_native_kernel(torch.device("cuda"))


def _skip_triton(device: str) -> str | None:
    """Why Triton cannot run on `device` here, or None when it can."""
    if not HAS_TRITON:
        return "triton is not installed"
    if device == "cpu" and not TRITON_INTERPRETER:
        return "Triton runs on CPU tensors only in its interpreter (TRITON_INTERPRET=1)"
    if device == "cuda" and not HAS_CUDA:
        return "no CUDA GPU"
    return None


def backend_device_params(*, gpu: bool = True) -> list:
    """pytest params (backend, device) for an op's kernels: (native, cpu) always; (triton, cpu)
    in the interpreter; (native, cuda) and (triton, cuda) marked `gpu`, skipped with the reason
    when there is no GPU, no CUDA kernels in this build, or no triton."""
    params = [pytest.param("native", "cpu", id="native-cpu")]
    reason = _skip_triton("cpu")
    params.append(pytest.param("triton", "cpu", id="triton-cpu",
                               marks=[pytest.mark.skipif(reason is not None, reason=reason or "")]))
    if gpu:
        native_reason = ("no CUDA GPU" if not HAS_CUDA else
                         None if cuda_kernels_built() else "this build has no CUDA kernels")
        params.append(pytest.param("native", "cuda", id="native-cuda", marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(native_reason is not None, reason=native_reason or "")]))
        reason = _skip_triton("cuda")
        params.append(pytest.param("triton", "cuda", id="triton-cuda", marks=[
            pytest.mark.gpu, pytest.mark.skipif(reason is not None, reason=reason or "")]))
    return params


def _skip_gpu_engine() -> str | None:
    """Why the engine cannot run on the GPU here (no GPU, or neither CUDA kernels in this build
    nor triton to fall back on), or None when it can."""
    if not HAS_CUDA:
        return "no CUDA GPU"
    if not cuda_kernels_built() and not HAS_TRITON:
        return "this build has no CUDA kernels and triton is not installed"
    return None


def needs_gpu_engine(test):
    """Marks a test `gpu` that runs the engine's ops on a GPU (native CUDA kernels, else Triton,
    as "auto" picks), skipped with the reason where they cannot run."""
    reason = _skip_gpu_engine()
    return pytest.mark.gpu(pytest.mark.skipif(reason is not None, reason=reason or "")(test))

needs_triton = pytest.mark.skipif(_skip_triton(TRITON_DEVICE) is not None,
                                  reason=_skip_triton(TRITON_DEVICE) or "")
