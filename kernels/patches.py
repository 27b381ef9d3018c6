"""Triton kernel of extract_patches, registered as torch.ops.cnnxfer.extract_patches_triton.

One program computes a BLOCK_C x BLOCK_H x BLOCK_W tile (channels x rows x columns) of one box's
patch. Taps and weights are those of csrc/resize_taps.h (F.interpolate
bilinear, align_corners=False, with or without antialias), computed on the fly per output row and
column rather than read from a table, so the kernel needs nothing but the images and the boxes.
Each output element reads its taps straight from the image (any dtype, any strides): horizontal
taps are summed first, then combined over the vertical taps, as the CPU kernel does. Neighbouring
outputs share input pixels through the cache instead of a staged horizontal pass, which keeps one
simple pass per tile. The antialias tap loops are bounded per tile on the device (the tile's own
largest tap count), so the host never reads the boxes: no device sync, and no recompile per box
size. Sums run in float32 (float64 for float64 images). Tested on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnxfer.ops.checks import box_table_layout, extract_patches_args


@triton.jit
def _axis_taps(o, in_len, SIZE: tl.constexpr, ANTIALIAS: tl.constexpr):
    """(lo, hi, num, den) of output coordinates o along a crop axis of length in_len: the taps
    are lo..hi-1 (crop coordinates); tap lo + t is at distance (num + 2 * SIZE * t) / den from
    the filter centre (antialias), or num / den is the frac of the first tap (bilinear).

    resize_taps.h's formulas with every quantity scaled by 2 * SIZE, so that they are integers:
    the tap range is exact (and, where float64 rounding in the reference could move an end, the
    tap that comes or goes has weight 0), and each weight is rounded about once, in WT, instead
    of inheriting the rounding of scale * (i + 0.5) and its cancellation in j + 0.5 - center.
    For example, on 0..255 data, a 490-pixel crop resized to 48 without antialias: F.interpolate
    in float32 is 6e-3 off the float64 result, this kernel 3e-5; boxes of exactly SIZE pixels
    come out exact."""
    mid = in_len * (2 * o + 1)  # 2 * SIZE * (scale * (o + 0.5))
    if ANTIALIAS:
        den = 2 * tl.maximum(in_len, SIZE)  # 2 * SIZE * support
        # int(center -/+ support + 0.5) clamped to [0, in]: truncation and floor agree there
        lo = tl.maximum((mid - den + SIZE) // (2 * SIZE), 0)
        hi = tl.minimum((mid + den + SIZE) // (2 * SIZE), in_len)
        # (lo + 0.5 - center) / support, scaled by den
        num = (2 * lo + 1) * SIZE - mid
    else:
        src = tl.maximum(mid - SIZE, 0)  # 2 * SIZE * max(scale * (o + 0.5) - 0.5, 0)
        lo = tl.minimum(src // (2 * SIZE), in_len - 1)
        # the last sample is one tap of weight 1, not two taps of one sample
        hi = tl.minimum(lo + 2, in_len)
        num = src - lo * (2 * SIZE)
        den = tl.full(num.shape, 2 * SIZE, num.dtype)
    return lo, hi, num, den


@triton.jit
def _triangle(t, num, den, SIZE: tl.constexpr, WT: tl.constexpr):
    """Unnormalized antialias weight of tap lo + t."""
    x = tl.abs(num + t * (2 * SIZE)).to(WT) / den.to(WT)
    return tl.maximum(1.0 - x, 0.0)


@triton.jit
def _tap_weight(t, lo, hi, num, den, total, SIZE: tl.constexpr, ANTIALIAS: tl.constexpr,
                WT: tl.constexpr):
    """Weight of tap lo + t (0 past the last tap)."""
    if ANTIALIAS:
        w = _triangle(t, num, den, SIZE, WT)
        # each weight divided by the sum, as resize_taps does (not the sum divided at the end)
        w = tl.where(total != 0.0, w / tl.where(total != 0.0, total, 1.0), w)
    else:
        frac = tl.minimum(num.to(WT) / den.to(WT), 1.0)
        one_tap = (hi - lo) == 1
        if t == 0:
            w = tl.where(one_tap, 1.0, 1.0 - frac)
        else:
            w = tl.where(one_tap, 0.0, frac)
    return tl.where(lo + t < hi, w, 0.0)


@triton.jit
def _triangle_total(lo, hi, num, den, n_taps, SIZE: tl.constexpr, WT: tl.constexpr):
    total = tl.zeros(num.shape, WT)
    for t in range(n_taps):
        total += tl.where(lo + t < hi, _triangle(t, num, den, SIZE, WT), 0.0)
    return total


@triton.jit
def _tap(row, row_ok, tx, lo_x, hi_x, num_x, den_x, total_x, is_w, SIZE: tl.constexpr,
         ANTIALIAS: tl.constexpr, ACC: tl.constexpr, WT: tl.constexpr):
    wx = _tap_weight(tx, lo_x, hi_x, num_x, den_x, total_x, SIZE, ANTIALIAS, WT).to(ACC)
    v = tl.load(row + (lo_x + tx) * is_w, mask=row_ok & (lo_x + tx < hi_x), other=0.0)
    return wx * v.to(ACC)


@triton.jit
def _extract_patches_kernel(
    img_ptr, box_ptr, out_ptr, scale_ptr, shift_ptr,
    C,
    is_n, is_c, is_h, is_w,
    bs_k, bs_f,
    os_k, os_c, os_h, os_w,
    SIZE: tl.constexpr, ANTIALIAS: tl.constexpr, REVERSE: tl.constexpr,
    NORMALIZE: tl.constexpr, ACC: tl.constexpr, WT: tl.constexpr,
    C_TILES: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64)
    box = box_ptr + k * bs_k
    n = tl.load(box)
    x0 = tl.load(box + bs_f)
    y0 = tl.load(box + 2 * bs_f)
    in_w = tl.load(box + 3 * bs_f) - x0
    in_h = tl.load(box + 4 * bs_f) - y0

    row_tile = tl.program_id(1) // C_TILES
    c_tile = tl.program_id(1) % C_TILES
    cs = (c_tile * BLOCK_C + tl.arange(0, BLOCK_C))[:, None, None].to(tl.int64)
    ys = (row_tile * BLOCK_H + tl.arange(0, BLOCK_H))[None, :, None].to(tl.int64)
    xs = (tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W))[None, None, :].to(tl.int64)
    c_ok = cs < C
    y_ok = ys < SIZE
    x_ok = xs < SIZE

    lo_y, hi_y, num_y, den_y = _axis_taps(ys, in_h, SIZE, ANTIALIAS)
    lo_x, hi_x, num_x, den_x = _axis_taps(xs, in_w, SIZE, ANTIALIAS)
    # Coordinates past the patch get no taps, so they neither load nor lengthen the loops.
    hi_y = tl.where(y_ok, hi_y, lo_y)
    hi_x = tl.where(x_ok, hi_x, lo_x)
    if ANTIALIAS:
        # this tile's largest tap count: at most max_resize_taps(in, SIZE, True) of resize_taps.h
        n_ty = tl.max(hi_y - lo_y).to(tl.int32)
        n_tx = tl.max(hi_x - lo_x).to(tl.int32)
        total_y = _triangle_total(lo_y, hi_y, num_y, den_y, n_ty, SIZE, WT)
        total_x = _triangle_total(lo_x, hi_x, num_x, den_x, n_tx, SIZE, WT)

    c_in = cs
    if REVERSE:
        c_in = C - 1 - cs
    base = img_ptr + n * is_n + y0 * is_h + x0 * is_w + c_in * is_c
    acc = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), ACC)
    if ANTIALIAS:
        for ty in range(n_ty):
            wy = _tap_weight(ty, lo_y, hi_y, num_y, den_y, total_y, SIZE, ANTIALIAS, WT).to(ACC)
            row_ok = c_ok & (lo_y + ty < hi_y)
            row = base + (lo_y + ty) * is_h
            across = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), ACC)
            for tx in range(n_tx):
                across += _tap(row, row_ok, tx, lo_x, hi_x, num_x, den_x, total_x, is_w, SIZE,
                               ANTIALIAS, ACC, WT)
            acc += wy * across
    else:
        # two taps per axis, unrolled (the second has weight 0 on a crop's last sample)
        for ty in tl.static_range(2):
            wy = _tap_weight(ty, lo_y, hi_y, num_y, den_y, num_y, SIZE, ANTIALIAS, WT).to(ACC)
            row_ok = c_ok & (lo_y + ty < hi_y)
            row = base + (lo_y + ty) * is_h
            across = tl.zeros((BLOCK_C, BLOCK_H, BLOCK_W), ACC)
            for tx in tl.static_range(2):
                across += _tap(row, row_ok, tx, lo_x, hi_x, num_x, den_x, num_x, is_w, SIZE,
                               ANTIALIAS, ACC, WT)
            acc += wy * across

    if NORMALIZE:
        s = tl.load(scale_ptr + cs, mask=c_ok, other=1.0)
        b = tl.load(shift_ptr + cs, mask=c_ok, other=0.0)
        acc = acc * s + b
    out = out_ptr + k * os_k + cs * os_c + ys * os_h + xs * os_w
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=c_ok & y_ok & x_ok)


@triton_op("cnnxfer::extract_patches_triton", mutates_args=())
def extract_patches_triton(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    mean: list[float] | None,
    std: list[float] | None,
    out_dtype: torch.dtype | None,
    channels_last: bool,
    antialias: bool,
    reverse_channels: bool,
) -> torch.Tensor:
    """Same schema, meaning and argument checks as torch.ops.cnnxfer.extract_patches
    (cnnxfer.ops.reference.extract_patches). Boxes are trusted to lie inside their images:
    checking them here would read them back to the host (the public face checks them)."""
    images, size, mean, std, out_dtype = extract_patches_args(images, size, mean, std, out_dtype)
    box_table_layout(boxes)
    launch = PreparedPatches(images, boxes.to(images.device), size, mean, std, out_dtype,
                             channels_last, antialias, reverse_channels, wrap=wrap_triton)
    out = launch.new_output()
    if out.numel():
        launch(images, out)
    return out


class PreparedPatches:
    """extract_patches_triton with every host-side step done up front: calling it only enqueues
    the kernel, so it can be captured in a CUDA graph (nothing copies to or from the host, nothing
    synchronizes). The images passed to each call must have the shape, dtype, strides and device
    of `images_like`; `boxes` (int64 [K, 5], already on that device) stay fixed.

        launch = PreparedPatches(image[None], boxes, 224, mean, std, torch.bfloat16, True)
        out = launch.new_output()
        launch(image[None], out)   # out[k] = patch of box k
    """

    def __init__(self, images_like: torch.Tensor, boxes: torch.Tensor, size: int,
                 mean: list[float] | None, std: list[float] | None,
                 out_dtype: torch.dtype | None, channels_last: bool, antialias: bool = True,
                 reverse_channels: bool = False, wrap=None):
        images_like, size, mean, std, out_dtype = extract_patches_args(images_like, size, mean,
                                                                       std, out_dtype)
        box_table_layout(boxes)
        if boxes.device != images_like.device:
            raise ValueError(f"boxes must be on the images' device {images_like.device}, got "
                             f"{boxes.device}")
        self.boxes, self.size = boxes, size
        self.out_dtype = out_dtype or torch.float32
        self.channels_last = channels_last
        self.layout = (tuple(images_like.shape), images_like.dtype, images_like.stride(),
                       images_like.device)
        channels = images_like.shape[1]
        float64 = images_like.dtype == torch.float64
        acc_dtype = torch.float64 if float64 else torch.float32
        self.normalize = mean is not None or std is not None
        # value * scale + shift in the accumulation dtype, from float64 constants (as the C++ op)
        scale = [1.0 / s for s in std] if std is not None else [1.0] * channels
        shift = [-m * s for m, s in zip(mean, scale)] if mean is not None else [0.0] * channels
        self.scale = torch.tensor(scale, dtype=acc_dtype, device=images_like.device)
        self.shift = torch.tensor(shift, dtype=acc_dtype, device=images_like.device)
        # ~1024 outputs per program: 2048 at 4 warps took ~170 registers a thread (ptxas, sm_90)
        block_c = min(triton.next_power_of_2(channels), 16)
        c_tiles = triton.cdiv(channels, block_c)
        block_w = min(triton.next_power_of_2(size), 32, max(1, 1024 // block_c))
        block_h = min(triton.next_power_of_2(size), max(1, 1024 // (block_c * block_w)))
        self.grid = (boxes.shape[0], triton.cdiv(size, block_h) * c_tiles,
                     triton.cdiv(size, block_w))
        self.constants = dict(
            SIZE=size, ANTIALIAS=antialias, REVERSE=reverse_channels, NORMALIZE=self.normalize,
            ACC=tl.float64 if float64 else tl.float32, WT=tl.float64 if float64 else tl.float32,
            C_TILES=c_tiles, BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w)
        self.channels = channels
        self.kernel = wrap(_extract_patches_kernel) if wrap else _extract_patches_kernel

    def new_output(self) -> torch.Tensor:
        """An empty [K, C, size, size] output in the prepared dtype and layout."""
        return torch.empty((self.boxes.shape[0], self.channels, self.size, self.size),
                           dtype=self.out_dtype, device=self.layout[3],
                           memory_format=torch.channels_last if self.channels_last
                           else torch.contiguous_format)

    def __call__(self, images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Enqueues the patches of `images` (laid out as prepared) into `out` (new_output's
        shape, dtype and layout); returns out."""
        layout = (tuple(images.shape), images.dtype, images.stride(), images.device)
        if layout != self.layout:
            raise ValueError(f"images must be laid out as prepared {self.layout}, got {layout}")
        self.kernel[self.grid](
            images, self.boxes, out, self.scale, self.shift, self.channels,
            *images.stride(), *self.boxes.stride(), *out.stride(), **self.constants)
        return out
