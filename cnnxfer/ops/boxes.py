"""The one checker of pixel boxes, shared by the grids, the patch feature extractor and
ops.extract_patches.

A box is (x0, y0, x1, y1) in integer pixel coordinates: x along the width, y along the height,
(0, 0) the top-left pixel, x1 and y1 exclusive, so ``image[..., y0:y1, x0:x1]`` is its patch. A box
is valid in a width x height image when 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height.
"""
from __future__ import annotations

import torch


def check_boxes(boxes, width: int, height: int) -> torch.Tensor:
    """Boxes [K, 4] (x0, y0, x1, y1) checked against a width x height image.

    Args:
        boxes: a tensor (any device), NumPy array or nested list of shape [K, 4]; integers, or
            floats holding integer values. K may be 0 ([] is no boxes).
        width, height: the image's size in pixels.
    Returns:
        int64 [K, 4] on the CPU, a copy (the caller's tensor is never aliased).
    Raises:
        ValueError naming the first bad box's index and values (a fractional, NaN or infinite
        coordinate, a box outside the image or of zero size); ValueError/TypeError for a wrong
        shape or dtype.
    """
    table = _as_host_table(boxes, columns=(4,))
    _check_inside(table, width, height, first_column=0)
    return table.to(torch.int64, copy=True)


def check_box_table(boxes, count: int, width: int, height: int) -> torch.Tensor:
    """Boxes of a batch of `count` width x height images, as the int64 [K, 5] table
    (image, x0, y0, x1, y1) that the extract_patches kernels take.

    Args:
        boxes: [K, 5] (image, x0, y0, x1, y1), as torchvision.ops.roi_align takes them, or [K, 4]
            (x0, y0, x1, y1) when count is 1. Tensor (any device), array or nested list.
    Returns:
        int64 [K, 5] on the CPU, a copy.
    Raises:
        ValueError naming the first bad box by index: an image index outside [0, count), or a box
        that check_boxes would refuse.
    """
    table = _as_host_table(boxes, columns=(4, 5))
    if table.shape[1] == 4:
        if count != 1:
            raise ValueError(f"boxes [K, 4] name no image but images holds {count}; pass [K, 5] "
                             f"rows (image, x0, y0, x1, y1)")
        table = torch.cat([table.new_zeros(table.shape[0], 1), table], dim=1)
    image = table[:, 0]
    bad_image = (image < 0) | (image >= count)
    if bool(bad_image.any()):
        index = int(bad_image.nonzero()[0])
        raise ValueError(f"boxes[{index}] points at image {_number(image[index])} but images "
                         f"holds {count}")
    _check_inside(table, width, height, first_column=1)
    return table.to(torch.int64, copy=True)


def _as_host_table(boxes, columns: tuple[int, ...]) -> torch.Tensor:
    """boxes as a 2-d CPU tensor of `columns` columns: integer, or float64 holding integers."""
    try:
        table = torch.as_tensor(boxes).detach().to("cpu")
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"boxes must be a tensor, array or list of (x0, y0, x1, y1) rows, got "
                        f"{type(boxes).__name__}: {error}") from None
    if table.dim() == 1 and table.numel() == 0:
        table = table.reshape(0, columns[0])  # [] -> no boxes
    if table.dim() != 2 or table.shape[1] not in columns:
        expected = " or ".join({4: "[K, 4] (x0, y0, x1, y1)",
                                5: "[K, 5] (image, x0, y0, x1, y1)"}[c] for c in columns)
        raise ValueError(f"boxes must be {expected}, got shape {tuple(table.shape)}")
    if table.dtype == torch.bool or table.is_complex():
        raise TypeError(f"boxes must hold real pixel coordinates, got dtype {table.dtype}")
    if table.is_floating_point():
        # Checked (and compared) as float64, before any cast to int64: a huge float must not
        # wrap around into range.
        table = table.to(torch.float64)
        fractional = ~(table.isfinite() & (table == table.round())).all(dim=1)
        if bool(fractional.any()):
            index = int(fractional.nonzero()[0])
            raise ValueError(f"boxes[{index}] = {_row(table[index])} must hold integer pixel "
                             f"coordinates")
    return table


def _check_inside(table: torch.Tensor, width: int, height: int, first_column: int) -> None:
    x0, y0, x1, y1 = table[:, first_column:first_column + 4].unbind(1)
    inside = (0 <= x0) & (x0 < x1) & (x1 <= width) & (0 <= y0) & (y0 < y1) & (y1 <= height)
    if not bool(inside.all()):
        index = int((~inside).nonzero()[0])
        where = f" (image {_number(table[index, 0])})" if first_column else ""
        raise ValueError(
            f"boxes[{index}] = (x0, y0, x1, y1) = {_row(table[index, first_column:])} must "
            f"satisfy 0 <= x0 < x1 <= width={width} and 0 <= y0 < y1 <= height={height}{where}")


def _number(value: torch.Tensor):
    value = value.item()
    return int(value) if float(value).is_integer() else value


def _row(row: torch.Tensor) -> tuple:
    return tuple(_number(v) for v in row)
