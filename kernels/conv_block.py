"""Triton kernel of a whole AlexNet block: torch.ops.cnnxfer.conv_block_triton.

    y = maxpool(lrn(relu(conv2d(x, weight) + bias)))   (order "lrn_pool", AlexNet)
    y = lrn(maxpool(relu(conv2d(x, weight) + bias)))   (order "pool_lrn", CaffeNet)

in one kernel: the convolution's output never leaves the chip. One program computes a tile of
TILE_PH x TILE_PW pooled outputs of one image, for every output channel:

1. The conv pixels those pooled outputs need, a REGION_H x REGION_W patch of the conv map
   (REGION = (TILE - 1) * pool_stride + pool_kernel), are the M rows of an implicit GEMM (as in
   kernels/conv.py: the A tile gathered from the channels_last image per reduction block, in
   (kh, kw, c) order; fp32 accumulation on tensor cores). Neighbouring tiles' regions overlap by
   pool_kernel - pool_stride rows and columns: that halo is recomputed, not exchanged.
2. Bias and ReLU, then LRN across channels: the tile holds every output channel (both groups of
   conv2 are computed by the same program and joined), so each channel's window sum is a gather
   along the tile's channel axis.
3. Max-pooling: each pooled output gathers its window's rows from the tile (tl.gather; on a GPU,
   registers and shared memory).

Blocks without LRN (VGG's, or lrn=None) have no cross-channel term, so their channels may be
split across programs. Tile sizes are chosen per shape by timing a few candidates on the GPU
(`tile_candidates`, `chosen_tiles`); the interpreter and CUDA-graph capture use the first
candidate. Tested on the CPU with TRITON_INTERPRET=1 against the reference block in float64.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from cnnxfer.ops.geometry import pooled_length
from cnnxfer.ops.lrn_pool_backward import relu_lrn_maxpool_backward

from .conv import check_conv_args, implicit_gemm, pack_weight
from .lrn_pool import _max_nan, _normalize

log = logging.getLogger("cnnxfer.conv_block")

# Triton's interpreter multiplies bf16 / fp16 tiles wrongly in tl.dot (see kernels/conv.py).
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# The largest [rows, channels] fp32 accumulator one program holds.
_MAX_TILE_ELEMENTS = 128 * 256
# Accumulators above this many elements spilled kilobytes per thread in ptxas for sm_90 (conv2's
# 128 x 2*128: 5.7-11.5 KiB; 64 x 2*128 at 16 warps: 0.7 KiB; docs/gpu-conv-notes.md): such
# tiles are ranked after every smaller one, and timed only as an alternative.
_SPILL_FREE_ELEMENTS = 128 * 128
# LRN needs every output channel in one tile; beyond this the block cannot be fused.
MAX_LRN_CHANNELS = 256


@triton.jit
def _group_conv(x_ptr, w_ptr, b_ptr, image, oh, ow, row_ok, H, W, C, CG, KG, group, col0,
                stride_h, stride_w, pad_h, pad_w,
                KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr):
    """relu(conv + bias) at the BLOCK_M conv pixels (oh, ow) of one image, for output channels
    col0 .. col0 + BLOCK_N of `group`: [BLOCK_M, BLOCK_N] fp32, 0 at rows that are not row_ok
    and at channels past the group's KG."""
    cols = col0 + tl.arange(0, BLOCK_N)
    row_base = image.to(tl.int64) * H * W * C + group * CG + tl.zeros((BLOCK_M,), tl.int64)
    acc = implicit_gemm(x_ptr, w_ptr + group.to(tl.int64) * KH * KW * CG * KG, row_base,
                        oh * stride_h - pad_h, ow * stride_w - pad_w, row_ok, cols, H, W, C, CG,
                        KG, KH, KW, IEEE, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
    if HAS_BIAS:
        bias = tl.load(b_ptr + group * KG + cols, mask=cols < KG, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    acc = tl.where(acc < 0, 0.0, acc)  # ReLU that lets a NaN through, as torch.relu
    return tl.where(row_ok[:, None] & (cols < KG)[None, :], acc, 0.0)


@triton.jit
def _lrn_tile(t, channel, channel_ok, C_OUT, KG, ALPHA_OVER_SIZE: tl.constexpr,
              BETA: tl.constexpr, K: tl.constexpr, SIZE: tl.constexpr, BLOCK_N: tl.constexpr):
    """LRN across the channels of a [rows, G * BLOCK_N] tile whose column g * BLOCK_N + j holds
    output channel g * KG + j (`channel`): each window's squares are gathered along the tile's
    channel axis. The window is [c - SIZE // 2, c + (SIZE - 1) // 2], as F.local_response_norm."""
    squares = t * t
    total = squares
    for offset in tl.static_range(SIZE):
        if offset != SIZE // 2:
            neighbour = channel + (offset - SIZE // 2)
            ok = channel_ok & (neighbour >= 0) & (neighbour < C_OUT)
            column = tl.where(ok, (neighbour // KG) * BLOCK_N + neighbour % KG, 0)
            index = column[None, :] + tl.zeros(t.shape, tl.int32)
            total += tl.where(ok[None, :], tl.gather(squares, index, axis=1), 0.0)
    return _normalize(t, K + ALPHA_OVER_SIZE * total, BETA)


@triton.jit
def _max_pool_tile(t, TILE_P: tl.constexpr, TILE_PW: tl.constexpr, REGION_W: tl.constexpr,
                   PK_H: tl.constexpr, PK_W: tl.constexpr, PS_H: tl.constexpr,
                   PS_W: tl.constexpr, BLOCK_P: tl.constexpr):
    """Max-pool a tile of relu'd conv pixels (rows: a REGION_H x REGION_W patch, row-major;
    values >= 0 or NaN, 0 where the patch leaves the map) to [BLOCK_P, channels]: row p is
    pooled output (p // TILE_PW, p % TILE_PW) of the tile. 0 stands for the -inf pads: every
    window holds at least one real, non-negative value."""
    p = tl.arange(0, BLOCK_P)
    first = (p // TILE_PW) * PS_H * REGION_W + (p % TILE_PW) * PS_W
    first = tl.where(p < TILE_P, first, 0)
    pooled = tl.zeros((BLOCK_P, t.shape[1]), tl.float32)
    for dy in tl.static_range(PK_H):
        for dx in tl.static_range(PK_W):
            index = (first + dy * REGION_W + dx)[:, None] + tl.zeros((BLOCK_P, t.shape[1]),
                                                                     tl.int32)
            pooled = _max_nan(pooled, tl.gather(t, index, axis=0))
    return pooled


@triton.jit
def _conv_block_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, C, OH, OW, PH, PW, C_OUT, CG, KG, TILES_W, CHANNEL_BLOCKS,
    stride_h, stride_w, pad_h, pad_w,
    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_LRN: tl.constexpr, SIZE: tl.constexpr, ALPHA_OVER_SIZE: tl.constexpr,
    BETA: tl.constexpr, K: tl.constexpr,
    PK_H: tl.constexpr, PK_W: tl.constexpr, PS_H: tl.constexpr, PS_W: tl.constexpr,
    PT: tl.constexpr, PL: tl.constexpr, POOL_FIRST: tl.constexpr, POOL: tl.constexpr,
    GROUPS_IN_TILE: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    TILE_PH: tl.constexpr, TILE_PW: tl.constexpr, REGION_H: tl.constexpr,
    REGION_W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    image = tl.program_id(0)
    tile = tl.program_id(1)
    ph0 = (tile // TILES_W) * TILE_PH
    pw0 = (tile % TILES_W) * TILE_PW
    # the conv pixels of this tile's pooling windows, halo included
    r = tl.arange(0, BLOCK_M)
    oh = ph0 * PS_H - PT + r // REGION_W
    ow = pw0 * PS_W - PL + r % REGION_W
    row_ok = (r < REGION_H * REGION_W) & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
    if GROUPS_IN_TILE == 2:  # both groups of a grouped conv in one tile: LRN spans them
        zero = tl.program_id(2) * 0
        t0 = _group_conv(x_ptr, w_ptr, b_ptr, image, oh, ow, row_ok, H, W, C, CG, KG, zero,
                         zero, stride_h, stride_w, pad_h, pad_w, KH, KW, HAS_BIAS, IEEE,
                         UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        t1 = _group_conv(x_ptr, w_ptr, b_ptr, image, oh, ow, row_ok, H, W, C, CG, KG,
                         zero + 1, zero, stride_h, stride_w, pad_h, pad_w, KH, KW, HAS_BIAS,
                         IEEE, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K)
        t = tl.reshape(tl.permute(tl.join(t0, t1), (0, 2, 1)), (BLOCK_M, 2 * BLOCK_N))
        first_channel = zero
        col0 = zero
    else:  # one group's channel block (without LRN the channels may be split)
        group = tl.program_id(2) // CHANNEL_BLOCKS
        col0 = (tl.program_id(2) % CHANNEL_BLOCKS) * BLOCK_N
        t = _group_conv(x_ptr, w_ptr, b_ptr, image, oh, ow, row_ok, H, W, C, CG, KG, group,
                        col0, stride_h, stride_w, pad_h, pad_w, KH, KW, HAS_BIAS, IEEE, UPCAST,
                        BLOCK_M, BLOCK_N, BLOCK_K)
        first_channel = group * KG + col0
    # tile column -> output channel
    tc = tl.arange(0, GROUPS_IN_TILE * BLOCK_N)
    channel = first_channel + (tc // BLOCK_N) * KG + tc % BLOCK_N
    channel_ok = col0 + tc % BLOCK_N < KG

    if HAS_LRN and not POOL_FIRST:
        t = _lrn_tile(t, channel, channel_ok, C_OUT, KG, ALPHA_OVER_SIZE, BETA, K, SIZE,
                      BLOCK_N)
        t = tl.where(row_ok[:, None], t, 0.0)
    if POOL:
        t = _max_pool_tile(t, TILE_PH * TILE_PW, TILE_PW, REGION_W, PK_H, PK_W, PS_H, PS_W,
                           BLOCK_P)
    if HAS_LRN and POOL_FIRST:
        t = _lrn_tile(t, channel, channel_ok, C_OUT, KG, ALPHA_OVER_SIZE, BETA, K, SIZE,
                      BLOCK_N)

    p = tl.arange(0, BLOCK_P)
    ph = ph0 + p // TILE_PW
    pw = pw0 + p % TILE_PW
    p_ok = (p < TILE_PH * TILE_PW) & (ph < PH) & (pw < PW)
    out = y_ptr + ((image.to(tl.int64) * PH + ph) * PW + pw)[:, None] * C_OUT + channel[None, :]
    tl.store(out, t.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & channel_ok[None, :])


# ------------------------------------------------------------------ tiles


@dataclasses.dataclass(frozen=True)
class Tiles:
    """One launch configuration: TILE_PH x TILE_PW pooled outputs per program, BLOCK_K of the
    reduction per step, and Triton's num_warps / num_stages."""

    tile_ph: int
    tile_pw: int
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 2


# Pooled tile shapes tried, in order of preference when nothing is timed.
_TILE_SHAPES = ((5, 5), (4, 6), (3, 7), (7, 7), (4, 4), (3, 3), (2, 4), (2, 2), (1, 1))
# On a GPU, two tile shapes are timed (_timed_row_counts), each with the (block_k, num_warps,
# num_stages) of _variants: each candidate is a compile (ptxas took 2-50 s per configuration
# on a 2-core VM for sm_90, up to 280 s for heavily spilling ones), so the list stays short.


def _variants(geometry: Geometry, tiles: Tiles) -> list[tuple[int, int, int]]:
    """(block_k, num_warps, num_stages) to try for a tile shape, the one taken untimed first.

    The epilogue's gathers (and the join of two groups) keep several copies of the accumulator
    live, so registers, not shared memory, bound the tile. ptxas for sm_90 (triton 3.9, bf16;
    bytes of local-memory stack per thread, docs/gpu-conv-notes.md):
      conv1 128 x 128: 2720 at 4 warps, 752 at 8, 600 at 16 (the register cap halves to 128);
      conv1 64 x 128: 824 at 4 warps, 168 at 8;  conv2 half width 64 x 2*64: 104 at 4, 0 at 8;
      conv2 half width 128 x 2*64: 184 at 8 warps, 96 at 16;
      conv2 64 x 2*128: 4248 at 8 warps, 680 at 16;  conv2 128 x 2*128: 11552 at 8 warps, 5736
      at 16 (4 warps there also made ptxas run 4-7x longer).
    So the first variant keeps about 32 fp32 accumulators per thread: 4 warps for small tiles,
    8 for one group's, up to 16 for two joined groups."""
    elements = geometry.accumulators(tiles)
    most = 16 if geometry.groups_in_tile == 2 else 8
    warps = min(max(triton.next_power_of_2(elements // (32 * 32)), 4), most)
    if elements >= 128 * 256:  # one variant: each compile of these took 35-280 s on 2 cores
        return [(64, warps, 3)]
    return [(32, warps, 2), (64, max(warps, 8), 3)]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A block's sizes as the kernel sees them (pool of 1 x 1 / 1 when the block has none)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    c_out: int
    pool_kernel: tuple[int, int]
    pool_stride: tuple[int, int]
    has_lrn: bool

    @property
    def group_channels(self) -> int:
        return self.c_out // self.groups

    @property
    def groups_in_tile(self) -> int:
        return self.groups if self.has_lrn else 1

    def block_n(self) -> int:
        """A tile's channels per group: every channel of a group with LRN, else up to 128."""
        full = triton.next_power_of_2(self.group_channels)
        return full if self.has_lrn else min(full, 128)

    def region(self, tiles: Tiles) -> tuple[int, int]:
        return ((tiles.tile_ph - 1) * self.pool_stride[0] + self.pool_kernel[0],
                (tiles.tile_pw - 1) * self.pool_stride[1] + self.pool_kernel[1])

    def block_m(self, tiles: Tiles) -> int:
        height, width = self.region(tiles)
        return max(16, triton.next_power_of_2(height * width))

    def accumulators(self, tiles: Tiles) -> int:
        """fp32 accumulators of one program: computed rows x the tile's channels."""
        return self.block_m(tiles) * self.groups_in_tile * self.block_n()

    def fill(self, tiles: Tiles) -> float:
        """Pooled outputs per computed conv row (halo recompute and row padding counted)."""
        return tiles.tile_ph * tiles.tile_pw / self.block_m(tiles)


def fusable(geometry: Geometry) -> str | None:
    """Why the kernel cannot compute this block, or None when it can."""
    if geometry.has_lrn and geometry.groups > 2:
        return f"LRN across {geometry.groups} groups (the kernel joins at most 2 in one tile)"
    if geometry.has_lrn and geometry.groups_in_tile * geometry.block_n() > MAX_LRN_CHANNELS:
        return (f"LRN across {geometry.c_out} channels (one tile holds at most "
                f"{MAX_LRN_CHANNELS})")
    if not tile_candidates(geometry):
        return "no tile fits the pooling window in registers"
    return None


def tile_candidates(geometry: Geometry) -> list[Tiles]:
    """The tile shapes that fit this block: those whose accumulator stays within
    _SPILL_FREE_ELEMENTS first, then the larger ones; each group best-filled first (pooled
    outputs per computed conv row, the halo recompute and the power-of-two padding both
    counted)."""
    fitting = []
    for shape in _TILE_SHAPES:
        tiles = Tiles(*shape)
        if geometry.pool_kernel == (1, 1) and geometry.pool_stride == (1, 1):
            tiles = Tiles(*_pointwise_tile(shape))
        if geometry.accumulators(tiles) <= _MAX_TILE_ELEMENTS and tiles not in fitting:
            fitting.append(tiles)
    return sorted(fitting, key=lambda t: (geometry.accumulators(t) > _SPILL_FREE_ELEMENTS,
                                          -geometry.fill(t)))


def _timed_row_counts(geometry: Geometry, candidates: list[Tiles]) -> set[int]:
    """The computed-row counts whose best-ranked shape the GPU times: the first candidate's,
    and one more: a large tile that may spill if it recomputes less of the halo than the first
    (conv2 at full width: 5 x 5 against 3 x 3), else the next candidate with a different row
    count (conv1: 3 x 3 after 5 x 5; its twin 4 x 6 also computes 128 rows)."""
    first = candidates[0]
    rows = geometry.block_m(first)
    large = [t for t in candidates if geometry.accumulators(t) > _SPILL_FREE_ELEMENTS
             and geometry.block_m(t) != rows and geometry.fill(t) > geometry.fill(first)]
    others = [t for t in candidates if geometry.block_m(t) != rows]
    return {rows, *(geometry.block_m(t) for t in (large or others)[:1])}


def _pointwise_tile(shape: tuple[int, int]) -> tuple[int, int]:
    # Without a pool a tile is its own region: a power-of-two number of pixels wastes no rows.
    pixels = triton.next_power_of_2(shape[0] * shape[1])
    return (pixels // 8, 8) if pixels >= 16 else (1, pixels)


# chosen tiles per shape key (see _choose); read it to see what the GPU picked
_CHOSEN: dict[tuple, Tiles] = {}


def chosen_tiles() -> dict[tuple, Tiles]:
    """The tiles picked so far, keyed by (input [C, H, W], weight shape, dtype, stride, padding,
    groups, LRN, pool, order, device): a copy."""
    return dict(_CHOSEN)


# ------------------------------------------------------------------ the op


def _output_shape(x, weight, stride, padding, pool_kernel, pool_stride, pool_padding,
                  ceil_mode):
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel with padding {tuple(padding)} does not fit a "
                         f"{h}x{w} input")
    top, left, bottom, right = pool_padding
    ph = pooled_length(oh, pool_kernel[0], pool_stride[0], top, bottom, ceil_mode)
    pw = pooled_length(ow, pool_kernel[1], pool_stride[1], left, right, ceil_mode)
    return n, c_out, oh, ow, ph, pw


def _check_pool(pool_kernel, pool_stride, pool_padding) -> None:
    if len(pool_kernel) != 2 or len(pool_stride) != 2 or len(pool_padding) != 4:
        raise ValueError(f"kernel_size and pool_stride must be [h, w] and pool_padding [top, "
                         f"left, bottom, right], got {pool_kernel}, {pool_stride}, "
                         f"{pool_padding}")
    if min(pool_kernel) < 1 or min(pool_stride) < 1 or min(pool_padding) < 0:
        raise ValueError(f"pool kernel and stride must be >= 1 and padding >= 0, got "
                         f"{pool_kernel}, {pool_stride}, {pool_padding}")
    if pool_padding[0] > pool_kernel[0] // 2 or pool_padding[1] > pool_kernel[1] // 2:
        raise ValueError(f"pool padding {pool_padding} must be at most half the kernel "
                         f"{pool_kernel} (as F.max_pool2d)")


@torch.library.custom_op("cnnxfer::conv_block_triton", mutates_args=())
def conv_block_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    groups: int,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    kernel_size: list[int],
    pool_stride: list[int],
    pool_padding: list[int],
    ceil_mode: bool,
    pool_first: bool,
) -> torch.Tensor:
    """The whole block in one Triton kernel; means ops.reference.conv_block with ReLU.

    x [N, C, H, W] float32 / bfloat16 / float16, any layout; weight [C_out, C / groups, KH, KW]
    and bias [C_out] (or None) in x's dtype; stride, padding: [h, w] of the convolution. LRN
    (size, alpha, beta, k; size=1, alpha=0, beta=0, k=1 for none) and max-pool (kernel_size,
    pool_stride, pool_padding [top, left, bottom, right] with -inf pads, ceil_mode; a 1 x 1 / 1
    pool for none) follow in the order pool_first gives. Returns [N, C_out, PH, PW] channels_last
    in x's dtype; products accumulate in fp32 (tensor cores for bf16 / fp16; fp32 inputs are
    multiplied as cuDNN's convolutions are: TF32 while torch.backends.cudnn.allow_tf32, PyTorch's
    default, else exactly)."""
    check_conv_args(x, weight, bias, groups)
    _check_pool(kernel_size, pool_stride, pool_padding)
    geometry = block_geometry(weight, stride, padding, groups, size, alpha, beta, k, kernel_size,
                         pool_stride)
    why_not = fusable(geometry)
    if why_not is not None:
        raise ValueError(f"conv_block_triton cannot fuse this block: {why_not}")
    n, c_out, oh, ow, ph, pw = _output_shape(x, weight, stride, padding, kernel_size,
                                             pool_stride, pool_padding, ceil_mode)
    x = x.contiguous(memory_format=torch.channels_last)
    packed = pack_weight(weight, groups)
    y = torch.empty((n, c_out, ph, pw), dtype=x.dtype, device=x.device,
                    memory_format=torch.channels_last)
    if y.numel() == 0:
        return y

    def launch(tiles: Tiles) -> None:
        _launch(x, packed, bias, y, geometry, tiles, (oh, ow, ph, pw), size, alpha, beta, k,
                pool_padding, pool_first)

    # the batch size is left out: the same tiles suit every batch (and compile once)
    key = (tuple(x.shape[1:]), tuple(weight.shape), x.dtype, tuple(stride), tuple(padding), groups,
           (size, alpha, beta, k), (tuple(kernel_size), tuple(pool_stride),
                                     tuple(pool_padding), ceil_mode), pool_first, x.device,
           exact_fp32())
    launch(_choose(key, geometry, launch, x.device))
    return y


def block_geometry(weight, stride, padding, groups, size, alpha, beta, k, kernel_size,
              pool_stride) -> Geometry:
    """The kernel's view of a block from conv_block_triton's arguments (weight: the conv weight
    or any tensor of its shape)."""
    # LRN is the identity for beta = 0, or for alpha = 0 with k = 1: then there is no
    # cross-channel term and the channels may be split across programs.
    has_lrn = not (beta == 0.0 or (alpha == 0.0 and k == 1.0)) and size > 0
    return Geometry(kernel=tuple(weight.shape[2:]), stride=tuple(stride),
                    padding=tuple(padding), groups=groups, c_out=weight.shape[0],
                    pool_kernel=tuple(kernel_size), pool_stride=tuple(pool_stride),
                    has_lrn=has_lrn)


def exact_fp32() -> bool:
    """Whether fp32 products are exact (IEEE) rather than TF32: PyTorch's own rule for cuDNN
    convolutions, torch.backends.cudnn.allow_tf32 (True by default), so that the fused block
    rounds as the framework's convolution does."""
    return not torch.backends.cudnn.allow_tf32


def kernel_constants(geometry: Geometry, tiles: Tiles, dtype: torch.dtype, has_bias: bool,
                     size: int, alpha: float, beta: float, k: float, pool_padding, pool_first: bool
                     ) -> dict:
    """The kernel's constexpr arguments for a block (also what an ahead-of-time compile needs,
    see compile_for)."""
    region_h, region_w = geometry.region(tiles)
    return dict(
        KH=geometry.kernel[0], KW=geometry.kernel[1], HAS_BIAS=has_bias,
        HAS_LRN=geometry.has_lrn, SIZE=size,
        # the LRN constants are compiled in, as kernels/lrn_pool.py does
        ALPHA_OVER_SIZE=alpha / max(size, 1), BETA=beta, K=k,
        PK_H=geometry.pool_kernel[0], PK_W=geometry.pool_kernel[1],
        PS_H=geometry.pool_stride[0], PS_W=geometry.pool_stride[1],
        PT=pool_padding[0], PL=pool_padding[1], POOL_FIRST=pool_first,
        POOL=geometry.pool_kernel != (1, 1) or geometry.pool_stride != (1, 1),
        GROUPS_IN_TILE=geometry.groups_in_tile, IEEE=dtype == torch.float32 and exact_fp32(),
        UPCAST=_INTERPRETED and dtype != torch.float32,
        TILE_PH=tiles.tile_ph, TILE_PW=tiles.tile_pw, REGION_H=region_h, REGION_W=region_w,
        BLOCK_P=max(16, triton.next_power_of_2(tiles.tile_ph * tiles.tile_pw)),
        BLOCK_M=geometry.block_m(tiles), BLOCK_N=geometry.block_n(), BLOCK_K=tiles.block_k)


def compile_for(target, geometry: Geometry, tiles: Tiles, dtype: torch.dtype,
                pool_first: bool = False, lrn=(5, 1e-4, 0.75, 2.0)):
    """Compiles the kernel ahead of time for `target` (triton.backends.compiler.GPUTarget, e.g.
    GPUTarget("cuda", 90, 32) for an H200) without a GPU: a check that it lowers, and its shared
    memory (compiled.metadata.shared, bytes) and code (compiled.asm["ptx"])."""
    from triton.compiler import ASTSource

    pointer = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}[dtype]
    constants = kernel_constants(geometry, tiles, dtype, True, *lrn, (0, 0, 0, 0), pool_first)
    signature = {name: pointer if name.endswith("_ptr") else "i32"
                 for name in _conv_block_kernel.arg_names}
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(_conv_block_kernel, signature, constexprs=constants)
    return triton.compile(source, target=target, options=dict(num_warps=tiles.num_warps,
                                                              num_stages=tiles.num_stages))


def _launch(x, packed, bias, y, geometry: Geometry, tiles: Tiles, sizes, size, alpha, beta, k,
            pool_padding, pool_first) -> None:
    oh, ow, ph, pw = sizes
    n, c, h, w = x.shape
    channel_blocks = (1 if geometry.has_lrn
                      else triton.cdiv(geometry.group_channels, geometry.block_n()))
    tiles_w = triton.cdiv(pw, tiles.tile_pw)
    programs_c = 1 if geometry.has_lrn else geometry.groups * channel_blocks
    grid = (n, triton.cdiv(ph, tiles.tile_ph) * tiles_w, programs_c)
    _conv_block_kernel[grid](
        x, packed, bias if bias is not None else x, y,
        h, w, c, oh, ow, ph, pw, geometry.c_out, c // geometry.groups, geometry.group_channels,
        tiles_w, channel_blocks, *geometry.stride, *geometry.padding,
        **kernel_constants(geometry, tiles, x.dtype, bias is not None, size, alpha, beta, k,
                           pool_padding, pool_first),
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )


def _choose(key, geometry: Geometry, launch, device: torch.device) -> Tiles:
    """The tiles for this shape, chosen once per key and remembered.

    On a GPU: the best-ranked shape of each of two row counts (_timed_row_counts) is timed,
    with _variants each (a tile whose gathers need more shared memory than the SM has fails to
    compile and is passed over for the next of its row count). Without timing (CNNXFER_TUNE=0,
    or while a CUDA graph is captured: warm up first) the first candidate that compiles; in the
    interpreter the first."""
    if key in _CHOSEN:
        return _CHOSEN[key]
    candidates = tile_candidates(geometry)
    if device.type != "cuda" or _INTERPRETED:
        return candidates[0]
    if os.environ.get("CNNXFER_TUNE", "1") == "0" or torch.cuda.is_current_stream_capturing():
        return _first_compiling(key, geometry, candidates, launch)
    wanted = _timed_row_counts(geometry, candidates)
    timings = {}
    for shape in candidates:
        if not wanted:
            break
        if geometry.block_m(shape) not in wanted:
            continue
        for block_k, warps, stages in _variants(geometry, shape):
            tiles = dataclasses.replace(shape, block_k=block_k, num_warps=warps,
                                        num_stages=stages)
            if not _compiles(launch, tiles):
                continue
            wanted.discard(geometry.block_m(shape))
            timings[tiles] = triton.testing.do_bench(lambda t=tiles: launch(t), warmup=2,
                                                     rep=10)
    if not timings:  # none of those compiled: the first smaller tile that does
        return _first_compiling(key, geometry, candidates, launch)
    best = min(timings, key=timings.get)
    _CHOSEN[key] = best
    log.info("conv_block_triton %s: %s (%.3f ms; %d configurations timed)", key[:2], best,
             timings[best], len(timings))
    return best


def _first_compiling(key, geometry: Geometry, candidates: list[Tiles], launch) -> Tiles:
    """The first candidate, with its first variant, that compiles (remembered for key)."""
    for shape in candidates:
        block_k, warps, stages = _variants(geometry, shape)[0]
        tiles = dataclasses.replace(shape, block_k=block_k, num_warps=warps, num_stages=stages)
        if _compiles(launch, tiles):
            _CHOSEN[key] = tiles
            return tiles
    raise RuntimeError(f"conv_block_triton: no tile configuration compiled for {key}")


def _compiles(launch, tiles: Tiles) -> bool:
    """Whether one launch with these tiles compiles and runs (it computes the output once)."""
    try:
        launch(tiles)
        return True
    except Exception as error:  # out of shared memory or registers, a compiler limit
        log.debug("conv_block_triton: %s does not compile here: %s", tiles, error)
        return False


@conv_block_triton.register_fake
def _(x, weight, bias, stride, padding, groups, size, alpha, beta, k, kernel_size, pool_stride,
      pool_padding, ceil_mode, pool_first):
    n, c_out, _, _, ph, pw = _output_shape(x, weight, stride, padding, kernel_size,
                                           pool_stride, pool_padding, ceil_mode)
    return torch.empty((n, c_out, ph, pw), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


# ------------------------------------------------------------------ backward
# Through plain PyTorch: the convolution is recomputed, the epilogue differentiated by
# relu_lrn_maxpool_backward and the convolution by torch.nn.grad. bf16 / fp16 in fp32.


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs[:3]
    ctx.save_for_backward(x, weight, bias)
    ctx.arguments = inputs[3:]


def _backward(ctx, grad_out):
    x, weight, bias = ctx.saved_tensors
    (stride, padding, groups, size, alpha, beta, k, kernel_size, pool_stride, pool_padding,
     ceil_mode, pool_first) = ctx.arguments
    compute = torch.float32
    xc, wc = x.to(compute), weight.to(compute)
    conv = F.conv2d(xc, wc, None if bias is None else bias.to(compute), stride, padding, 1,
                    groups)
    grad_conv = relu_lrn_maxpool_backward(grad_out.to(compute), conv, size, alpha, beta, k,
                                          kernel_size, pool_stride, pool_padding, ceil_mode,
                                          pool_first, True)
    grads = [None, None, None]
    if ctx.needs_input_grad[0]:
        grads[0] = torch.nn.grad.conv2d_input(x.shape, wc, grad_conv, stride, padding, 1,
                                              groups).to(x.dtype)
    if ctx.needs_input_grad[1]:
        grads[1] = torch.nn.grad.conv2d_weight(xc, weight.shape, grad_conv, stride, padding, 1,
                                               groups).to(weight.dtype)
    if bias is not None and ctx.needs_input_grad[2]:
        grads[2] = grad_conv.sum((0, 2, 3)).to(bias.dtype)
    return (*grads,) + (None,) * 12


conv_block_triton.register_autograd(_backward, setup_context=_setup_context)
