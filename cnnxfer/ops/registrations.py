"""Fake kernels and autograd of the compiled ops (torch.ops.cnnxfer.*, defined by cnnxfer._C).

Imported once by library.load(), right after the compiled library defines the ops: torch.library
can only attach Python registrations to ops that exist. The one module of the package that needs
the compiled library to import (tests/test_layout.py checks that). The fake kernels give
torch.compile the output's shape, dtype and memory format without running anything. The Triton
ops register their own (kernels/).
"""
from __future__ import annotations

import torch

from . import library
from .geometry import pooled_length
from .lrn_pool_backward import register_autograd

library.compiled()  # the ops must exist (when library.load() imports this module, they do)


@torch.library.register_fake("cnnxfer::relu_lrn_maxpool")
def _fake_relu_lrn_maxpool(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                           pool_first, relu):
    out_h = pooled_length(x.shape[2], kernel_size[0], stride[0], padding[0], padding[2], ceil_mode)
    out_w = pooled_length(x.shape[3], kernel_size[1], stride[1], padding[1], padding[3], ceil_mode)
    return torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format_of(x))


@torch.library.register_fake("cnnxfer::extract_patches")
def _fake_extract_patches(images, boxes, size, mean, std, out_dtype, channels_last, antialias,
                          reverse_channels):
    return torch.empty((boxes.shape[0], images.shape[1], size, size),
                       dtype=out_dtype or torch.float32, device=images.device,
                       memory_format=torch.channels_last if channels_last
                       else torch.contiguous_format)


def _memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is (and not also plainly contiguous), as the kernels decide."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


register_autograd("cnnxfer::relu_lrn_maxpool")
