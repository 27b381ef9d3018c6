"""extract_patches_triton against cnnxfer.ops.reference.extract_patches (evaluated in float64).

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
so shapes stay small; every option combination still runs, on crops that shrink (where antialias
matters), enlarge, keep their size, and are a single pixel.
"""
from __future__ import annotations

import itertools

import pytest
import torch

pytest.importorskip("triton")

from cnnxfer.kernels import patches  # noqa: E402,F401  (registers the op)
from cnnxfer.ops import reference  # noqa: E402

from devices import TRITON_DEVICE as DEVICE  # noqa: E402
from devices import needs_triton  # noqa: E402

pytestmark = needs_triton
OP = torch.ops.cnnxfer.extract_patches_triton

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]

# (image, x0, y0, x1, y1) in 17 x 23 images: the whole image, an 8 x 8 crop, one pixel, 20 x 15,
# 4 x 4 at the right edge, 3 wide x 17 tall (enlarged across, shrunk down), one row.
BOXES = [
    (0, 0, 0, 23, 17),
    (1, 3, 2, 11, 10),
    (0, 5, 5, 6, 6),
    (1, 0, 1, 20, 16),
    (0, 19, 3, 23, 7),
    (1, 2, 0, 5, 17),
    (1, 4, 16, 21, 17),
]

# absolute tolerance in pixel units (0..255 data, before normalization), relative tolerance
TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (1e-4, 2e-3),
    torch.bfloat16: (1e-3, 1e-2),
}


def _images(kind: str, shape=(2, 3, 17, 23), seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind.startswith("u8"):
        x = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    else:
        x = torch.rand(shape, generator=generator, dtype=torch.float64) * 255
        x = x.to({"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16,
                  "f16": torch.float16}[kind.split("_")[0]])
    if kind.endswith("_cl"):
        x = x.contiguous(memory_format=torch.channels_last)
    elif kind.endswith("_strided"):  # no unit stride anywhere: every other column of a wider one
        wide = torch.zeros(shape[:-1] + (2 * shape[-1],), dtype=x.dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
    return x.to(DEVICE)


def _boxes(rows=BOXES) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64, device=DEVICE).reshape(-1, 5)


def _norm(normalize: str, channels: int):
    mean = MEAN[:channels] if normalize in ("both", "mean") else None
    std = STD[:channels] if normalize in ("both", "std") else None
    return mean, std


def _run(images, boxes, size, mean=None, std=None, out_dtype=None, channels_last=False,
         antialias=True, reverse_channels=False):
    return OP(images, boxes, size, mean, std, out_dtype, channels_last, antialias,
              reverse_channels)


def _check(images, boxes, size, mean=None, std=None, out_dtype=None, channels_last=False,
           antialias=True, reverse_channels=False):
    got = _run(images, boxes, size, mean, std, out_dtype, channels_last, antialias,
               reverse_channels)
    expected = reference.extract_patches(images.double().cpu(), boxes.cpu(), size, mean, std,
                                         torch.float64, channels_last, antialias,
                                         reverse_channels)
    dtype = out_dtype or torch.float32
    assert got.dtype == dtype
    assert got.shape == (boxes.shape[0], images.shape[1], size, size)
    assert got.device == images.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=memory_format)
    atol, rtol = TOLERANCES[dtype]
    if std is not None:
        atol /= min(std)
    torch.testing.assert_close(got.double().cpu(), expected, atol=atol, rtol=rtol)
    return got


OPTIONS = list(itertools.product(
    [False, True],                                        # antialias
    [False, True],                                        # reverse_channels
    ["none", "both"],                                     # normalize
    [torch.float32, torch.bfloat16, torch.float16],       # out_dtype
    [False, True],                                        # channels_last output
))
# Each option combination meets one image kind and one size, in rotation, so that all of them
# appear without running the full product in the interpreter.
KINDS = ["u8", "f32", "u8_cl", "u8_1ch", "f32_strided", "u8_1ch_cl"]


@pytest.mark.parametrize("index", range(len(OPTIONS)),
                         ids=[f"aa{a}-rev{r}-{n}-{str(d)[6:]}-cl{c}"
                              for a, r, n, d, c in OPTIONS])
def test_every_option(index):
    antialias, reverse, normalize, out_dtype, channels_last = OPTIONS[index]
    kind = KINDS[index % len(KINDS)]
    channels = 1 if "1ch" in kind else 3
    images = _images(kind.replace("_1ch", ""), shape=(2, channels, 17, 23), seed=index)
    mean, std = _norm(normalize, channels)
    size = (8, 12)[index // len(KINDS) % 2]
    _check(images, _boxes(), size, mean, std, out_dtype, channels_last, antialias, reverse)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("kind", ["u8", "f32", "u8_cl", "f32_strided", "f64", "bf16", "f16"])
def test_image_dtypes_and_layouts(kind, antialias):
    images = _images(kind, seed=1)
    # float64 images are resampled in float64: compare them in float64
    out_dtype = torch.float64 if kind == "f64" else None
    _check(images, _boxes(), 12, MEAN, STD, out_dtype, False, antialias, True)


@pytest.mark.parametrize("normalize", ["mean", "std"])
def test_mean_or_std_alone(normalize):
    mean, std = _norm(normalize, 3)
    _check(_images("u8"), _boxes(), 8, mean, std, antialias=True)


@pytest.mark.parametrize("antialias", [False, True])
def test_many_taps_and_several_tiles(antialias):
    # shrinking 70 -> 8 needs ~19 taps per output; size 40 splits each patch into several
    # (partial) tiles, whose tap loops have different lengths
    images = _images("u8", shape=(1, 3, 40, 70), seed=2)
    boxes = _boxes([(0, 0, 0, 70, 40), (0, 0, 3, 70, 8), (0, 3, 0, 4, 40), (0, 30, 10, 45, 37)])
    _check(images, boxes, 8, antialias=antialias)
    _check(images, boxes[[0, 3]], 40, MEAN, STD, torch.bfloat16, True, antialias, False)


def test_more_channels_than_one_tile():
    # 20 channels: two channel tiles, the second partial; reversal crosses between them
    images = _images("f32", shape=(2, 20, 9, 11), seed=7)
    mean = [float(c) for c in range(20)]
    std = [1.0 + c / 4 for c in range(20)]
    boxes = _boxes([(0, 0, 0, 11, 9), (1, 2, 3, 5, 4)])
    _check(images, boxes, 6, mean, std, None, True, True, True)


# ------------------------------------------------------------------ exact results


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["u8", "f32"])
def test_crop_of_patch_size_is_copied_exactly(kind, reverse, antialias):
    images = _images(kind, seed=3)
    size = 12
    boxes = _boxes([(0, 4, 3, 4 + size, 3 + size), (1, 11, 5, 11 + size, 5 + size)])
    got = _run(images, boxes, size, antialias=antialias, reverse_channels=reverse)
    crops = torch.stack([images[0, :, 3:15, 4:16], images[1, :, 5:17, 11:23]]).float()
    if reverse:
        crops = crops.flip(1)
    assert torch.equal(got, crops)


@pytest.mark.parametrize("antialias", [False, True])
def test_single_pixel_box_is_constant(antialias):
    images = _images("f32", seed=4)
    got = _run(images, _boxes([(1, 7, 9, 8, 10)]), 8, antialias=antialias)
    assert torch.equal(got, images[1, :, 9, 7].float().view(1, 3, 1, 1).expand(1, 3, 8, 8))


@pytest.mark.parametrize("antialias,box,size", [
    (False, (0, 2, 3, 8, 9), 12),    # 6 -> 12: weights 1/4, 3/4
    (True, (0, 2, 3, 8, 9), 12),     # the same, and weight 1 at the edges
    (False, (1, 0, 1, 16, 17), 8),   # 16 -> 8: the mean of two samples
    (False, (1, 19, 0, 23, 16), 8),  # 4 -> 8 across, 16 -> 8 down
])
def test_dyadic_weights_are_exact(antialias, box, size):
    # weights that are multiples of 1/16 on uint8 data leave nothing to round, in float32 as in
    # the float64 reference
    images = _images("u8", seed=5)
    boxes = _boxes([box])
    got = _run(images, boxes, size, antialias=antialias)
    expected = reference.extract_patches(images.double().cpu(), boxes.cpu(), size,
                                         out_dtype=torch.float64, antialias=antialias)
    assert torch.equal(got.double().cpu(), expected)


# ------------------------------------------------------------------ edge cases and the op


@pytest.mark.parametrize("channels_last", [False, True])
def test_no_boxes(channels_last):
    got = _run(_images("u8"), _boxes([]), 8, out_dtype=torch.bfloat16,
               channels_last=channels_last)
    assert got.shape == (0, 3, 8, 8) and got.dtype == torch.bfloat16


def test_strided_boxes():
    table = torch.tensor([[9] + list(b) for b in BOXES], dtype=torch.int64, device=DEVICE)
    boxes = table[::2, 1:]  # neither row nor column stride is the contiguous one
    assert not boxes.is_contiguous()
    _check(_images("u8"), boxes, 8, antialias=True)


def test_one_channel_reverse_is_identity():
    images = _images("u8", shape=(2, 1, 17, 23), seed=6)
    plain = _run(images, _boxes(), 8, [100.0], [50.0])
    assert torch.equal(_run(images, _boxes(), 8, [100.0], [50.0], reverse_channels=True), plain)


def test_opcheck_schema():
    checks = ("test_schema",)
    if DEVICE == "cuda":
        # In the interpreter the kernel runs for real even on fake tensors: GPU only.
        checks += ("test_faketensor",)
    torch.library.opcheck(OP.default, (_images("u8"), _boxes(), 8, MEAN, STD, torch.float16,
                                       True, True, False), test_utils=checks)
