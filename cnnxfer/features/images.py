"""Images in: a path, a PIL image, a NumPy array or a tensor -> an RGB [3, H, W] tensor.

Files are decoded by Pillow with the EXIF orientation applied (a phone photo stored sideways comes
out upright, as any viewer shows it) and converted to RGB (grey, 1-bit, palette, CMYK and 16-bit
images all become three 8-bit channels; transparent images are composited over white). Pillow's
decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS) is enforced: a larger image is an
ImageError, not a warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch


class ImageError(ValueError):
    """An image that cannot be decoded or understood; the message names it."""


class Decoded(NamedTuple):
    """An image decoded elsewhere (a background worker), with the name it goes by: load_image
    gives its pixels, describe its source."""

    source: str
    pixels: torch.Tensor


def load_image(source) -> torch.Tensor:
    """An image as a [3, H, W] tensor: uint8 for files, PIL images and uint8 arrays; arrays and
    tensors that are floating point keep their dtype (pixel scale 0..255 expected).

    Args:
        source: a file path; a PIL image; an [H, W] or [H, W, 3] array (RGB, as PIL gives); or a
            [3, H, W] / [H, W] tensor (RGB). Floating arrays and tensors are in pixel units
            (0..255); 0..1 images are refused with an error rather than misread. 16-bit
            greyscale files are rescaled to 8 bits.
    Raises:
        FileNotFoundError for a missing file; ImageError for a file Pillow cannot decode or an
        array or tensor of the wrong shape or dtype.
    """
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        return _from_pil(_open(Path(source)))
    if isinstance(source, Decoded):
        return _from_tensor(source.pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, torch.Tensor):
        return _from_tensor(source)
    raise TypeError(f"image must be a path, PIL image, numpy array or tensor, got "
                    f"{type(source).__name__}")


def describe(source) -> str:
    """A short name for an image in messages and outputs: its path, or its type and shape."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Decoded):
        return source.source
    shape = getattr(source, "shape", None)
    if shape is None:
        shape = getattr(source, "size", None)  # PIL images: (width, height)
    try:
        return f"<{type(source).__name__} {tuple(shape)}>"
    except TypeError:  # no shape, or a method (torch's .size)
        return f"<{type(source).__name__}>"


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ImageError(f"{str(path)!r} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {str(path)!r}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its pixel limit and twice that: the limit is the limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decode now, inside the try: truncated files fail here
                return image  # loaded, so usable after the file closes; _from_pil turns it upright
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"cannot decode image {str(path)!r}: {error} (the limit is "
                         f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}; `cnnxfer "
                         f"extract --max-image-pixels N` raises it)") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot decode image {str(path)!r}: {error}") from error


_EXIF_ORIENTATION = 0x0112


def _from_pil(image) -> torch.Tensor:
    from PIL import ImageOps

    # exif_transpose copies even an upright image: call it only when there is a turn to make
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale (PNG, TIFF): Pillow's convert("RGB") would clip at 255, not rescale
        grey = np.asarray(image, dtype=np.float32) * (255.0 / 65535.0)
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.repeat(grey[None], 3, axis=0))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            image.mode == "P" and "transparency" in image.info):
        # composited over white, as a viewer shows it: dropping alpha would expose whatever
        # colour the transparent pixels happen to hold (often black)
        from PIL import Image

        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")  # grey, 1-bit, palette, CMYK, and the composited RGBA
    pixels = np.asarray(image)  # [H, W, 3] uint8
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # a [3, H, W] view of HWC memory


def _check_float_scale(values, kind: str) -> None:
    """Floating images are read in pixel units (0..255); a 0..1 image (torchvision's
    convention) would give meaningless features after the mean subtraction, so it is refused."""
    if values.size == 0 if isinstance(values, np.ndarray) else values.numel() == 0:
        return
    top = float(values.max())
    if 0 < top <= 1.0:
        raise ImageError(f"image {kind} is floating point with values in [0, 1] (max {top:g}); "
                         f"cnnxfer expects pixel values 0..255: multiply by 255")


def _from_array(array: np.ndarray) -> torch.Tensor:
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ImageError(f"image array must be uint8 or floating, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"image array must be [H, W] or [H, W, 3] (RGB), got shape "
                         f"{array.shape}")
    if array.dtype != np.uint8:
        _check_float_scale(array, "array")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def _from_tensor(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise ImageError(f"image tensor must be uint8 or floating, got {tensor.dtype}")
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0).expand(3, -1, -1)
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ImageError(f"image tensor must be [3, H, W] (RGB) or [H, W], got shape "
                         f"{tuple(tensor.shape)}")
    if tensor.is_floating_point():
        _check_float_scale(tensor, "tensor")
    return tensor
