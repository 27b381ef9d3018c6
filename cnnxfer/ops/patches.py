"""extract_patches: crop, resize, normalize and cast one network input per box, in one pass.

The public face of the op: keyword arguments, the shared checks (checks.extract_patches_args and
boxes.check_box_table), and the backend choice. The op itself is torch.ops.cnnxfer.extract_patches
(C++ on CPUs, CUDA in CUDA builds) or torch.ops.cnnxfer.extract_patches_triton (kernels/).
"""
from __future__ import annotations

import torch

from . import checks, library, reference
from .boxes import check_box_table


def extract_patches(
    images: torch.Tensor,
    boxes,
    *,
    size: int = 224,
    mean=None,
    std=None,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    antialias: bool = True,
    reverse_channels: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Crops, resizes and normalizes one square network input per box, in one pass.

    Means exactly cnnxfer.ops.reference.extract_patches: each crop images[i, :, y0:y1, x0:x1] is
    resized to size x size by F.interpolate(mode="bilinear", align_corners=False,
    antialias=antialias), its channels reversed if reverse_channels (RGB images, BGR networks such
    as Caffe weights), normalized as (value - mean[c]) / std[c] per output channel, and cast.

    Args:
        images: one image [C, H, W] or a batch [N, C, H, W]; uint8 (0..255) or floating; any
            strides (an HWC array's permuted view works without a copy).
        boxes: [K, 4] (x0, y0, x1, y1) for one image, or [K, 5] (image, x0, y0, x1, y1) as
            torchvision.ops.roi_align takes them; integer pixel coordinates, x1/y1 exclusive.
        size: side of the output patches, in pixels.
        mean, std: C values each, in the images' units (0..255 for uint8), output-channel order.
        out_dtype: float32 (default), float64, bfloat16 or float16.
        channels_last: return the batch in channels_last memory format (what oneDNN and cuDNN
            convolutions prefer).
        antialias: True (default) low-pass filters crops larger than size, as torchvision's
            Resize does by default; the paper's largest patches (the whole short side of the
            image) shrink whenever the short side exceeds size, where plain bilinear aliases.
        backend: "auto", "native", "triton" or "reference".

    Returns:
        [K, C, size, size] in out_dtype. Not differentiable.
    """
    images, size, mean, std, out_dtype = checks.extract_patches_args(images, size, mean, std,
                                                                     out_dtype)
    backend = checks.check_backend(backend)
    count, _, height, width = images.shape
    table = check_box_table(boxes, count, width, height)
    options = (bool(channels_last), bool(antialias), bool(reverse_channels))
    if backend == "reference":
        return reference.extract_patches(images, table, size, mean, std, out_dtype,
                                         *options).to(images.device)
    args = (table.to(images.device), size, mean, std, out_dtype, *options)
    if backend == "auto":
        backend = "native" if library.has_native_kernel(images.device) else "triton"
    if backend == "triton":
        from cnnxfer.kernels import patches  # noqa: F401  (registers the op)

        return torch.ops.cnnxfer.extract_patches_triton(images, *args)
    library.load()
    return torch.ops.cnnxfer.extract_patches(images, *args)
