"""Random convolution cases shared by the Triton convolution tests."""
from __future__ import annotations

import torch


def random_conv(shape, seed=0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, weight, bias (float32, CPU) for shape (N, C, H, W, C_out, kernel, stride, padding,
    groups); the weight scaled by 1/sqrt(fan-in), so outputs stay near unit size."""
    n, c, h, w, c_out, k, _, _, groups = shape
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((n, c, h, w), generator=generator)
    fan_in = c // groups * k * k
    weight = torch.randn((c_out, c // groups, k, k), generator=generator) / fan_in ** 0.5
    bias = torch.randn((c_out,), generator=generator) * 0.1
    return x, weight, bias
