"""relu_lrn_maxpool: ReLU + local response normalization + max-pooling in one pass.

The public face of the op: PyTorch-style keyword arguments, the shared argument check
(checks.lrn_pool_args), and the backend choice. The op itself is torch.ops.cnnxfer.relu_lrn_maxpool
(C++ on CPUs, CUDA in CUDA builds) or torch.ops.cnnxfer.relu_lrn_maxpool_triton (kernels/); their
fake kernels and autograd live in registrations.py.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from . import checks, library, reference
from .geometry import IntOrPair


def relu_lrn_maxpool(
    x: torch.Tensor,
    *,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    kernel_size: IntOrPair = 3,
    stride: IntOrPair = 2,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    order: str = "lrn_pool",
    relu: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """ReLU, local response normalization across channels and max-pooling in one pass.

    Means exactly ``F.max_pool2d(F.local_response_norm(F.relu(x), size, alpha, beta, k),
    kernel_size, stride, padding, ceil_mode=ceil_mode)`` (order="lrn_pool", AlexNet); with
    order="pool_lrn" the max-pool comes first (CaffeNet, GoogLeNet). See
    cnnxfer.ops.reference.relu_lrn_maxpool.

    Args:
        x: [N, C, H, W] float32, float64, bfloat16 or float16, NCHW or channels_last, CPU or GPU.
            bf16/fp16 are accumulated in float32.
        size: LRN window across channels (odd); alpha, beta, k: LRN constants (>= 0).
        kernel_size, stride: int or (height, width).
        padding: int, (height, width) or ONNX-style (top, left, bottom, right); pads are -inf.
        ceil_mode: as F.max_pool2d.
        relu: apply the ReLU first (False: LRN + pool only).
        backend: "auto" (C++ on CPU; on a GPU the CUDA kernel when the build has it, else
            Triton), "native", "triton", "reference".

    Returns:
        [N, C, OH, OW] in x's dtype, channels_last when x is channels_last.
    """
    args = checks.lrn_pool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                                order, relu)
    return _kernel(x, checks.check_backend(backend))(x, *args)


def _kernel(x: torch.Tensor, backend: str) -> Callable:
    if backend == "reference":
        return _reference
    if backend == "auto":
        # Neither GPU kernel has been timed against the other yet: CUDA first is a default, not
        # a measurement.
        backend = "native" if library.has_native_kernel(x.device) else "triton"
    if backend == "native":
        library.load()
        return torch.ops.cnnxfer.relu_lrn_maxpool
    return triton_lrn_pool_op()


def triton_lrn_pool_op():
    """torch.ops.cnnxfer.relu_lrn_maxpool_triton, registered with its autograd on first use
    (imports triton)."""
    from cnnxfer.kernels import lrn_pool  # noqa: F401  (registers the op)

    return torch.ops.cnnxfer.relu_lrn_maxpool_triton


def _reference(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, pool_first, relu):
    return reference.relu_lrn_maxpool(x, size, alpha, beta, k, kernel_size, stride, padding,
                                      ceil_mode, "pool_lrn" if pool_first else "lrn_pool", relu)
