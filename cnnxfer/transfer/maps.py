"""Score maps drawn over their image, as a PNG (as in the paper's localization figures).

:func:`save_overlay` draws one panel per class: the image, the class's score map over it in a
colour map, the class's name and the map's maximum as the title, and a colour bar. Every panel
shares one colour scale, from 0 to the largest value over the drawn maps (1 when they are all
0), so panels compare at a glance: a class the network barely sees stays dark.

matplotlib is imported inside the function (``import cnnxfer`` stays light) and used only
through its object-oriented API, a ``Figure`` on an Agg canvas: no pyplot, no global state, no
display, so it works headless and from several threads at once.
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..ops.arguments import real

__all__ = ["save_overlay"]

_COLUMNS = 4               # panels per row; more classes wrap onto further rows
_IMAGE_INCHES = 3.0        # the image's longer side
_TITLE_INCHES = 0.4        # room above the image for its title
_MARGIN_INCHES = 0.15      # left of and below each image
_BAR_GAP_INCHES = 0.1
_BAR_INCHES = 0.12
_LABELS_INCHES = 0.6       # right of the colour bar, for its tick labels
_DPI = 100


def save_overlay(path, image, maps, class_names: Sequence[str], *, classes=None,
                 alpha: float = 0.5, cmap: str = "jet") -> Path:
    """Write a PNG of the score maps of one image over that image.

    Args:
        path: where to write; must end in ``.png``; its folder must exist.
        image: uint8 RGB image, a [3, H, W] tensor (cnnxfer's layout, as ``load_image`` gives)
            or an [H, W, 3] NumPy array (or anything ``np.asarray`` makes one of, e.g. a PIL
            image).
        maps: [C, H, W] score maps (tensor or array, finite), e.g. from ``score_maps``.
        class_names: the C names of the maps' classes, in order.
        classes: the classes to draw, by name or index, in panel order (a list, or a 1-D
            integer tensor or array of indices); None draws all C.
        alpha: opacity of the maps over the image, in [0, 1].
        cmap: a matplotlib colour map name.

    Returns:
        The path written, as a Path. Panels go in rows of up to 4, each the image (its longer
        side drawn 300 pixels long) with its colour bar, so the PNG widens with the number of
        panels up to 4, then grows taller.

    Raises:
        ValueError for an unknown class name or index, repeated classes, maps whose size is not
        the image's, a number of names that is not C, non-finite maps, alpha outside [0, 1], an
        unknown colour map or a path that does not end in .png; TypeError for wrong types.
    """
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png (save_overlay writes PNG), got {str(path)!r}")
    pixels = _image(image)
    scores = _maps(maps, pixels.shape[0], pixels.shape[1])
    names = _names(class_names, scores.shape[0])
    chosen = _chosen(classes, names)
    opacity = _alpha(alpha)

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not isinstance(cmap, str) or cmap not in colormaps:
        raise ValueError(f"cmap must be a matplotlib colour map name such as 'jet' or "
                         f"'viridis', got {cmap!r}")
    top = max(float(scores[c].max()) for c in chosen)
    norm = Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)

    columns = min(len(chosen), _COLUMNS)
    rows = math.ceil(len(chosen) / columns)
    height, width = pixels.shape[:2]
    # Each panel is placed by hand (in inches): constrained layout would double the drawing time.
    scale = _IMAGE_INCHES / max(width, height)
    image_w, image_h = width * scale, height * scale
    panel_w = _MARGIN_INCHES + image_w + _BAR_GAP_INCHES + _BAR_INCHES + _LABELS_INCHES
    panel_h = _TITLE_INCHES + image_h + _MARGIN_INCHES
    size_w, size_h = panel_w * columns, panel_h * rows
    figure = Figure(figsize=(size_w, size_h), dpi=_DPI)
    FigureCanvasAgg(figure)
    for i, c in enumerate(chosen):
        row, column = divmod(i, columns)
        left = column * panel_w + _MARGIN_INCHES
        bottom = size_h - (row + 1) * panel_h + _MARGIN_INCHES
        ax = figure.add_axes((left / size_w, bottom / size_h, image_w / size_w, image_h / size_h))
        ax.imshow(pixels, aspect="auto")
        ax.imshow(scores[c], cmap=cmap, norm=norm, alpha=opacity, interpolation="nearest",
                  aspect="auto")
        ax.set_title(f"{names[c]} (max {float(scores[c].max()):.3g})")
        ax.set_axis_off()
        bar = figure.add_axes(((left + image_w + _BAR_GAP_INCHES) / size_w, bottom / size_h,
                               _BAR_INCHES / size_w, image_h / size_h))
        # the bar shows the colours at full opacity: the scale, not the blend
        figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar)
    figure.savefig(target, format="png", dpi=_DPI)
    return target


def _image(image) -> np.ndarray:
    """uint8 [H, W, 3] array from a [3, H, W] tensor or an [H, W, 3] array."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image as a tensor must be [3, H, W] (RGB), got shape "
                             f"{tuple(image.shape)}")
        if image.dtype != torch.uint8:
            raise TypeError(f"image must be uint8 (pixel values 0..255), got {image.dtype}")
        return image.detach().cpu().permute(1, 2, 0).numpy()
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as error:
        raise TypeError(f"image must be a [3, H, W] uint8 tensor or an [H, W, 3] uint8 array, "
                        f"got {type(image).__name__}: {error}") from None
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image as an array must be [H, W, 3] (RGB), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (pixel values 0..255), got {array.dtype}")
    return array


def _maps(maps, height: int, width: int) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        if maps.dtype == torch.bool or maps.is_complex():
            raise TypeError(f"maps must hold real scores, got dtype {maps.dtype}")
        array = maps.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            array = np.asarray(maps, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"maps must be a [C, H, W] tensor or array of scores, got "
                            f"{type(maps).__name__}: {error}") from None
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"maps must be [C, H, W] with C >= 1, got shape {array.shape}")
    if array.shape[1:] != (height, width):
        raise ValueError(f"maps must have the image's size: [C, {height}, {width}] for a "
                         f"{width}x{height} image, got {list(array.shape)}")
    if not np.isfinite(array).all():
        c, y, x = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"maps[{c}, {y}, {x}] = {float(array[c, y, x])!r} must be finite")
    return array


def _names(class_names, count: int) -> list[str]:
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a sequence of {count} names, got {class_names!r}")
    names = list(class_names)
    if len(names) != count:
        raise ValueError(f"class_names must name each of the maps' {count} classes, got "
                         f"{len(names)} names")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"class_names[{i}] must be a str, got {name!r}")
    return names


def _chosen(classes, names: list[str]) -> list[int]:
    """The indices of the classes to draw, in order."""
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, (torch.Tensor, np.ndarray)) and classes.ndim == 1:
        classes = classes.tolist()  # e.g. topk(...).indices
    if isinstance(classes, (str, bytes, numbers.Integral)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a list of class names or indices, got {classes!r}")
    if not classes:
        raise ValueError("classes must name at least one class to draw, got an empty list")
    chosen = []
    for i, item in enumerate(classes):
        if isinstance(item, str):
            if item not in names:
                raise ValueError(f"classes[{i}] = {item!r} is not a class name; known: "
                                 f"{', '.join(names)}")
            index = names.index(item)
        else:
            index = _index_or_none(item)
            if index is None:
                raise TypeError(f"classes[{i}] must be a class name (str) or index (int), got "
                                f"{item!r}")
            if not 0 <= index < len(names):
                raise ValueError(f"classes[{i}] = {index} must be a class index in "
                                 f"0..{len(names) - 1}")
        if index in chosen:
            raise ValueError(f"classes[{i}] = {item!r} repeats class {names[index]!r}")
        chosen.append(index)
    return chosen


def _index_or_none(item) -> int | None:
    """item as an int (ints, NumPy integers, 0-d integer tensors), or None; never a bool."""
    if isinstance(item, (bool, np.bool_)):
        return None
    try:
        return operator.index(item)
    except TypeError:
        return None


def _alpha(alpha) -> float:
    value = real("alpha", alpha)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the maps' opacity), got {alpha!r}")
    return value
