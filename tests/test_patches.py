"""extract_patches (C++ CPU kernel and the public face) against cnnxfer.ops.reference."""
from __future__ import annotations

import pytest
import torch

from cnnxfer import ops
from cnnxfer.ops import reference

from devices import TRITON_DEVICE, backend_device_params, needs_triton

# Tolerances against the float64 reference on 0..255 data: float32 rounds the weights and sums.
ATOL = {torch.float32: 2e-3, torch.float64: 1e-9, torch.bfloat16: 1.0, torch.float16: 0.13}
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def _images(shape, dtype=torch.uint8, seed=0, layout="contiguous"):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    images = images.to(dtype)
    if layout == "channels_last":  # what a decoded HWC array looks like once permuted
        images = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return images


def _random_boxes(count, images, seed=1, min_side=1):
    generator = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    rows = []
    for _ in range(count):
        side_w = int(torch.randint(min_side, width + 1, (1,), generator=generator))
        side_h = int(torch.randint(min_side, height + 1, (1,), generator=generator))
        x0 = int(torch.randint(0, width - side_w + 1, (1,), generator=generator))
        y0 = int(torch.randint(0, height - side_h + 1, (1,), generator=generator))
        image = int(torch.randint(0, n, (1,), generator=generator))
        rows.append([image, x0, y0, x0 + side_w, y0 + side_h])
    return torch.tensor(rows)


def _expected(images, boxes, **kwargs):
    """The reference in float64 throughout (computed and returned)."""
    kwargs = kwargs | {"out_dtype": torch.float64}
    return reference.extract_patches(images.double(), boxes, **kwargs)


def _precision(out_dtype, images):
    """The dtype whose tolerance applies: the output's, but the arithmetic is float32 unless the
    images are float64 (a float64 output of uint8 images carries float32 sums)."""
    if out_dtype == torch.float64 and images.dtype != torch.float64:
        return torch.float32
    return out_dtype


def _check(out, images, boxes, **kwargs):
    expected = _expected(images, boxes, **kwargs)
    dtype = _precision(out.dtype, images)
    torch.testing.assert_close(out.double(), expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("image_dtype", [torch.uint8, torch.float32, torch.float64,
                                         torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 20, 9), (3, 4, 16, 16)], ids=str)
def test_matches_reference(antialias, image_dtype, layout, shape):
    images = _images(shape, image_dtype, layout=layout)
    boxes = _random_boxes(9, images)
    for size in (16, 23):  # crops both larger (downscale) and smaller (upscale) than size
        out = ops.extract_patches(images, boxes, size=size, antialias=antialias)
        _check(out, images, boxes, size=size, antialias=antialias)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64, torch.bfloat16,
                                       torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("reverse_channels", [False, True])
def test_normalization_dtype_layout_and_channel_order(out_dtype, channels_last, reverse_channels):
    images = _images((2, 3, 41, 29))
    boxes = _random_boxes(7, images, seed=3)
    kwargs = dict(size=19, mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4],
                  out_dtype=out_dtype, channels_last=channels_last,
                  reverse_channels=reverse_channels)
    out = ops.extract_patches(images, boxes, **kwargs)
    assert out.dtype == out_dtype and out.shape == (7, 3, 19, 19)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)
    expected = _expected(images, boxes, **kwargs)
    # normalized values are ~[-2, 2.2]: tolerances scale down with std
    precision = _precision(out_dtype, images)
    torch.testing.assert_close(out.double(), expected, rtol=RTOL[precision],
                               atol=ATOL[precision] / 50)


GPU_BACKENDS = [p for p in backend_device_params() if p.values[1] == "cuda"]


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_kernels_match_reference(backend, device, out_dtype, channels_last):
    """The CUDA and Triton kernels on GPU tensors, normalization and both layouts, against the
    float64 reference computed on the CPU, and the reference backend itself on the GPU."""
    images = _images((2, 3, 61, 47), layout="channels_last")
    boxes = torch.cat([_random_boxes(11, images, seed=7), torch.tensor([[1, 0, 0, 47, 47]])])
    kwargs = dict(size=33, mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4],
                  out_dtype=out_dtype, channels_last=channels_last)
    out = ops.extract_patches(images.to(device), boxes, backend=backend, **kwargs)
    assert out.device.type == "cuda" and out.dtype == out_dtype
    expected = _expected(images, boxes, **kwargs)
    torch.testing.assert_close(out.cpu().double(), expected, rtol=RTOL[out_dtype],
                               atol=ATOL[out_dtype] / 50)
    on_gpu = ops.extract_patches(images.to(device), boxes, backend="reference", **kwargs)
    torch.testing.assert_close(on_gpu.cpu().double(), expected, rtol=RTOL[out_dtype],
                               atol=ATOL[out_dtype] / 50)


def test_identity_box_is_exact():
    """A box of exactly size x size is a copy: integer-valued, no rounding anywhere."""
    images = _images((1, 3, 30, 40))
    boxes = torch.tensor([[0, 5, 3, 21, 19], [0, 0, 0, 16, 16]])
    for antialias in (True, False):
        out = ops.extract_patches(images, boxes, size=16, antialias=antialias)
        assert torch.equal(out[0], images[0, :, 3:19, 5:21].float())
        assert torch.equal(out[1], images[0, :, :16, :16].float())


@needs_triton
def test_face_routes_to_triton():
    images = _images((2, 3, 21, 17))
    boxes = _random_boxes(5, images, seed=8)
    kwargs = dict(size=9, mean=[10.0, 20.0, 30.0], std=[50.0, 60.0, 70.0], reverse_channels=True)
    out = ops.extract_patches(images.to(TRITON_DEVICE), boxes, backend="triton", **kwargs)
    assert out.device.type == TRITON_DEVICE
    torch.testing.assert_close(out.double().cpu(), _expected(images, boxes, **kwargs), rtol=1e-5,
                               atol=1e-4)


def test_reference_backend_is_the_reference():
    images = _images((1, 3, 12, 12))
    boxes = torch.tensor([[0, 1, 2, 11, 9]])
    assert torch.equal(ops.extract_patches(images, boxes, size=5, backend="reference"),
                       reference.extract_patches(images, boxes, size=5))


def test_one_image_boxes_and_tensor_kinds():
    image = _images((1, 3, 25, 31))[0]
    boxes = [[0, 0, 10, 12], [3, 4, 31, 25]]
    out = ops.extract_patches(image, boxes, size=8)
    expected = _expected(image[None], torch.tensor([[0] + b for b in boxes]), size=8)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=2e-3)
    as_float = ops.extract_patches(image, torch.tensor(boxes, dtype=torch.float32), size=8)
    assert torch.equal(as_float, out)


def test_empty_boxes_give_empty_batch():
    images = _images((2, 3, 9, 9))
    out = ops.extract_patches(images, torch.zeros(0, 5, dtype=torch.int64), size=7)
    assert out.shape == (0, 3, 7, 7) and out.dtype == torch.float32


def test_large_downscale_with_antialias_matches_reference():
    """A whole 300-pixel side into 16: ~19 taps per output with antialias."""
    images = _images((1, 3, 300, 310))
    boxes = torch.tensor([[0, 0, 0, 300, 300], [0, 10, 0, 310, 300]])
    out = ops.extract_patches(images, boxes, size=16)
    _check(out, images, boxes, size=16)
    plain = ops.extract_patches(images, boxes, size=16, antialias=False)
    assert not torch.allclose(out, plain)  # the option does something


@pytest.mark.slow
def test_compile_fullgraph():
    images = _images((1, 3, 20, 24))
    boxes = torch.tensor([[0, 0, 0, 12, 12], [0, 4, 2, 24, 20]])

    def patches(t):
        return torch.ops.cnnxfer.extract_patches(t, boxes, 8, None, None, None, False, True,
                                                 False) * 2

    compiled = torch.compile(patches, fullgraph=True)
    torch.testing.assert_close(compiled(images), patches(images))


def test_opcheck():
    images = _images((2, 3, 20, 24))
    boxes = torch.tensor([[0, 0, 0, 12, 12], [1, 4, 2, 24, 20]])
    torch.library.opcheck(torch.ops.cnnxfer.extract_patches.default,
                          (images, boxes, 8, [1.0, 2.0, 3.0], [2.0, 2.0, 2.0], torch.bfloat16,
                           True, True, True),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize("boxes,error,words", [
    (torch.tensor([[0, 0, 0, 0, 5]]), ValueError, ["boxes[0]", "(0, 0, 0, 5)", "x0 < x1"]),
    (torch.tensor([[0, 0, 0, 5, 5], [0, 3, 3, 20, 5]]), ValueError, ["boxes[1]", "<= width=12"]),
    (torch.tensor([[0, -1, 0, 5, 5]]), ValueError, ["boxes[0]", "-1"]),
    (torch.tensor([[2, 0, 0, 5, 5]]), ValueError, ["boxes[0]", "image 2", "holds 2"]),
    (torch.tensor([[0, 0.5, 0, 5, 5]]), ValueError, ["boxes[0]", "integer"]),
    (torch.tensor([0, 0, 5, 5]), ValueError, ["boxes", "[K, 4]", "(4,)"]),
    (torch.tensor([[0, 0, 5, 5]]), ValueError, ["[K, 4]", "holds 2"]),
])
def test_bad_boxes_name_the_box(boxes, error, words):
    images = _images((2, 3, 10, 12))
    with pytest.raises(error) as info:
        ops.extract_patches(images, boxes, size=4)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("kwargs,error,words", [
    ({"mean": [1.0, 2.0]}, ValueError, ["mean", "3", "[1.0, 2.0]"]),
    ({"std": [1.0, 0.0, 1.0]}, ValueError, ["std", "0"]),
    ({"std": [1.0, float("nan"), 1.0]}, ValueError, ["std", "finite"]),
    ({"size": 0}, ValueError, ["size", "0"]),
    ({"out_dtype": torch.int32}, TypeError, ["out_dtype", "torch.int32"]),
    ({"backend": "cuda"}, ValueError, ["backend", "'cuda'"]),
])
def test_bad_arguments(kwargs, error, words):
    images = _images((1, 3, 10, 12))
    with pytest.raises(error) as info:
        ops.extract_patches(images, [[0, 0, 5, 5]], **({"size": 4} | kwargs))
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_bad_images():
    with pytest.raises(TypeError, match="images must be uint8 or floating, got torch.int32"):
        ops.extract_patches(torch.zeros(1, 3, 5, 5, dtype=torch.int32), [[0, 0, 2, 2]])
    with pytest.raises(ValueError, match=r"images must be \[C, H, W\] or \[N, C, H, W\]"):
        ops.extract_patches(torch.zeros(5, 5), [[0, 0, 2, 2]])


def test_the_op_itself_checks_boxes():
    """C++ callers get the checks too."""
    images = _images((1, 3, 10, 12))
    with pytest.raises(ValueError, match=r"boxes\[1\] = \(x0, y0, x1, y1\) = \(0, 0, 13, 5\)"):
        torch.ops.cnnxfer.extract_patches(images, torch.tensor([[0, 0, 0, 5, 5], [0, 0, 0, 13, 5]]),
                                          4, None, None, None, False, True, False)
    with pytest.raises(ValueError, match="std must not contain 0"):
        torch.ops.cnnxfer.extract_patches(images, torch.tensor([[0, 0, 0, 5, 5]]), 4, None,
                                          [1.0, 0.0, 1.0], None, False, True, False)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_paper_grid_boxes_of_every_scale(channels, layout):
    """The real use: every box of the paper's grid on an odd-sized image, down- and upscaled."""
    from cnnxfer.features.grids import paper_grid

    images = _images((1, channels, 47, 61), layout=layout, seed=5)
    boxes = paper_grid(61, 47)
    sides = (boxes[:, 2] - boxes[:, 0]).unique()
    assert sides.min() < 24 < sides.max()  # both directions of the resize are exercised
    for out_dtype in (torch.float32, torch.bfloat16):
        out = ops.extract_patches(images, boxes, size=24, out_dtype=out_dtype, channels_last=True)
        table = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.int64), boxes], dim=1)
        _check(out, images, table, size=24)
