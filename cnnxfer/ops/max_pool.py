"""Max-pooling with ONNX-style asymmetric padding, which F.max_pool2d lacks.

A helper that both the reference and the engine need (conv blocks with a pool but no LRN), so it
lives in a module of its own; tests hold it to an obvious loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import IntOrPair, as_padding, as_pair, pooled_length


def max_pool(
    x: torch.Tensor,
    kernel_size: IntOrPair = 3,
    stride: IntOrPair = 2,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """F.max_pool2d, also with (top, left, bottom, right) padding (-inf pads, as ONNX MaxPool).

    x: [N, C, H, W] of any floating dtype; returns [N, C, OH, OW] in x's dtype (OH, OW as
    geometry.pooled_length gives them)."""
    top, left, bottom, right = as_padding(padding)
    if top == bottom and left == right:
        return F.max_pool2d(x, kernel_size, stride, (top, left), ceil_mode=ceil_mode)
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    padded = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    pooled = F.max_pool2d(padded, (kh, kw), (sh, sw), 0, ceil_mode=ceil_mode)
    # In ceil mode, pooling the padded tensor may add a window that starts in the trailing padding;
    # PyTorch's own rule (kept for symmetric padding) drops it.
    out_h = pooled_length(x.shape[-2], kh, sh, top, bottom, ceil_mode)
    out_w = pooled_length(x.shape[-1], kw, sw, left, right, ceil_mode)
    return pooled[..., :out_h, :out_w]
