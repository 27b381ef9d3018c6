"""One argument validator per op, shared by every Python entry point of that op: the public face
(whatever backend it dispatches to: native, Triton or reference) and the Triton ops' host
functions, which torch.ops callers may reach directly. The C++ ops keep their own checks
(csrc/<op>.cpp) for C++ callers; the tests hold both to the same cases.

Errors name the argument, the value given and what was expected. A leaf module: it imports only
geometry, so the Triton kernels may use it.
"""
from __future__ import annotations

import math

import torch

from .geometry import as_padding, as_pair, pooled_length

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
IMAGE_DTYPES = (torch.uint8,) + FLOAT_DTYPES
ORDERS = ("lrn_pool", "pool_lrn")
BACKENDS = ("auto", "native", "triton", "reference")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


# --------------------------------------------------------------------------- relu_lrn_maxpool

def lrn_pool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, order,
                  relu) -> tuple:
    """The arguments of relu_lrn_maxpool, checked, as the op's schema takes them:
    (size, alpha, beta, k, [kh, kw], [sh, sw], [top, left, bottom, right], ceil_mode,
    pool_first, relu). kernel_size, stride: int or pair; padding: int, pair or 4 sides;
    order: "lrn_pool" or "pool_lrn"."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float64, bfloat16 or float16, got {x.dtype}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 2 == 0:
        raise ValueError(f"size (the LRN window) must be a positive odd int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
                value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    if kh <= 0 or kw <= 0:
        raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    pads = as_padding(padding)
    for side, pad, window in zip(("top", "left", "bottom", "right"), pads, (kh, kw, kh, kw)):
        if not 0 <= pad <= window // 2:
            raise ValueError(
                f"padding {side} must lie in [0, kernel_size // 2] = [0, {window // 2}], "
                f"got padding={padding!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    height, width = x.shape[-2:]
    out_h = pooled_length(height, kh, sh, pads[0], pads[2], bool(ceil_mode))
    out_w = pooled_length(width, kw, sw, pads[1], pads[3], bool(ceil_mode))
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"kernel_size {(kh, kw)} is larger than the padded input "
            f"{(height + pads[0] + pads[2], width + pads[1] + pads[3])} of x with shape "
            f"{tuple(x.shape)} and padding={padding!r}")
    return (size, float(alpha), float(beta), float(k), [kh, kw], [sh, sw], list(pads),
            bool(ceil_mode), order == "pool_lrn", bool(relu))


# --------------------------------------------------------------------------- extract_patches

def extract_patches_args(images, size, mean, std, out_dtype) -> tuple:
    """(images as [N, C, H, W], size, mean, std, out_dtype) of extract_patches, checked: images
    [C, H, W] or [N, C, H, W], uint8 or floating; size a positive int; mean and std None or one
    finite value per channel (std without 0), as lists of floats; out_dtype None or floating.
    The boxes are checked by boxes.check_box_table."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be [C, H, W] or [N, C, H, W], got shape "
                         f"{tuple(images.shape)}")
    if images.dtype not in IMAGE_DTYPES:
        raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
    # a SymInt when torch.compile traces with dynamic shapes
    if isinstance(size, bool) or not isinstance(size, (int, torch.SymInt)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be float32, float64, bfloat16 or float16, got "
                        f"{out_dtype}")
    channels = images.shape[1]
    return (images, size, _channel_values("mean", mean, channels),
            _channel_values("std", std, channels), out_dtype)


def box_table_layout(boxes: torch.Tensor) -> None:
    """The op-level form of the boxes: an int64 [K, 5] tensor (image, x0, y0, x1, y1). Whether
    each box lies inside its image is boxes.check_box_table's job, on the host."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5 or (
            boxes.dtype != torch.int64):
        raise ValueError(f"boxes must be an int64 [K, 5] tensor (image, x0, y0, x1, y1), got "
                         f"{getattr(boxes, 'dtype', type(boxes).__name__)} of shape "
                         f"{tuple(getattr(boxes, 'shape', ()))}")


def _channel_values(name: str, values, channels: int) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, (list, tuple)) and all(isinstance(v, (int, float)) for v in values):
        values = [float(v) for v in values]  # no tensor: the Triton op's host runs this traced
    else:  # tensors, arrays, a scalar for one channel
        values = torch.as_tensor(values, dtype=torch.float64).flatten().tolist()
    if len(values) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {values}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if name == "std" and any(v == 0 for v in values):
        raise ValueError(f"std must not contain 0, got {values}")
    return values
