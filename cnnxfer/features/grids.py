"""Patch grids: which square boxes of an image go through the network.

Oquab et al. (CVPR 2014, section 3) cover every image with about 500 square patches at several
scales. A patch at scale λ has side ``min(w, h) / λ`` with λ in {1, 1.3, 1.6, 2, 2.4, 2.8, 3.2, 3.6,
4}: the largest patch is the whole short side, the smallest a quarter of it. At each scale the
patches form a regular grid over the whole image whose neighbours overlap by at least 50%, so every
object is seen whole, at some scale, by a patch roughly its size. Each patch is later resized to
224x224.

The paper gives the scales, the 50% minimum overlap and "about 500" patches, but not the exact
step. :func:`paper_grid` makes the step explicit through ``overlap`` (the least overlap between
neighbours, as a fraction of the side) and chooses its default so that a typical Pascal VOC image
(500x375) gets about 500 patches. :func:`aligned_grid` is the same grid with its steps made
whole multiples of a network's cell (its total stride, in the resized patch), so that the
shared-convolution mode cuts every window exactly. :func:`dense_grid` is a plain single-scale
grid, and :func:`as_boxes` checks boxes that a user supplies.

Every function returns a Tensor[K, 4] of (x0, y0, x1, y1) in integer pixel coordinates: x along the
width, y along the height, (0, 0) the top-left pixel, x1 and y1 exclusive (the box covers columns
x0..x1-1 and rows y0..y1-1), so ``image[..., y0:y1, x0:x1]`` is the patch.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch

from ..ops.arguments import integer, real
from ..ops.boxes import check_boxes

__all__ = ["PAPER_SCALES", "DEFAULT_OVERLAP", "GRIDS", "paper_grid", "aligned_grid", "dense_grid",
           "as_boxes"]

PAPER_SCALES: tuple[float, ...] = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)

# 0.65 gives 496 patches for a 500x375 image (the common Pascal VOC size), 497 for 640x480: the
# paper's "about 500". 0.5 (the paper's bare minimum) gives only 275, 0.7 already 652.
DEFAULT_OVERLAP: float = 0.65

# The grids a feature setting can name (features.shared.network_grid builds them for a network).
GRIDS = ("paper", "aligned")

# Output dtypes that hold every pixel coordinate exactly (float16/bfloat16 do not beyond 2048/256).
_DTYPES = (torch.int64, torch.int32, torch.float32, torch.float64)

# Slack for float error in products such as side * (1 - 0.6), which may land just below an integer.
_EPS = 1e-9


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; the usual rule reads more predictably in a spec.
    return int(math.floor(x + 0.5))


def _check_size(name: str, value) -> int:
    return integer(name, value, what="a positive integer number of pixels", minimum=1)


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(
            f"dtype must be one of {', '.join(str(d) for d in _DTYPES)} (types that hold pixel "
            f"coordinates exactly), got {dtype!r}")
    return dtype


def _to_tensor(rows: list[tuple[int, int, int, int]], dtype: torch.dtype) -> torch.Tensor:
    out = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)
    if dtype is torch.int64:
        return out
    conv = out.to(dtype)
    # float32 is exact only up to 2**24 pixels: refuse rather than return shifted boxes.
    if not torch.equal(conv.to(torch.int64), out):
        raise ValueError(f"dtype={dtype} cannot hold these pixel coordinates exactly "
                         f"(largest {int(out.max())}); use torch.int64")
    return conv


def _positions(length: int, side: int, max_step: int) -> list[int]:
    """Start offsets of ``side``-long windows covering [0, length), first at 0, last at
    length - side, evenly spaced with consecutive starts at most ``max_step`` apart (all
    integers)."""
    span = length - side
    n = max(1, -(-span // max_step) + 1)  # ceil(span / max_step) + 1 in exact integer arithmetic
    if n == 1:
        return [0]
    # round(i * span / (n - 1)), half up, in integers. The exact spacing span/(n-1) is <= max_step
    # and max_step is an integer, so the rounded gaps (floor or ceil of the exact one) stay
    # <= max_step.
    return [(2 * i * span + (n - 1)) // (2 * (n - 1)) for i in range(n)]


def paper_grid(width: int, height: int, *, scales: Sequence[float] = PAPER_SCALES,
               overlap: float = DEFAULT_OVERLAP, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The multi-scale grid of square patches of Oquab et al. (2014).

    Args:
        width, height: image size in pixels (positive ints).
        scales: the λ's, each >= 1.0 (a patch cannot exceed the short side). The patch side at
            scale λ is ``round(min(width, height) / λ)`` pixels (halves rounded up), at least 1.
        overlap: the least overlap between horizontally or vertically adjacent patches of one
            scale, as a fraction of their side, in [0.5, 1). The default 0.65 gives 496 patches
            for a 500x375 image (497 for 640x480 or 480x640), matching the paper's "about 500"
            for Pascal VOC images; 0.5, the paper's minimum, would give only 275.
        dtype: torch.int64 (default), int32, float32 or float64; the values are the same integers.

    Returns:
        Tensor[K, 4] of (x0, y0, x1, y1) pixel coordinates on the CPU, x1/y1 exclusive, with
        x1 - x0 == y1 - y0 == the scale's side. Along each axis of length L a scale has
        ``n = max(1, ceil((L - side) / max_step) + 1)`` positions evenly spaced from 0 to L - side
        (rounded to integers), where ``max_step = floor(side * (1 - overlap))`` (at least 1): the
        first patch touches the left/top border, the last the right/bottom one, and neighbours
        overlap by at least ``overlap`` of the side. (The step is floored to whole pixels so that
        rounding the positions cannot push the overlap below ``overlap``. Sides too small for any
        whole-pixel step to keep that overlap, i.e. side * (1 - overlap) < 1, step by 1 pixel.)

        Order: scales as given, then rows top to bottom, then columns left to right. A box that
        repeats an earlier one (possible on small images, where scales round to the same side) is
        kept only at its first occurrence.
    """
    w = _check_size("width", width)
    h = _check_size("height", height)
    lams = _check_scales(scales)
    o = _check_overlap(overlap)
    dtype = _check_dtype(dtype)

    def starts(length: int, side: int) -> list[int]:
        return _positions(length, side, max(1, int(math.floor(side * (1.0 - o) + _EPS))))

    return _squares(w, h, lams, starts, dtype)


def _squares(w: int, h: int, lams: list[float], starts, dtype: torch.dtype) -> torch.Tensor:
    """The boxes of a multi-scale grid of squares: per scale λ the side round(min(w, h) / λ)
    (at least 1 pixel), at starts(length, side) along each axis; scales in order, then rows,
    then columns, a box repeating an earlier one kept only at its first occurrence."""
    short = min(w, h)
    seen = set()
    rows: list[tuple[int, int, int, int]] = []
    for lam in lams:
        side = min(short, max(1, _round_half_up(short / lam)))
        xs = starts(w, side)
        for y in starts(h, side):
            for x in xs:
                box = (x, y, x + side, y + side)
                if box not in seen:
                    seen.add(box)
                    rows.append(box)
    return _to_tensor(rows, dtype)


def _check_overlap(overlap) -> float:
    o = real("overlap", overlap)
    if not 0.5 <= o < 1.0:
        raise ValueError(f"overlap must be in [0.5, 1) (fraction of the patch side shared by "
                         f"neighbours; the paper requires at least 0.5), got {overlap!r}")
    return o


def aligned_grid(width: int, height: int, *, total_stride: int, input_size: int,
                 scales: Sequence[float] = PAPER_SCALES, overlap: float = DEFAULT_OVERLAP,
                 dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The paper's multi-scale grid with steps that are whole numbers of a network's cells.

    A patch of side s is resized by S / s (S = input_size) before the network, whose last conv
    map has one cell per T = total_stride resized pixels: a cell is c = s * T / S pixels of the
    image. Here the patches of a scale start at round(i * k * c), i = 0, 1, ..., with k the
    most whole cells per step that keep ``overlap`` (k = floor((1 - overlap) * S / T), at least
    1), so each start is within half a pixel of a whole cell of the scale's shared map and its
    window is cut exactly (features.shared). Where the steps do not land on the far border, one
    more patch flush with it keeps the image covered (its window is pooled, as in paper_grid).

    Args:
        width, height: image size in pixels (positive ints).
        total_stride: T, input pixels per cell of the network's last conv map
            (features.shared.total_stride(net): 32 for AlexNet, VGG and ZFNet).
        input_size: S, the network's input side (227 for AlexNet, 224 for VGG).
        scales, overlap, dtype: as paper_grid (sides are computed the same way). With
            AlexNet's T / S = 32 / 227 and overlap 0.65 the step is 2 cells (72% overlap).

    Returns:
        Tensor[K, 4] of (x0, y0, x1, y1), ordered and deduplicated as paper_grid.
    """
    w = _check_size("width", width)
    h = _check_size("height", height)
    stride = _check_size("total_stride", total_stride)
    size = _check_size("input_size", input_size)
    lams = _check_scales(scales)
    o = _check_overlap(overlap)
    dtype = _check_dtype(dtype)
    cells_per_step = max(1, int(math.floor((1.0 - o) * size / stride + _EPS)))

    def starts(length: int, side: int) -> list[int]:
        step = cells_per_step * side * stride / size
        count = int(math.floor((length - side) / step + _EPS)) + 1
        positions = sorted({min(length - side, _round_half_up(i * step)) for i in range(count)})
        if positions[-1] != length - side:
            positions.append(length - side)  # flush with the far border
        return positions

    return _squares(w, h, lams, starts, dtype)


def _check_scales(scales) -> list[float]:
    if isinstance(scales, (numbers.Number, str, bytes)) or not isinstance(scales, Iterable):
        raise TypeError(f"scales must be a non-empty sequence of numbers >= 1.0, got {scales!r}")
    lams = list(scales)
    if not lams:
        raise ValueError("scales must be a non-empty sequence of numbers >= 1.0, got an empty one")
    out = []
    for i, lam in enumerate(lams):
        x = real(f"scales[{i}]", lam)
        if x < 1.0:
            raise ValueError(f"scales[{i}] must be >= 1.0 (the patch side is min(width, height) / "
                             f"scale and cannot exceed the short side), got {lam!r}")
        out.append(x)
    return out


def dense_grid(width: int, height: int, *, side: int, stride: int,
               dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A single-scale grid of ``side`` x ``side`` patches every ``stride`` pixels.

    Along each axis of length L the starts are 0, stride, 2*stride, ... up to L - side, plus
    L - side itself when the stride does not land on it, so the grid always reaches the
    right/bottom border.

    Args:
        width, height: image size in pixels (positive ints).
        side: patch side in pixels, 1 <= side <= min(width, height).
        stride: pixels between consecutive starts, >= 1.
        dtype: torch.int64 (default), int32, float32 or float64.

    Returns:
        Tensor[K, 4] of (x0, y0, x1, y1) pixel coordinates, x1/y1 exclusive, rows top to bottom then
        columns left to right.
    """
    w = _check_size("width", width)
    h = _check_size("height", height)
    s = _check_size("side", side)
    st = _check_size("stride", stride)
    if s > min(w, h):
        raise ValueError(f"side must be at most min(width, height) = {min(w, h)} for a "
                         f"{w}x{h} image, got {side!r}")
    dtype = _check_dtype(dtype)

    def starts(length: int) -> list[int]:
        pos = list(range(0, length - s + 1, st))
        if pos[-1] != length - s:
            pos.append(length - s)  # flush with the far border
        return pos

    xs = starts(w)
    rows = [(x, y, x + s, y + s) for y in starts(h) for x in xs]
    return _to_tensor(rows, dtype)


def as_boxes(boxes, width: int, height: int) -> torch.Tensor:
    """Check user-given boxes against an image of ``width`` x ``height`` pixels.

    Args:
        boxes: Tensor, NumPy array or nested list of shape [K, 4] holding (x0, y0, x1, y1) pixel
            coordinates, x1/y1 exclusive. Floats are accepted when integer-valued. K may be 0.
        width, height: image size in pixels (positive ints).

    Returns:
        int64 Tensor[K, 4] on the CPU (a copy; the input is never aliased).

    Raises:
        ValueError naming the first bad box's index and values when a coordinate is not an
        integer or a box is not 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height;
        ValueError/TypeError for a wrong shape or type. (This is cnnxfer.ops.boxes.check_boxes,
        the checker extract_patches uses too.)
    """
    return check_boxes(boxes, _check_size("width", width), _check_size("height", height))
