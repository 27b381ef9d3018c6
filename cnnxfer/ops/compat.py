"""Every private or undocumented torch API cnnxfer relies on, in one place, each with a fallback
to a public path.

A torch upgrade may remove any of these without notice. When one is gone, cnnxfer keeps working
through the fallback (slower, or more conservative), and tests/test_compat.py fails loudly,
naming the API, so the loss is noticed rather than silently absorbed.

    cpu_has_bf16_dot_product()   torch.cpu._is_avx512_bf16_supported / _is_amx_tile_supported;
                                 fallback: the CPU flags in /proc/cpuinfo (Linux), else False
    packed_linear_available()    torch.ops.mkldnn._reorder_linear_weight / _linear_pointwise
    pack_linear_weight(), packed_linear(); fallback: addmm on a transposed view
    tensor_version()             Tensor._version; fallback: None (the engine then caches no
                                 cast weights, and recasts them on every call)
"""
from __future__ import annotations

import torch

# (what, how to reach it) for each private API, for the tests and for messages.
PRIVATE_APIS = {
    "torch.cpu._is_avx512_bf16_supported": lambda: torch.cpu._is_avx512_bf16_supported,
    "torch.cpu._is_amx_tile_supported": lambda: torch.cpu._is_amx_tile_supported,
    "torch.ops.mkldnn._reorder_linear_weight": lambda: torch.ops.mkldnn._reorder_linear_weight,
    "torch.ops.mkldnn._linear_pointwise": lambda: torch.ops.mkldnn._linear_pointwise,
    "torch.Tensor._version": lambda: torch.Tensor._version,
}


def available(name: str) -> bool:
    """Whether the private API `name` (a key of PRIVATE_APIS) exists in this torch."""
    try:
        PRIVATE_APIS[name]()
    except (AttributeError, RuntimeError):  # torch.ops raises RuntimeError for unknown ops
        return False
    return True


# ------------------------------------------------------------------ CPU features

# CPU flags that mean bf16 dot products run in hardware (AVX-512-BF16, AMX-BF16).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16_dot_product() -> bool:
    """True when this CPU computes bf16 dot products in hardware (AVX-512-BF16 or AMX).

    Without them oneDNN emulates bf16 convolutions, several times slower than fp32."""
    if available("torch.cpu._is_avx512_bf16_supported") and available(
            "torch.cpu._is_amx_tile_supported"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return cpu_flags_say_bf16()


def cpu_flags_say_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """The public fallback of cpu_has_bf16_dot_product: the kernel's list of CPU flags. False
    where there is no such file (not Linux): computing in fp32 is always correct."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


# ------------------------------------------------------------------ oneDNN prepacked FC layers

def packed_linear_available() -> bool:
    """Whether oneDNN can run FC layers on prepacked weights (GEMM + bias + ReLU in one call)."""
    return (torch.backends.mkldnn.is_available()
            and available("torch.ops.mkldnn._reorder_linear_weight")
            and available("torch.ops.mkldnn._linear_pointwise"))


def pack_linear_weight(weight: torch.Tensor, batch_size: int) -> torch.Tensor:
    """weight [out, in] float32 (CPU) as oneDNN's opaque packed tensor, tuned for `batch_size`
    rows; only packed_linear can use it."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)


def packed_linear(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                  relu: bool) -> torch.Tensor:
    """relu?(x @ weight.T + bias) for x [N, in] and a weight from pack_linear_weight."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias,
                                              "relu" if relu else "none", [], "")


# ------------------------------------------------------------------ tensor versions

def tensor_version(tensor: torch.Tensor) -> int | None:
    """The version counter of `tensor`, bumped by every in-place edit (how the engine's weight
    cache notices them); None when torch no longer exposes it: callers then cache nothing."""
    if not available("torch.Tensor._version"):
        return None
    return tensor._version
