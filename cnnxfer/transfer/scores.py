"""From patch scores to image scores, score maps and localization (Oquab et al., CVPR 2014:
the image score of section 3 and the localization experiments).

The adapted network gives each patch P of an image I a probability y(C | P) per class C. The
paper scores the image by

    score(C | I) = (1/M) Σ_P y(C | P)^k,    k = 5, over the image's M patches

(:func:`image_scores`): the power lets a few confident patches outweigh many indifferent ones,
between the mean (k = 1) and the max (k → ∞). Spread back over the pixels, the same patch
scores give a score map per class (:func:`score_maps`): each pixel gets the mean of y(C | P)
over the patches that cover it. The paper checks localization on these maps: for each class
present in an image, does the map's maximum fall inside a box of that class
(:func:`localization_hits`, :func:`localization_accuracy`)?
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

from ..ops.arguments import integer, real
from ..ops.boxes import check_boxes
from .labels import _as_tensor, _index_vector

__all__ = ["PAPER_K", "image_scores", "score_maps", "localization_hits", "localization_accuracy"]

PAPER_K = 5  # the paper's exponent


def image_scores(patch_probs, k: float = PAPER_K, *, counts=None) -> torch.Tensor:
    """score(C | I) = (1/M) Σ_P y(C | P)^k over each image's M patches.

    Args:
        patch_probs: [M, C] probabilities in [0, 1] (a tensor on any device, array or list):
            one row per patch. Without ``counts`` the rows are the patches of one image; with
            it, the patches of several images one after the other.
        k: the exponent, a positive real number (the paper's 5; 1 gives the mean).
        counts: None, or [N] non-negative integers summing to M: how many consecutive rows
            belong to each image.

    Returns:
        float32 [C] (one image) or [N, C] (with ``counts``) on patch_probs' device. The powers
        and sums are computed in float64, so a large k or many patches lose nothing to float32
        rounding before the final cast.

    Raises:
        ValueError when an image has no patches (it cannot be scored; the message names the
        image's index), when patch_probs is not [M, C] of probabilities in [0, 1] (NaN refused),
        when k is not positive, or when counts is negative or does not sum to M.
    """
    probs = _probabilities(patch_probs)
    power = real("k", k)
    if power <= 0:
        raise ValueError(f"k must be a positive number (the exponent of y(C | P); 1 is the "
                         f"mean), got {k!r}")
    if counts is None:
        if probs.shape[0] == 0:
            raise ValueError("patch_probs has no rows: image 0 has no patches and cannot be "
                             "scored")
        return probs.pow(power).mean(dim=0).to(torch.float32)
    sizes = _counts(counts, probs.shape[0])
    image = torch.repeat_interleave(torch.arange(sizes.numel()), sizes).to(probs.device)
    sums = probs.new_zeros(sizes.numel(), probs.shape[1])
    sums.index_add_(0, image, probs.pow(power))
    return (sums / sizes.to(probs.device, torch.float64)[:, None]).to(torch.float32)


def score_maps(boxes, patch_probs, width: int, height: int) -> torch.Tensor:
    """Per class, the mean score of the patches that cover each pixel.

    Args:
        boxes: [K, 4] (x0, y0, x1, y1) patch boxes inside the width x height image, x1/y1
            exclusive (tensor on any device, array or list). K may be 0.
        patch_probs: [K, C] per-patch scores, any finite reals (the paper's y(C | P)).
        width, height: the image's size in pixels.

    Returns:
        float32 [C, height, width] on patch_probs' device: pixel (y, x) of map c holds
        Σ y(c | P) / n over the n patches P that cover it, and 0 where no patch does.

    Every patch is added at once: +y at (y0, x0) and (y1, x1), -y at (y0, x1) and (y1, x0) of a
    [C, H+1, W+1] difference array, then a cumulative sum down and across. The sums are float64:
    in float32 the cumulative sums of many ± scores leave rounding residue of about 1e-7 times
    the largest running sum in every pixel they pass. Memory: two [C, H+1, W+1] float64
    buffers; time O(K·C + C·H·W).
    """
    w = integer("width", width, what="a positive integer", minimum=1)
    h = integer("height", height, what="a positive integer", minimum=1)
    table = check_boxes(boxes, w, h)
    probs = _scores(patch_probs, table.shape[0])
    device = probs.device
    x0, y0, x1, y1 = table.to(device).unbind(1)
    stride = w + 1
    corners = torch.cat([y0 * stride + x0, y0 * stride + x1, y1 * stride + x0, y1 * stride + x1])
    per_class = probs.t()
    signed = torch.cat([per_class, -per_class, -per_class, per_class], dim=1)   # [C, 4K]
    sums = probs.new_zeros(probs.shape[1], (h + 1) * stride)
    sums.index_add_(1, corners, signed)
    sums = sums.view(-1, h + 1, stride).cumsum(1).cumsum(2)[:, :h, :w]

    ones = torch.ones(table.shape[0], dtype=torch.int64, device=device)
    signs = torch.cat([ones, -ones, -ones, ones])
    covering = torch.zeros((h + 1) * stride, dtype=torch.int64, device=device)
    covering.index_add_(0, corners, signs)   # integers: the coverage counts are exact
    covering = covering.view(h + 1, stride).cumsum(0).cumsum(1)[:h, :w]

    maps = torch.where(covering > 0, sums / covering.clamp(min=1), sums.new_zeros(()))
    return maps.to(torch.float32)


def localization_hits(maps, boxes, classes, *, present=None) -> dict[int, bool]:
    """For each class present in an image, whether its map's maximum falls inside one of its
    boxes.

    Args:
        maps: [C, H, W] score maps of one image (as :func:`score_maps` gives), finite.
        boxes: [B, 4] (x0, y0, x1, y1) ground-truth boxes inside the W x H image.
        classes: [B] class index of each box, in 0..C-1.
        present: the class indices to check (each must have a box); None checks every class
            that has a box.

    Returns:
        {class index: hit} for the checked classes, in increasing order. The maximum of a map
        is its first maximal pixel in row-major order (top row first), so a constant map
        points at (0, 0).
    """
    table = _maps(maps)
    count, h, w = table.shape
    objects = check_boxes(boxes, w, h)
    labels = _index_vector("classes", classes, objects.shape[0], count)
    with_box = sorted(set(labels.tolist()))
    if present is None:
        checked = with_box
    else:
        checked = sorted(set(_class_list("present", present, count)))
        missing = [c for c in checked if c not in with_box]
        if missing:
            raise ValueError(f"present names class {missing[0]}, which has no box in boxes "
                             f"(classes with a box: {with_box}); a class can only be checked "
                             f"against its boxes")
    peak = table.reshape(count, -1).argmax(dim=1)   # the first maximum in row-major order
    py, px = peak // w, peak % w
    x0, y0, x1, y1 = objects.unbind(1)
    # box b holds the peak of its own class's map
    inside = (x0 <= px[labels]) & (px[labels] < x1) & (y0 <= py[labels]) & (py[labels] < y1)
    hits = torch.zeros(count, dtype=torch.int64).index_add_(0, labels, inside.to(torch.int64))
    return {c: bool(hits[c] > 0) for c in checked}


def localization_accuracy(results: Iterable[Mapping[int, bool]]) -> dict:
    """Aggregate :func:`localization_hits` over images.

    Args:
        results: one {class index: hit} mapping per image.

    Returns:
        {"per_class": {c: fraction of the images checked for c whose maximum hit a box of c},
         "images": {c: number of images checked for c},
         "overall": hits / checks over every (image, class) pair,
         "mean": the mean of per_class over the classes}, classes in increasing order.

    Raises:
        ValueError when nothing was checked (no image, or only empty mappings), TypeError for a
        result that is not such a mapping.
    """
    if isinstance(results, Mapping):
        raise TypeError("results must be an iterable of {class index: hit} mappings, one per "
                        "image, got a single mapping; wrap it in a list")
    hits: dict[int, int] = {}
    images: dict[int, int] = {}
    for position, result in enumerate(results):
        if not isinstance(result, Mapping):
            raise TypeError(f"results[{position}] must be a {{class index: hit}} mapping, got "
                            f"{type(result).__name__}")
        for key, value in result.items():
            c = _class_key(f"a key of results[{position}]", key)
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"results[{position}][{c}] must be a bool (the hit), got "
                                f"{value!r} of type {type(value).__name__}")
            images[c] = images.get(c, 0) + 1
            hits[c] = hits.get(c, 0) + int(bool(value))
    if not images:
        raise ValueError("results holds no checked class: nothing to aggregate")
    order = sorted(images)
    per_class = {c: hits[c] / images[c] for c in order}
    return {"per_class": per_class, "images": {c: images[c] for c in order},
            "overall": sum(hits.values()) / sum(images.values()),
            "mean": sum(per_class.values()) / len(per_class)}


# --- argument checks ----------------------------------------------------------------------------

def _real_table(name: str, value, what: str) -> torch.Tensor:
    """value as float64 on its own device (tensors stay where they are), refusing bool/complex."""
    if isinstance(value, torch.Tensor):
        table = value.detach()
    else:
        table = _as_tensor(name, value, what)
    if table.dtype == torch.bool or table.is_complex():
        raise TypeError(f"{name} must hold real {what}, got dtype {table.dtype}")
    return table.to(torch.float64)


def _first_bad(name: str, table: torch.Tensor, bad: torch.Tensor, expected: str) -> None:
    if bool(bad.any()):
        index = [int(i) for i in bad.nonzero()[0]]
        value = table[tuple(index)].item()
        raise ValueError(f"{name}{index} = {value!r} must be {expected}")


def _probabilities(patch_probs) -> torch.Tensor:
    table = _real_table("patch_probs", patch_probs, "probabilities")
    if table.dim() != 2:
        raise ValueError(f"patch_probs must be [M, C] (one row of class probabilities per "
                         f"patch), got shape {tuple(table.shape)}")
    _first_bad("patch_probs", table, ~((table >= 0) & (table <= 1)), "a probability in [0, 1]")
    return table


def _scores(patch_probs, rows: int) -> torch.Tensor:
    table = _real_table("patch_probs", patch_probs, "scores")
    if table.dim() != 2 or table.shape[0] != rows:
        raise ValueError(f"patch_probs must be [K, C] with K = {rows} (one row per box), got "
                         f"shape {tuple(table.shape)}")
    _first_bad("patch_probs", table, ~table.isfinite(), "finite")
    return table


def _counts(counts, rows: int) -> torch.Tensor:
    sizes = _as_tensor("counts", counts, "patch counts")
    if sizes.dim() != 1:
        raise ValueError(f"counts must be 1-D (patches per image), got shape "
                         f"{tuple(sizes.shape)}")
    if sizes.numel() == 0:
        sizes = sizes.to(torch.int64)
    if sizes.dtype == torch.bool or sizes.is_floating_point() or sizes.is_complex():
        raise TypeError(f"counts must hold integers (patches per image), got dtype "
                        f"{sizes.dtype}")
    sizes = sizes.to(torch.int64)
    if bool((sizes < 0).any()):
        index = int((sizes < 0).nonzero()[0])
        raise ValueError(f"counts[{index}] = {int(sizes[index])} must be >= 0")
    if int(sizes.sum()) != rows:
        raise ValueError(f"counts must sum to the {rows} rows of patch_probs, got "
                         f"{int(sizes.sum())}")
    if bool((sizes == 0).any()):
        index = int((sizes == 0).nonzero()[0])
        raise ValueError(f"counts[{index}] = 0: image {index} has no patches and cannot be "
                         f"scored")
    return sizes


def _maps(maps) -> torch.Tensor:
    table = _real_table("maps", maps, "scores").cpu()
    if table.dim() != 3 or table.numel() == 0:
        raise ValueError(f"maps must be [C, H, W] with C, H, W >= 1, got shape "
                         f"{tuple(table.shape)}")
    _first_bad("maps", table, ~table.isfinite(), "finite")
    return table


def _class_key(label: str, value) -> int:
    """value as a class index (an int >= 0); `label` says where it came from in errors."""
    return integer(label, value, what="an integer class index >= 0", minimum=0)


def _class_list(name: str, value, count: int) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an iterable of class indices, got {value!r}")
    out = []
    for position, item in enumerate(value):
        c = _class_key(f"{name}[{position}]", item)
        if c >= count:
            raise ValueError(f"{name}[{position}] = {c} must be a class index in "
                             f"0..{count - 1} (maps has {count} classes)")
        out.append(c)
    return out
