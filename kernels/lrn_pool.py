"""Triton kernel of relu_lrn_maxpool, registered as torch.ops.cnnxfer.relu_lrn_maxpool_triton.

One program computes a BLOCK_C x BLOCK_W tile of one output row (n, oh). Each output element reads
its pooling window straight from global memory (any strides: NCHW, channels_last or views) and
normalizes across channels on the fly:
  lrn_pool: max over the window of  relu(x_c) / (k + alpha/size * sum_t relu(x_{c+t})^2)^beta
  pool_lrn: p_c / (k + alpha/size * sum_t p_{c+t}^2)^beta,  p = max over the window of relu(x)
Overlapping windows and channel neighbours are re-read rather than shared: they hit in cache on a
GPU, and it keeps the kernel one simple pass. Sums and powers run in float32 (float64 for float64);
x / D^beta is computed as the reference does (no reciprocal that could overflow for tiny k).
Tested on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnxfer.ops.checks import lrn_pool_args
from cnnxfer.ops.geometry import pooled_length
from cnnxfer.ops.lrn_pool_backward import register_autograd


@triton.jit
def _max_nan(best, value):
    # max that lets a NaN through, as torch.max_pool2d does
    return tl.where((value > best) | (value != value), value, best)


@triton.jit
def _normalize(x, d, BETA: tl.constexpr):
    # x / d^beta as the reference computes it. d^0 is 1 even for d = 0 or inf (exp2(0 * log2 d)
    # is not). GPUs evaluate log2 and exp2 with subnormals flushed to zero, so a tiny d (k tiny
    # or 0 and tiny activations) would become 0, and x / 0 inf or NaN where the reference has a
    # finite value (seen on an H200). Below 2^-64, d is scaled by 2^64 and x by 2^(64 beta)
    # instead: the same quotient with every term normal. x cannot overflow there: x^2 is one
    # of the terms of d, so |x| <= sqrt(d * size / alpha).
    if BETA == 0.0:
        return x
    small = d < 5.421010862427522e-20  # 2^-64
    scaled = tl.where(small, d * 18446744073709551616.0, d)
    boost = tl.exp2(tl.where(small, 64.0 * BETA, 0.0))
    return (x * boost) / tl.exp2(BETA * tl.log2(scaled))


@triton.jit
def _relu_lrn_maxpool_kernel(
    x_ptr, y_ptr,
    C, H, W, OH, OW,
    xs_n, xs_c, xs_h, xs_w,
    ys_n, ys_c, ys_h, ys_w,
    ALPHA_OVER_SIZE: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    SIZE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PT: tl.constexpr, PL: tl.constexpr, POOL_FIRST: tl.constexpr, RELU: tl.constexpr,
    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    row = tl.program_id(0)  # n * OH + oh
    n = row // OH
    oh = row % OH
    # int64 offsets: one image may hold more than 2**31 elements
    cs = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[:, None]).to(tl.int64)
    ows = (tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]).to(tl.int64)
    out_mask = (cs < C) & (ows < OW)
    x_base = x_ptr + n.to(tl.int64) * xs_n
    neg_inf = float("-inf")
    # The window's first input row, as a tensor: the interpreter rejects masks built from a
    # scalar comparison broadcast against a block.
    row0 = oh * SH - PT + tl.zeros_like(ows)

    if POOL_FIRST:
        # p_{c+t} for every channel offset t of the LRN window, pooled from relu(x)
        pooled_center = tl.full((BLOCK_C, BLOCK_W), neg_inf, ACC)
        sumsq = tl.zeros((BLOCK_C, BLOCK_W), ACC)
        for t in tl.static_range(SIZE):
            cc = cs + (t - SIZE // 2)
            channel_ok = (cc >= 0) & (cc < C) & out_mask
            pooled = tl.full((BLOCK_C, BLOCK_W), neg_inf, ACC)
            for i in tl.static_range(KH):
                h = row0 + i
                for j in tl.static_range(KW):
                    w = ows * SW - PL + j
                    valid = channel_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                    v = tl.load(x_base + cc * xs_c + h * xs_h + w * xs_w, mask=valid,
                                other=neg_inf).to(ACC)
                    if RELU:  # turns the -inf pads into 0: harmless, relu'd values are >= 0
                        v = tl.where(v < 0, 0.0, v)
                    pooled = _max_nan(pooled, v)
            pooled = tl.where(channel_ok, pooled, 0.0)
            sumsq += pooled * pooled
            if t == SIZE // 2:
                pooled_center = pooled
        result = _normalize(pooled_center, K + ALPHA_OVER_SIZE * sumsq, BETA)
    else:
        result = tl.full((BLOCK_C, BLOCK_W), neg_inf, ACC)
        for i in tl.static_range(KH):
            h = row0 + i
            for j in tl.static_range(KW):
                w = ows * SW - PL + j
                inside = out_mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                pixel = x_base + h * xs_h + w * xs_w
                center = tl.load(pixel + cs * xs_c, mask=inside, other=0.0).to(ACC)
                if RELU:
                    center = tl.where(center < 0, 0.0, center)
                sumsq = tl.zeros((BLOCK_C, BLOCK_W), ACC)
                for t in tl.static_range(SIZE):
                    cc = cs + (t - SIZE // 2)
                    v = tl.load(pixel + cc * xs_c, mask=inside & (cc >= 0) & (cc < C),
                                other=0.0).to(ACC)
                    if RELU:
                        v = tl.where(v < 0, 0.0, v)
                    sumsq += v * v
                normalized = _normalize(center, K + ALPHA_OVER_SIZE * sumsq, BETA)
                result = _max_nan(result, tl.where(inside, normalized, neg_inf))

    tl.store(y_ptr + n.to(tl.int64) * ys_n + cs * ys_c + oh * ys_h + ows * ys_w,
             result.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton_op("cnnxfer::relu_lrn_maxpool_triton", mutates_args=())
def relu_lrn_maxpool_triton(
    x: torch.Tensor,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    ceil_mode: bool,
    pool_first: bool,
    relu: bool,
) -> torch.Tensor:
    """Same schema, meaning and checks as torch.ops.cnnxfer.relu_lrn_maxpool; padding is (top,
    left, bottom, right)."""
    lrn_pool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                  "pool_lrn" if pool_first else "lrn_pool", relu)
    batch, channels, height, width = x.shape
    top, left, bottom, right = padding
    out_h = pooled_length(height, kernel_size[0], stride[0], top, bottom, ceil_mode)
    out_w = pooled_length(width, kernel_size[1], stride[1], left, right, ceil_mode)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = torch.empty((batch, channels, out_h, out_w), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if y.numel() == 0:
        return y
    block_c, block_w = 16, 16
    grid = (batch * out_h, triton.cdiv(channels, block_c), triton.cdiv(out_w, block_w))
    wrap_triton(_relu_lrn_maxpool_kernel)[grid](
        x, y, channels, height, width, out_h, out_w,
        *x.stride(), *y.stride(),
        # constexpr: plain float arguments would be float32 in the kernel, even for float64 data
        ALPHA_OVER_SIZE=alpha / size, BETA=beta, K=k,
        SIZE=size, KH=kernel_size[0], KW=kernel_size[1], SH=stride[0], SW=stride[1],
        PT=top, PL=left, POOL_FIRST=pool_first, RELU=relu,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        BLOCK_C=block_c, BLOCK_W=block_w,
    )
    return y


register_autograd("cnnxfer::relu_lrn_maxpool_triton")
