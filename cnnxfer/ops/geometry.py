"""Pooling geometry shared by the reference, the op checks, the fake kernels and the Triton
kernels. A leaf module: it imports nothing of cnnxfer, so every layer may use it.

Padding comes in three spellings: an int (all sides), a pair (height, width) as in PyTorch, or a
4-tuple (top, left, bottom, right), the asymmetric pads ONNX model-zoo graphs use.
"""
from __future__ import annotations

from collections.abc import Sequence

IntOrPair = int | Sequence[int]


def as_pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """An int or a pair of ints as (height, width); raises naming `name` otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def as_padding(padding: IntOrPair) -> tuple[int, int, int, int]:
    """padding as (top, left, bottom, right)."""
    if isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 4:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in padding):
            return tuple(int(v) for v in padding)  # type: ignore[return-value]
    try:
        ph, pw = as_pair(padding, "padding")
    except TypeError:
        raise TypeError(
            "padding must be an int, a pair (height, width) or (top, left, bottom, right), "
            f"got {padding!r}"
        ) from None
    return ph, pw, ph, pw


def pooled_length(
    length: int, kernel: int, stride: int, pad_before: int, pad_after: int, ceil_mode: bool
) -> int:
    """Output length of one pooled axis (<= 0 when the window does not fit).

    PyTorch's max_pool2d rule, generalised to asymmetric padding: in ceil mode the last window is
    dropped when it would start inside the trailing padding. csrc/lrn_pool.h holds the C++ twin.
    """
    span = length + pad_before + pad_after - kernel
    if span < 0:
        return 0
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= length + pad_before:
        out -= 1
    return out
