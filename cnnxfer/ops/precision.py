"""Which dtype the engine's convolutions and GEMMs compute in, for activations of a given dtype.

bf16 halves the bytes moved, but only CPUs with bf16 dot-product units (AVX-512-BF16, AMX)
compute it in hardware; elsewhere oneDNN emulates bf16 convolutions, several times slower than
fp32. So on such CPUs the engine computes in fp32 and only stores bf16 (and fp16, which CPUs do
not compute natively at all, likewise). GPUs compute both natively.
"""
from __future__ import annotations

import torch

from . import compat

# Probed once, at import: the probe is cheap, and torch.compile cannot trace it.
_CPU_NATIVE_BF16 = compat.cpu_has_bf16_dot_product()


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 dot products in hardware (AVX-512-BF16 or AMX)."""
    return _CPU_NATIVE_BF16


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype convolutions and GEMMs run in for activations of `dtype` on `device`: `dtype`
    itself, except bf16 on CPUs without bf16 units and fp16 on any CPU, which compute in fp32."""
    if (dtype in (torch.bfloat16, torch.float16) and torch.device(device).type == "cpu"
            and not (dtype == torch.bfloat16 and cpu_has_native_bf16())):
        return torch.float32
    return dtype


def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """(the CPU's model name, its feature flags) from /proc/cpuinfo, for reports of where a
    figure was measured; ("unknown CPU", {}) where that file is not there."""
    import platform

    model, flags = platform.processor() or "unknown CPU", frozenset()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = frozenset(line.split(":", 1)[1].split())
                    break  # the first processor's: the model line comes before its flags
    except OSError:
        pass
    return model, flags
