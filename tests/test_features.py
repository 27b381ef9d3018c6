"""PatchFeatureExtractor and image decoding, against the patch-by-patch reference pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnxfer import PatchFeatureExtractor, nets
from cnnxfer.features.grids import dense_grid, paper_grid
from cnnxfer.features.images import ImageError, load_image
from cnnxfer.ops import reference

from devices import needs_gpu_engine


@pytest.fixture(scope="module")
def net():
    return nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)


def _image(height=90, width=130, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def _reference_features(net, image, boxes, layer="fc7"):
    """One patch at a time: reference crop + resize + normalize, reference network, float64."""
    prep = net.preprocessing
    rows = []
    for box in boxes:
        table = torch.cat([torch.zeros(1, dtype=torch.int64), box])[None]
        patch = reference.extract_patches(image[None].double(), table, size=prep.input_size,
                                          mean=prep.mean, std=prep.std, out_dtype=torch.float64,
                                          reverse_channels=prep.reverse_channels)
        rows.append(net(patch, layer, backend="reference").flatten(1))
    return torch.cat(rows)


def _grid(width, height):
    return dense_grid(width, height, side=min(width, height) // 2, stride=min(width, height) // 4)


def test_features_match_the_patch_by_patch_reference(net):
    image = _image()
    extractor = PatchFeatureExtractor(net, layer="fc7", grid=_grid, max_batch=4)
    features, boxes = extractor(image)
    assert torch.equal(boxes, _grid(130, 90))
    expected = _reference_features(net, image, boxes)
    assert features.shape == (len(boxes), 1024) and features.dtype == torch.float32
    assert ((features.double() - expected).abs().max() / expected.abs().max()).item() < 1e-4


def test_bf16_features_within_2e_2_of_fp32(net):
    image = _image(seed=1)
    fp32, _ = PatchFeatureExtractor(net, grid=_grid)(image)
    bf16, _ = PatchFeatureExtractor(net, grid=_grid, dtype=torch.bfloat16)(image)
    assert bf16.dtype == torch.bfloat16
    assert ((bf16.float() - fp32).norm() / fp32.norm()).item() < 2e-2


def test_batching_across_images_does_not_change_features(net):
    images = [_image(80, 100, 1), _image(70, 120, 2), _image(64, 64, 3)]
    one_by_one = [PatchFeatureExtractor(net, grid=_grid, max_batch=64)(img)[0] for img in images]
    batched = list(PatchFeatureExtractor(net, grid=_grid, max_batch=5).extract(images))
    assert [r.features.shape[0] for r in batched] == [f.shape[0] for f in one_by_one]
    for result, alone in zip(batched, one_by_one):
        assert torch.allclose(result.features, alone, rtol=1e-4, atol=1e-5)


def test_paper_grid_by_default_and_conv_layers(net):
    image = _image(75, 100)
    extractor = PatchFeatureExtractor(net, layer="conv5", conv_pooling="max", max_batch=128)
    features, boxes = extractor(image)
    assert torch.equal(boxes, paper_grid(100, 75))
    assert features.shape == (len(boxes), net.arch.convs[4].out_channels)
    flat = PatchFeatureExtractor(net, layer="conv5", grid=_grid)
    assert flat(image)[0].shape[1] == flat.feature_size() == 64 * 6 * 6
    avg = PatchFeatureExtractor(net, layer="conv2", conv_pooling="avg", grid=_grid)
    expected = net(avg._patches(image, _grid(100, 75)), "conv2").mean(dim=(2, 3))
    assert torch.allclose(avg(image)[0], expected, rtol=1e-5, atol=1e-6)


def test_bad_images_are_reported_and_skipped(net, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_image().permute(1, 2, 0).numpy()).save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    reports = []
    extractor = PatchFeatureExtractor(net, grid=_grid)
    results = list(extractor.extract([good, broken, tmp_path / "missing.jpg", good],
                                     on_error=lambda source, error: reports.append(source)))
    assert [r.source for r in results] == [str(good), str(good)]
    assert torch.equal(results[0].features, results[1].features)
    assert reports == [str(broken), str(tmp_path / "missing.jpg")]
    with pytest.warns(UserWarning, match="skipped .*broken.jpg: cannot decode image"):
        assert len(list(extractor.extract([broken, good]))) == 1
    with pytest.raises(ImageError, match="broken.jpg"):
        extractor(broken)


def test_empty_grid_gives_empty_features(net):
    extractor = PatchFeatureExtractor(net, grid=lambda w, h: torch.zeros((0, 4), dtype=torch.int64))
    features, boxes = extractor(_image())
    assert features.shape == (0, 1024) and boxes.shape == (0, 4)


def test_every_image_source_gives_the_same_features(net, tmp_path):
    pixels = _image(60, 80).permute(1, 2, 0).contiguous().numpy()
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    extractor = PatchFeatureExtractor(net, grid=_grid)
    expected, _ = extractor(path)
    for source in (str(path), Image.open(path), pixels, torch.from_numpy(pixels).permute(2, 0, 1)):
        assert torch.equal(extractor(source)[0], expected)


def test_decoding_applies_exif_orientation_and_converts_to_rgb(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90 degrees clockwise
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    upright = load_image(path)
    assert upright.shape == (3, 30, 20)
    assert torch.equal(upright, torch.from_numpy(np.rot90(pixels, k=-1).copy()).permute(2, 0, 1))
    grey = tmp_path / "grey.png"
    Image.fromarray(pixels[:, :, 0]).save(grey)
    loaded = load_image(grey)
    assert loaded.shape == (3, 20, 30) and torch.equal(loaded[0], loaded[2])
    # transparency is composited over white: opaque pixels keep their colour, clear ones are
    # white, the others are the alpha-weighted mix (to Pillow's integer rounding)
    alpha = pixels[:, :, :1].copy()
    alpha[0, :], alpha[1, :] = 255, 0
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([pixels, alpha])).save(rgba)
    loaded = load_image(rgba).permute(1, 2, 0).numpy().astype(np.int32)
    mix = (pixels * alpha.astype(np.float64) + 255.0 * (255 - alpha)) / 255
    assert np.abs(loaded - mix).max() <= 1
    assert (loaded[0] == pixels[0]).all() and (loaded[1] == 255).all()


def test_argument_errors(net):
    with pytest.raises(ValueError, match=r"dtype must be one of torch.float32, torch.bfloat16 "
                                         r"on cpu, got torch.float16"):
        PatchFeatureExtractor(net, dtype=torch.float16)
    with pytest.raises(ValueError, match="conv_pooling must be one of flatten, max, avg"):
        PatchFeatureExtractor(net, conv_pooling="sum")
    with pytest.raises(ValueError, match="layer must be one of"):
        PatchFeatureExtractor(net, layer="pool5")
    with pytest.raises(ValueError, match="max_bytes must be a positive int, got 0"):
        PatchFeatureExtractor(net, max_bytes=0)
    with pytest.raises(TypeError, match="net must be a cnnxfer.nets.ConvNet"):
        PatchFeatureExtractor(torch.nn.Linear(2, 2))
    with pytest.raises(ImageError, match=r"image tensor must be \[3, H, W\]"):
        load_image(torch.zeros((4, 10, 10), dtype=torch.uint8))
    with pytest.raises(ImageError, match="uint8 or floating, got dtype int32"):
        load_image(np.zeros((5, 5, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="image must be a path, PIL image, numpy array or tensor"):
        load_image(42)


def test_byte_budget_bounds_the_batch(net):
    extractor = PatchFeatureExtractor(net, max_bytes=1 << 30)
    per_patch = extractor.bytes_per_patch()
    # the patch twice (the pieces of a batch and their concatenation) plus conv1's output, fp32
    assert per_patch == 4 * (2 * 3 * 224 * 224 + 24 * 54 * 54)
    small = PatchFeatureExtractor(net, max_bytes=3 * per_patch, grid=_grid)
    assert small.batch_size == 3
    assert PatchFeatureExtractor(net, max_bytes=1).batch_size == 1
    features, _ = small(_image())
    assert torch.allclose(features, PatchFeatureExtractor(net, grid=_grid)(_image())[0],
                          rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@needs_gpu_engine
def test_gpu_extractor_matches_cpu(dtype):
    cpu_net = nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)
    image = _image()
    expected, boxes = PatchFeatureExtractor(cpu_net, grid=_grid)(image)
    gpu_net = nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)
    features, gpu_boxes = PatchFeatureExtractor(gpu_net, grid=_grid, device="cuda",
                                                dtype=dtype)(image)
    assert features.device.type == "cuda" and features.dtype == dtype
    assert torch.equal(gpu_boxes.cpu(), boxes)
    error = ((features.float().cpu() - expected).norm() / expected.norm()).item()
    assert error < (1e-3 if dtype == torch.float32 else 2e-2)


def test_sixteen_bit_greyscale_is_rescaled(tmp_path):
    values = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    expected = torch.from_numpy(np.rint(values / 65535.0 * 255.0).astype(np.uint8))
    assert loaded.shape == (3, 30, 40)
    assert (loaded[0].int() - expected.int()).abs().max() <= 1
    assert torch.equal(loaded[0], loaded[2])


def test_zero_to_one_float_images_are_refused():
    with pytest.raises(ImageError, match=r"values in \[0, 1\].*multiply by 255"):
        load_image(torch.rand(3, 10, 10))
    with pytest.raises(ImageError, match=r"image array is floating point with values in \[0, 1\]"):
        load_image(np.random.rand(10, 10, 3).astype(np.float32))
    assert load_image(torch.rand(3, 10, 10) * 255).dtype == torch.float32


def test_bad_grid_boxes_skip_the_image_and_results_do_not_share_boxes(net):
    fixed = torch.tensor([[0, 0, 40, 40], [10, 10, 60, 60]])
    extractor = PatchFeatureExtractor(net, grid=lambda w, h: fixed)
    reports = []
    results = list(extractor.extract([_image(90, 130), _image(50, 50), _image(80, 80)],
                                     on_error=lambda source, error: reports.append(str(error))))
    assert len(results) == 2 and len(reports) == 1
    assert "boxes[1] = (x0, y0, x1, y1) = (10, 10, 60, 60)" in reports[0]
    assert "width=50" in reports[0]
    assert results[0].boxes.data_ptr() != results[1].boxes.data_ptr() != fixed.data_ptr()
    results[0].boxes.zero_()
    assert torch.equal(results[1].boxes, fixed)
