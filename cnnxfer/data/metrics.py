"""Average precision as the Pascal VOC devkit computes it for classification, and per-class tables.

:func:`average_precision` is the devkit's ``VOCevalcls``: rank the samples by score, accumulate
true and false positives, and summarize the precision/recall curve either by 11-point
interpolation (``metric="voc07"``, the VOC2007 devkit, which the Oquab et al. tables use) or by
the area under the monotone curve (``metric="area"``, ``VOCap.m`` of the VOC2010+ devkits).
:func:`mean_average_precision` does it per class and returns an :class:`APTable`, which prints as
the paper's tables do (AP x 100, one decimal, mAP last).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["METRICS", "average_precision", "mean_average_precision", "APTable"]

METRICS: tuple[str, ...] = ("voc07", "area")

# The recall thresholds of the VOC2007 devkit, `for t=0:0.1:1`, as MATLAB's colon builds them:
# the left half as 0 + k*0.1 and the right half as 1 - k*0.1. That makes every threshold the
# double nearest k/10 except the fourth, 3*0.1 = 0.30000000000000004, which a recall of exactly
# 3/10 (0.29999999999999999) does not reach, in the devkit as here. (np.arange(0, 1.1, 0.1) would
# also give 0.6000000000000001 and 0.7000000000000001, and so lose recalls of exactly 0.6 and
# 0.7 that the devkit keeps.)
_VOC07_THRESHOLDS = np.array([k * 0.1 for k in range(6)]
                             + [1.0 - k * 0.1 for k in range(4, -1, -1)])


def average_precision(scores, labels, metric: str = "voc07") -> float:
    """The average precision of one class, as the VOC devkit's VOCevalcls computes it.

    Args:
        scores: [N] real confidences (tensor, array or list); higher means more likely positive.
            NaN is refused.
        labels: [N] in {1, -1, 0}: positive, negative, and "difficult" (the devkit's 0, an image
            whose only objects of the class are marked difficult). Label-0 samples are dropped
            before ranking: they count neither as positives nor as negatives (the devkit keeps
            them in the ranking, where they change neither tp nor fp, which gives the same AP).
        metric: ``"voc07"``: the mean over t in {0, 0.1, ..., 1} of the highest precision at a
            recall >= t (0 when no point reaches t), the VOC2007 devkit's 11-point AP;
            ``"area"``: the area under the precision/recall curve made monotone decreasing
            (precision at each recall replaced by the highest precision at any larger recall),
            the VOC2010+ devkits' VOCap.

    Returns:
        AP in [0, 1] as a Python float; ``nan`` when there is no positive sample (recall is
        undefined; APTable prints it as "n/a" and leaves it out of the mean).

    Ranking: by score, highest first; equal scores keep their input order (a stable sort, as the
    devkit's MATLAB ``sort(-confidence)`` is), so ties are not averaged over.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    score = _vector("scores", scores)
    label = _labels("labels", labels)
    if score.shape != label.shape:
        raise ValueError(f"scores and labels must have the same length, got {score.shape[0]} "
                         f"scores and {label.shape[0]} labels")
    if np.isnan(score).any():
        raise ValueError(f"scores[{int(np.flatnonzero(np.isnan(score))[0])}] is NaN; every "
                         f"sample needs a score to be ranked")
    counted = label != 0
    score, label = score[counted], label[counted]
    positives = int((label > 0).sum())
    if positives == 0:
        return float("nan")

    order = np.argsort(-score, kind="stable")  # descending; ties keep their input order
    hit = label[order] > 0
    tp = np.cumsum(hit)
    fp = np.cumsum(~hit)
    recall = tp / positives
    precision = tp / (tp + fp)  # tp + fp >= 1: every counted sample is one or the other

    if metric == "voc07":
        # recall rises with rank, so "the points at recall >= t" are a suffix of the curve: the
        # highest precision over each suffix, read at the first point reaching each threshold.
        best_after = np.maximum.accumulate(precision[::-1])[::-1]
        first = np.searchsorted(recall, _VOC07_THRESHOLDS, side="left")
        reached = first < recall.shape[0]
        points = np.where(reached, best_after[np.minimum(first, recall.shape[0] - 1)], 0.0)
        return float(points.sum() / 11.0)

    # VOCap: sentinels at recall 0 and 1, precision made monotone from the right, then the sum of
    # the rectangles where recall steps up.
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(((mrec[step] - mrec[step - 1]) * mpre[step]).sum())


def mean_average_precision(scores, labels, classes: Sequence[str],
                           metric: str = "voc07") -> APTable:
    """Per-class AP of a score table, as an :class:`APTable`.

    Args:
        scores: [N, C] real confidences (tensor, array or nested list).
        labels: [N, C] in {1, -1, 0}, e.g. ``VOCSplit.labels()``.
        classes: the C class names, in column order.
        metric: "voc07" or "area" (see :func:`average_precision`).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    names = _class_names(classes)
    score = _table("scores", scores)
    label = _table("labels", labels)
    if score.shape != label.shape:
        raise ValueError(f"scores and labels must have the same shape [N, C], got "
                         f"{tuple(score.shape)} and {tuple(label.shape)}")
    if score.shape[1] != len(names):
        raise ValueError(f"scores has {score.shape[1]} columns but classes names "
                         f"{len(names)}: {names}")
    ap = {}
    for c, name in enumerate(names):
        try:
            ap[name] = average_precision(score[:, c], label[:, c], metric)
        except ValueError as error:
            raise ValueError(f"class {name!r} (column {c}): {error}") from None
    return APTable(classes=names, ap=ap, metric=metric)


@dataclass
class APTable:
    """Average precision per class.

    Attributes:
        classes: class names, in table order.
        ap: class name -> AP in [0, 1], ``nan`` for a class with no positive sample.
        metric: "voc07" or "area".
    """

    classes: tuple[str, ...]
    ap: dict[str, float]
    metric: str

    @property
    def map(self) -> float:
        """The mean AP over the classes whose AP is finite (nan when none is)."""
        finite = [self.ap[c] for c in self.classes if math.isfinite(self.ap[c])]
        return float(sum(finite) / len(finite)) if finite else float("nan")

    def to_text(self) -> str:
        """Two right-aligned rows, class names over AP x 100 with one decimal ("n/a" for nan),
        mAP last, as in the paper's tables. No trailing newline."""
        names = [*self.classes, "mAP"]
        values = [_percent(self.ap[c]) for c in self.classes] + [_percent(self.map)]
        widths = [max(len(n), len(v)) for n, v in zip(names, values)]
        return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths))
                         for row in (names, values))

    def to_markdown(self, row_name: str | None = None) -> str:
        """A Markdown table: a header of class names and mAP, one row of AP x 100. With
        ``row_name`` the table gets a first column holding it (e.g. the method's name), so tables
        of several methods can be stacked by hand."""
        names = [*self.classes, "mAP"]
        values = [_percent(self.ap[c]) for c in self.classes] + [_percent(self.map)]
        if row_name is not None:
            names, values = ["", *names], [str(row_name), *values]
        lines = [names, ["---"] * len(names), values]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)

    def to_dict(self) -> dict:
        """{"classes": [...], "ap": {class: AP}, "map": mAP, "metric": ...}, JSON-safe: a nan AP
        (or mAP) is None."""
        return {"classes": list(self.classes),
                "ap": {c: _json_number(self.ap[c]) for c in self.classes},
                "map": _json_number(self.map), "metric": self.metric}


def _percent(value: float) -> str:
    return f"{100.0 * value:.1f}" if math.isfinite(value) else "n/a"


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _as_array(name: str, values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu")
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()  # NumPy has no bfloat16
        values = values.numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor, array or list of numbers, got "
                        f"{type(values).__name__}: {error}") from None
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def _vector(name: str, values) -> np.ndarray:
    array = _as_array(name, values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional [N], got shape {array.shape}")
    return array


def _labels(name: str, values) -> np.ndarray:
    array = _vector(name, values)
    bad = ~np.isin(array, (-1.0, 0.0, 1.0))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{index}] = {float(array[index])!r}, expected 1 (positive), -1 "
                         f"(negative) or 0 (difficult, not counted)")
    return array.astype(np.int8)


def _table(name: str, values) -> np.ndarray:
    array = _as_array(name, values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional [N, C], got shape {array.shape}")
    return array


def _class_names(classes) -> tuple[str, ...]:
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"classes must be a sequence of class names (str), got {classes!r}")
    names = tuple(classes)
    if len(set(names)) != len(names):
        raise ValueError(f"classes must not repeat a name, got {names}")
    return names
