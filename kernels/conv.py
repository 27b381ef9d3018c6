"""Triton implicit-GEMM convolution + bias + ReLU: torch.ops.cnnxfer.conv2d_relu_triton.

The first step of the GPU conv block (the LRN + max-pool epilogue applied to the tile before it
leaves the chip comes next): the convolution as a GEMM whose A operand is gathered from the
image on the fly, never materialized (no im2col buffer).

    rows    M = N * OH * OW output pixels (n, oh, ow)
    columns the output channels of one group (KG = C_out / groups)
    reduce  R = KH * KW * CG, in (kh, kw, c) order, c fastest: with channels_last input the
            loads of one reduction block are contiguous runs of channels

x is read channels_last (NHWC) and y written channels_last; the weight is rearranged once per
call to [groups, R, KG] so that its tile loads are contiguous too. Products accumulate in fp32
(tl.dot: tensor cores for bf16/fp16, exact fp32 for fp32 inputs) and the result is stored in x's
dtype. Tested on the CPU with TRITON_INTERPRET=1 against F.conv2d + ReLU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# Triton's interpreter (CPU tests) multiplies bf16 / fp16 tiles wrongly in tl.dot (triton 3.9:
# errors of 1e10 on a 16x16 product); there the tiles are upcast to fp32 first, so the tests
# check the kernel's gathers, masks and stores in every dtype, and the GPU runs the real dot.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def implicit_gemm(x_ptr, w_ptr, row_base, ih0, iw0, row_ok, cols, H, W, C, CG, KG,
                  KH: tl.constexpr, KW: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """The convolution's [BLOCK_M, BLOCK_N] fp32 tile: for each row, the pixel whose window
    starts at input (ih0, iw0) of the channels_last image at x_ptr + row_base (the group's first
    channel included); for each column, an output channel `cols` of the packed weight w_ptr
    ([KH * KW * CG, KG], the group's). Rows that are not row_ok and taps outside the image
    read zeros."""
    reduce = KH * KW * CG
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, reduce, BLOCK_K):
        rk = start + tl.arange(0, BLOCK_K)
        kh = rk // (KW * CG)
        kw = (rk // CG) % KW
        c = rk % CG
        ih = ih0[:, None] + kh[None, :]
        iw = iw0[:, None] + kw[None, :]
        inside = (row_ok[:, None] & (rk < reduce)[None, :]
                  & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
        a = tl.load(x_ptr + row_base[:, None] + (ih * W + iw) * C + c[None, :], mask=inside,
                    other=0.0)
        b = tl.load(w_ptr + rk[:, None].to(tl.int64) * KG + cols[None, :],
                    mask=(rk < reduce)[:, None] & (cols < KG)[None, :], other=0.0)
        if UPCAST:  # the interpreter's bf16 / fp16 dot is wrong (triton 3.9): fp32 there
            a, b = a.to(tl.float32), b.to(tl.float32)
        if IEEE:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
    return acc


@triton.jit
def _conv2d_relu_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, H, W, C, OH, OW, C_OUT, CG, KG,
                        stride, pad, KH: tl.constexpr, KW: tl.constexpr,
                        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, IEEE: tl.constexpr,
                        UPCAST: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels within the group
    n = (rows // (OH * OW)).to(tl.int64)
    pixel = rows % (OH * OW)
    acc = implicit_gemm(x_ptr, w_ptr + group.to(tl.int64) * KH * KW * CG * KG,
                        n * H * W * C + group * CG, (pixel // OW) * stride - pad,
                        (pixel % OW) * stride - pad, rows < M, cols, H, W, C, CG, KG, KH, KW,
                        IEEE, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
    if HAS_BIAS:
        bias = tl.load(b_ptr + group * KG + cols, mask=cols < KG, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    out = y_ptr + rows.to(tl.int64)[:, None] * C_OUT + group * KG + cols[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty),
             mask=(rows < M)[:, None] & (cols < KG)[None, :])


def check_conv_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    groups: int) -> None:
    """Raises for the argument that does not fit a grouped 2-d convolution."""
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W] and weight [C_out, C / groups, KH, KW], got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or weight.dtype != x.dtype:
        raise TypeError(f"x and weight must share one of float32, bfloat16, float16, got "
                        f"{x.dtype} and {weight.dtype}")
    if groups < 1 or x.shape[1] % groups or weight.shape[0] % groups \
            or weight.shape[1] * groups != x.shape[1]:
        raise ValueError(f"groups={groups} does not fit x's {x.shape[1]} channels and weight "
                         f"{tuple(weight.shape)}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != x.dtype):
        raise ValueError(f"bias must be [{weight.shape[0]}] in {x.dtype}, got "
                         f"{tuple(bias.shape)} {bias.dtype}")


def pack_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_out, CG, KH, KW] -> [groups, KH, KW, CG, KG] contiguous: each group's GEMM operand B
    with the reduction in (kh, kw, c) order, so a tile's loads are contiguous runs."""
    c_out, cg, kh, kw = weight.shape
    return weight.reshape(groups, c_out // groups, cg, kh, kw).permute(0, 3, 4, 2, 1).contiguous()


@triton_op("cnnxfer::conv2d_relu_triton", mutates_args=())
def conv2d_relu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       stride: int, padding: int, groups: int, relu: bool) -> torch.Tensor:
    """relu(conv2d(x, weight, bias, stride, padding, groups=groups)) (relu=False: the
    convolution alone), square stride and padding, dilation 1. x [N, C, H, W] float32 /
    bfloat16 / float16 in any layout; returns [N, C_out, OH, OW] channels_last in x's dtype."""
    check_conv_args(x, weight, bias, groups)
    n, c, h, w = x.shape
    c_out, cg, kh, kw = weight.shape
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel with padding {padding} does not fit a {h}x{w} "
                         f"input")
    kg = c_out // groups
    x = x.contiguous(memory_format=torch.channels_last)
    packed = pack_weight(weight, groups)
    y = torch.empty((n, c_out, oh, ow), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    rows = n * oh * ow
    block_m, block_n, block_k = 64, 32, 32
    grid = (triton.cdiv(rows, block_m), triton.cdiv(kg, block_n), groups)
    wrap_triton(_conv2d_relu_kernel)[grid](
        x, packed, bias if bias is not None else x, y, rows, h, w, c, oh, ow, c_out, cg, kg,
        stride, padding, KH=kh, KW=kw, HAS_BIAS=bias is not None, RELU=relu,
        IEEE=x.dtype == torch.float32, UPCAST=_INTERPRETED and x.dtype != torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y
