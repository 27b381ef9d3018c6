"""Which class each patch of a training image stands for: the labelling rule of Oquab et al.
(CVPR 2014, section 3), and the patches of a person for the action task.

Object classes (:func:`label_patches`). A patch P *qualifies* for a ground-truth box B when

    |P ∩ B| >= 0.2 |P|    (the object fills at least a fifth of the patch)  and
    |P ∩ B| >= 0.6 |B|    (the patch holds at least 60% of the object),

areas in pixels of the integer boxes (x1, y1 exclusive). Both tests are made in exact integer
arithmetic, ``5 |P ∩ B| >= |P|`` and ``5 |P ∩ B| >= 3 |B|``, so a patch exactly on the boundary
qualifies on every machine. Each patch then gets:

- the class c when it qualifies for at least one non-difficult box of class c and for no box of
  any other class (several boxes of class c are fine: two people in one patch is still "person");
- -1 (left out of training) when it qualifies for boxes of two or more different classes (the
  paper leaves out patches that overlap more than one object). Difficult boxes count here: a
  patch holding a car and a difficult bus is ambiguous, and training it as "car" would teach the
  net that a bus is a car;
- -1 when it qualifies only for difficult boxes (VOC marks them as not to be judged: neither a
  positive nor a trustworthy background);
- background otherwise, labelled ``num_classes``. Background patches far outnumber the others,
  so, as in the paper, only a fraction of them is kept: a random subset of
  ``round(background_fraction * n_background)`` of them (halves rounded up, and at least one when
  both the fraction and n_background are positive, so every image contributes some background);
  the others get -1. The subset comes from ``torch.randperm`` on a CPU ``torch.Generator`` seeded
  with ``seed``: the same inputs and seed give the same labels on every machine (randperm's
  CPU algorithm is the same on every platform; a future torch could in principle change it).

Action classes (:func:`patches_in_box`). The paper trains the action classifier on the patches
that fall inside the person's bounding box, enlarged. The factor is not given: ours is
``enlarge=1.5`` (each side of the person box × 1.5 about its centre, which takes in the object
acted on, e.g. the horse being ridden or the instrument played). The enlarged box E is rounded
outwards to whole pixels and clipped to the image; a patch is selected when at least half of it
lies inside E, ``2 |P ∩ E| >= |P|`` in integers. When no patch qualifies (a tiny person next to
large patches), the one patch with the largest IoU with E is selected, so every person yields at
least one training patch.
"""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..ops.arguments import integer
from ..ops.arguments import real as _real
from ..ops.boxes import check_boxes

__all__ = ["label_patches", "patches_in_box", "MIN_PATCH_FRACTION", "MIN_BOX_FRACTION",
           "DEFAULT_ENLARGE"]

# The paper's thresholds, as exact fractions (the comparisons are made in integers).
MIN_PATCH_FRACTION = Fraction(1, 5)   # |P ∩ B| >= 0.2 |P|
MIN_BOX_FRACTION = Fraction(3, 5)     # |P ∩ B| >= 0.6 |B|

# Our choice for the action task (the paper enlarges the person box without saying by how much).
DEFAULT_ENLARGE = 1.5

# Coordinates beyond this could overflow 5 * area in int64 (areas reach 2 * 2**29 squared).
_MAX_COORDINATE = 2**28


def label_patches(patches, boxes, classes, *, num_classes: int, difficult=None,
                  background_fraction: float = 0.1, seed: int = 0) -> torch.Tensor:
    """The training label of each patch of one image (the module docstring gives the rule).

    Args:
        patches: [K, 4] (x0, y0, x1, y1) integer pixel boxes, x1/y1 exclusive: the image's
            patches (e.g. ``paper_grid(w, h)``). Tensor (any device), NumPy array or list;
            floats are accepted when they hold integers. K may be 0.
        boxes: [B, 4] ground-truth object boxes in the same convention. B may be 0 (every
            patch is background).
        classes: [B] integer class index of each box, in 0..num_classes-1.
        num_classes: number of object classes (>= 1); the background label is ``num_classes``.
        difficult: [B] bool (or 0/1) VOC "difficult" flag of each box; None means none is.
        background_fraction: fraction of the background patches kept, in [0, 1]; 1 keeps all,
            0 none.
        seed: seed (0 <= seed < 2**64) of the generator that picks the background kept.

    Returns:
        int64 [K] on the CPU: a class index in 0..num_classes-1, ``num_classes`` for a kept
        background patch, or -1 for a patch left out of training.

    Raises:
        ValueError/TypeError naming the argument: a wrong shape or dtype, a box with x0 >= x1 or
        y0 >= y1 or a fractional coordinate, a class outside 0..num_classes-1, a fraction
        outside [0, 1].

    Every patch is compared with every box at once (a [K, B] intersection matrix).
    """
    table = _box_table("patches", patches)
    objects = _box_table("boxes", boxes)
    count = _positive_int("num_classes", num_classes)
    labels_of_boxes = _index_vector("classes", classes, objects.shape[0], count)
    hard = _flags("difficult", difficult, objects.shape[0])
    fraction = _fraction("background_fraction", background_fraction)
    generator_seed = _seed(seed)

    qualifies = _qualifies(table, objects)                                  # [K, B]
    # How many qualifying boxes each patch has per class: any boxes, and non-difficult ones.
    per_class = torch.zeros(table.shape[0], count, dtype=torch.int64)
    per_class.index_add_(1, labels_of_boxes, qualifies.to(torch.int64))
    easy = torch.zeros_like(per_class)
    easy.index_add_(1, labels_of_boxes, (qualifies & ~hard).to(torch.int64))
    classes_hit = (per_class > 0).sum(dim=1)

    labels = torch.full((table.shape[0],), -1, dtype=torch.int64)
    positive = (classes_hit == 1) & (easy > 0).any(dim=1)
    labels[positive] = (easy[positive] > 0).to(torch.int8).argmax(dim=1)

    background = (classes_hit == 0).nonzero().flatten()
    keep = _kept_count(fraction, background.numel())
    generator = torch.Generator().manual_seed(generator_seed)
    chosen = background[torch.randperm(background.numel(), generator=generator)[:keep]]
    labels[chosen] = count
    return labels


def patches_in_box(patches, box, *, enlarge: float = DEFAULT_ENLARGE, width: int,
                   height: int) -> torch.Tensor:
    """The patches of a person for the action task (the module docstring gives the rule).

    Args:
        patches: [K, 4] (x0, y0, x1, y1) pixel boxes inside the width x height image, x1/y1
            exclusive. Tensor (any device), NumPy array or list. K may be 0.
        box: the person's box (x0, y0, x1, y1), 4 numbers or a [4] / [1, 4] tensor, inside the
            image.
        enlarge: factor (>= 1) applied to each side of ``box`` about its centre; 1 is the box
            itself. The enlarged box is rounded outwards to whole pixels, then clipped to the
            image.
        width, height: the image's size in pixels.

    Returns:
        bool [K] on the CPU: True for the patches with at least half their area inside the
        enlarged box; when there are none (and K > 0), True for the single patch of largest IoU
        with it (ties: the lowest index; with patches that cover the image, as the paper's grid
        does, that patch overlaps the box).
    """
    w = _positive_int("width", width)
    h = _positive_int("height", height)
    try:
        table = check_boxes(patches, w, h)
    except (TypeError, ValueError) as error:  # its messages say "boxes"; here: the patches
        raise type(error)(str(error).replace("boxes", "patches", 1)) from None
    person = _one_box(box, w, h)
    factor = _real("enlarge", enlarge)
    if factor < 1.0:
        raise ValueError(f"enlarge must be >= 1 (the factor applied to each side of the person "
                         f"box; 1 keeps the box as it is), got {enlarge!r}")
    region = torch.tensor(_enlarged(person, Fraction(factor), w, h), dtype=torch.int64)

    inter = _intersections(table, region.reshape(1, 4)).flatten()         # [K]
    area = _areas(table)
    selected = 2 * inter >= area
    if table.shape[0] and not bool(selected.any()):
        region_area = _areas(region.reshape(1, 4))
        # float64 ratios of integers below 2**58: distinct IoUs of pixel boxes stay distinct.
        iou = inter.to(torch.float64) / (area + region_area - inter).to(torch.float64)
        selected[int(iou.argmax())] = True  # argmax returns the first of equal maxima
    return selected


# --- geometry -----------------------------------------------------------------------------------

def _intersections(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int64 [K, B] pixel areas of a[i] ∩ b[j] for int64 boxes a [K, 4] and b [B, 4]."""
    ax0, ay0, ax1, ay1 = (c[:, None] for c in a.unbind(1))
    bx0, by0, bx1, by1 = (c[None, :] for c in b.unbind(1))
    across = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp_(min=0)
    down = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp_(min=0)
    return across * down


def _areas(boxes: torch.Tensor) -> torch.Tensor:
    """int64 [K] pixel areas of int64 boxes [K, 4]."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _qualifies(patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """bool [K, B]: 5|P∩B| >= |P| and 5|P∩B| >= 3|B| (the paper's 0.2 and 0.6, exactly)."""
    inter = _intersections(patches, boxes)
    fifths = 5 * inter
    return (fifths >= _areas(patches)[:, None]) & (fifths >= 3 * _areas(boxes)[None, :])


def _enlarged(box: tuple[int, int, int, int], factor: Fraction, width: int,
              height: int) -> tuple[int, int, int, int]:
    """box scaled by factor about its centre, rounded outwards, clipped to the image (exact)."""
    x0, y0, x1, y1 = box

    def span(lo: int, hi: int, limit: int) -> tuple[int, int]:
        centre, half = Fraction(lo + hi, 2), factor * (hi - lo) / 2
        return max(0, math.floor(centre - half)), min(limit, math.ceil(centre + half))

    (ex0, ex1), (ey0, ey1) = span(x0, x1, width), span(y0, y1, height)
    return ex0, ey0, ex1, ey1


def _kept_count(fraction: float, available: int) -> int:
    """How many of `available` background patches to keep: round half up, at least one when
    both are positive."""
    if fraction == 0.0 or available == 0:
        return 0
    return min(available, max(1, math.floor(fraction * available + 0.5)))


# --- argument checks ----------------------------------------------------------------------------

def _as_tensor(name: str, value, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value).detach().to("cpu")
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor, array or list of {what}, got "
                        f"{type(value).__name__}: {error}") from None


def _integers(name: str, table: torch.Tensor, what: str) -> torch.Tensor:
    """table (real, not bool) as int64, refusing fractional, NaN or infinite values."""
    if table.dtype == torch.bool or table.is_complex():
        raise TypeError(f"{name} must hold {what}, got dtype {table.dtype}")
    if table.is_floating_point():
        table = table.to(torch.float64)
        bad = ~(table.isfinite() & (table == table.round()))
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            where = index[0] if len(index) == 1 else list(index)
            raise ValueError(f"{name}[{where}] = {table[index].item()!r} must be an integer "
                             f"({what})")
    return table.to(torch.int64)


def _box_table(name: str, boxes) -> torch.Tensor:
    """[K, 4] integer boxes with x0 < x1 and y0 < y1, as int64 on the CPU (no image size)."""
    table = _as_tensor(name, boxes, "(x0, y0, x1, y1) rows")
    if table.dim() == 1 and table.numel() == 0:
        table = table.reshape(0, 4)  # [] -> no boxes
    if table.dim() != 2 or table.shape[1] != 4:
        raise ValueError(f"{name} must be [K, 4] (x0, y0, x1, y1), got shape "
                         f"{tuple(table.shape)}")
    if table.dtype == torch.bool or table.is_complex():
        raise TypeError(f"{name} must hold integer pixel coordinates, got dtype {table.dtype}")
    if table.is_floating_point():
        # Checked as float64 before the cast to int64: a huge float must not wrap into range.
        table = table.to(torch.float64)
        bad = ~(table.isfinite() & (table == table.round())).all(dim=1)
        if bool(bad.any()):
            index = int(bad.nonzero()[0])
            raise ValueError(f"{name}[{index}] = {_row(table[index])} must hold integer pixel "
                             f"coordinates")
    too_far = ((table > _MAX_COORDINATE) | (table < -_MAX_COORDINATE)).any(dim=1)
    if bool(too_far.any()):
        index = int(too_far.nonzero()[0])
        raise ValueError(f"{name}[{index}] = {_row(table[index])}: coordinates must lie within "
                         f"±2**28 pixels")
    table = table.to(torch.int64)
    x0, y0, x1, y1 = table.unbind(1)
    empty = (x0 >= x1) | (y0 >= y1)
    if bool(empty.any()):
        index = int(empty.nonzero()[0])
        raise ValueError(f"{name}[{index}] = (x0, y0, x1, y1) = {tuple(table[index].tolist())} "
                         f"must satisfy x0 < x1 and y0 < y1 (x1, y1 exclusive)")
    return table


def _row(row: torch.Tensor) -> tuple:
    return tuple(int(v) if float(v).is_integer() else float(v) for v in row.tolist())


def _one_box(box, width: int, height: int) -> tuple[int, int, int, int]:
    """A single box (x0, y0, x1, y1) inside the image, as Python ints."""
    values = _as_tensor("box", box, "4 pixel coordinates")
    if tuple(values.shape) not in ((4,), (1, 4)):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1) or [1, 4], got shape "
                         f"{tuple(values.shape)}")
    x0, y0, x1, y1 = _integers("box", values.reshape(4), "pixel coordinates").tolist()
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box = (x0, y0, x1, y1) = {(x0, y0, x1, y1)} must satisfy "
                         f"0 <= x0 < x1 <= width={width} and 0 <= y0 < y1 <= height={height}")
    return x0, y0, x1, y1


def _vector(name: str, value, length: int, what: str) -> torch.Tensor:
    vector = _as_tensor(name, value, what)
    if vector.dim() == 0 or vector.dim() > 1 or vector.shape[0] != length:
        raise ValueError(f"{name} must be a 1-D sequence of {length} {what} (one per box), got "
                         f"shape {tuple(vector.shape)}")
    return vector


def _index_vector(name: str, value, length: int, count: int) -> torch.Tensor:
    """[length] integers in 0..count-1 as int64 on the CPU."""
    vector = _integers(name, _vector(name, value, length, "class indices"), "class indices")
    bad = (vector < 0) | (vector >= count)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{index}] = {int(vector[index])} must be a class index in "
                         f"0..{count - 1} (num_classes={count})")
    return vector


def _flags(name: str, value, length: int) -> torch.Tensor:
    """[length] bools (bool, or integers 0/1); None means all False."""
    if value is None:
        return torch.zeros(length, dtype=torch.bool)
    vector = _vector(name, value, length, "flags")
    if vector.dtype == torch.bool:
        return vector
    vector = _integers(name, vector, "flags (bool, or 0/1)")
    bad = (vector != 0) & (vector != 1)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{index}] = {int(vector[index])} must be a flag: bool, or 0/1")
    return vector.to(torch.bool)


def _positive_int(name: str, value) -> int:
    return integer(name, value, what="a positive integer", minimum=1)


def _fraction(name: str, value) -> float:
    number = _real(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (the fraction of background patches kept), "
                         f"got {value!r}")
    return number


def _seed(value) -> int:
    return integer("seed", value, what="an integer in [0, 2**64)", minimum=0,
                   maximum=2**64 - 1)
