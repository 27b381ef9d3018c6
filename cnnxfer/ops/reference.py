"""The plain-PyTorch meaning of every cnnxfer op: the spec the kernels are tested against.

Nothing here is fast; everything here is obviously right. It imports none of the engine: its only
helper, max_pool with asymmetric pads, lives in max_pool.py and is tested against a loop. Eager
F.local_response_norm has no bf16/fp16 CPU kernel, so local_response_norm computes those in fp32;
tests evaluate these functions in float64 and compare.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import IntOrPair
from .layers import LRN, MaxPool
from .max_pool import max_pool

__all__ = ["max_pool", "local_response_norm", "relu_lrn_maxpool", "conv_block", "extract_patches"]


def local_response_norm(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """F.local_response_norm; bf16/fp16 on the CPU, which eager has no kernel for, computed in
    fp32 and cast back."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return F.local_response_norm(x.float(), size, alpha, beta, k).to(x.dtype)
    return F.local_response_norm(x, size, alpha, beta, k)


def relu_lrn_maxpool(
    x: torch.Tensor,
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
) -> torch.Tensor:
    """max_pool2d(local_response_norm(relu(x))) for order="lrn_pool" (AlexNet),
    local_response_norm(max_pool2d(relu(x))) for order="pool_lrn" (CaffeNet, GoogLeNet)."""
    if relu:
        x = F.relu(x)
    if order == "lrn_pool":
        return max_pool(local_response_norm(x, size, alpha, beta, k), kernel_size, stride,
                        padding, ceil_mode)
    if order == "pool_lrn":
        return local_response_norm(max_pool(x, kernel_size, stride, padding, ceil_mode), size,
                                     alpha, beta, k)
    raise ValueError(f"order must be 'lrn_pool' or 'pool_lrn', got {order!r}")


def conv_block(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    groups: int = 1,
    lrn: LRN | None = LRN(),
    pool: MaxPool | None = MaxPool(),
    order: str = "lrn_pool",
) -> torch.Tensor:
    """An AlexNet block as plain layers: conv2d + bias, ReLU, then LRN and max-pool in `order`
    ("lrn_pool" or "pool_lrn"); lrn=None or pool=None leaves that layer out."""
    y = F.relu(F.conv2d(x, weight, bias, stride, padding, 1, groups))
    layers = []
    if lrn is not None:
        layers.append(lambda t: local_response_norm(t, lrn.size, lrn.alpha, lrn.beta, lrn.k))
    if pool is not None:
        layers.append(lambda t: max_pool(t, pool.kernel_size, pool.stride, pool.padding,
                                         pool.ceil_mode))
    if order == "pool_lrn":
        layers.reverse()
    for layer in layers:
        y = layer(y)
    return y


def extract_patches(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int = 224,
    mean=None,
    std=None,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    antialias: bool = True,
    reverse_channels: bool = False,
) -> torch.Tensor:
    """Crops, resizes and normalizes one patch per box, one at a time.

    images: [N, C, H, W] (uint8 or floating); boxes: [K, 5] int64 rows (image, x0, y0, x1, y1),
    x1/y1 exclusive. Each crop images[i, :, y0:y1, x0:x1] is resized to size x size with
    F.interpolate(mode="bilinear", align_corners=False, antialias=antialias) in float32 (float64
    for float64 images), its channels reversed if reverse_channels (RGB -> BGR), then
    (value - mean[c]) / std[c] per output channel, cast to out_dtype (default float32).
    Returns [K, C, size, size], channels_last if asked.
    """
    compute = torch.float64 if images.dtype == torch.float64 else torch.float32
    channels = images.shape[1]
    out_dtype = out_dtype or torch.float32
    patches = []
    for image_index, x0, y0, x1, y1 in boxes.tolist():
        crop = images[image_index, :, y0:y1, x0:x1].to(compute)
        patch = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False,
                              antialias=antialias)[0]
        if reverse_channels:
            patch = patch.flip(0)
        if mean is not None:
            patch = patch - torch.tensor(mean, dtype=compute, device=patch.device).view(-1, 1, 1)
        if std is not None:
            patch = patch / torch.tensor(std, dtype=compute, device=patch.device).view(-1, 1, 1)
        patches.append(patch.to(out_dtype))
    out = (torch.stack(patches) if patches
           else torch.empty((0, channels, size, size), dtype=out_dtype, device=images.device))
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
