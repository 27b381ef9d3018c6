"""Shared convolutions (cnnxfer.features.shared, PatchFeatureExtractor(mode="shared")) against
the per-patch path: exact where the geometry allows it, bounded where it does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnxfer import PatchFeatureExtractor
from cnnxfer.features import shared
from cnnxfer.features.grids import paper_grid
from cnnxfer.nets import AlexNet, Architecture, ConvBlock, alexnet
from cnnxfer.ops import LRN, MaxPool, extract_patches


def _photo(width: int, height: int, seed: int = 0) -> torch.Tensor:
    coarse = np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def _unpadded(seed: int = 0) -> AlexNet:
    """An AlexNet-like chain without any padding (so a conv5 cell sees only the pixels of its
    receptive field, in a patch or in a whole image alike), LRN and ceil-mode pools included,
    biases random: 195 px -> conv5 map 3 x 3 per patch, total stride 16."""
    pool = MaxPool(3, 2, 0, ceil_mode=True)
    convs = (ConvBlock(16, 11, 4, 0, 1, LRN(5, 1e-4, 0.75, 1.0), pool),
             ConvBlock(32, 5, 1, 0, 2, LRN(5, 1e-4, 0.75, 1.0), pool),
             ConvBlock(32, 3, 1, 0, 1), ConvBlock(32, 3, 1, 0, 2), ConvBlock(16, 3, 1, 0, 2))
    arch = Architecture("unpadded", convs, fc=(64, 64), num_classes=None, input_size=195)
    net = AlexNet(arch)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return net


def test_aligned_windows_equal_the_per_patch_network_without_padding():
    """Where nothing differs but the sharing: patches at whole-cell offsets, of the network's
    input size (no resampling), through a chain without padding. Every window equals the
    per-patch conv5 output to float rounding, and so do the FC layers after it."""
    net = _unpadded()
    stride, n = shared.total_stride(net), shared.window_cells(net)
    assert (stride, n) == (16, 3)
    side = net.arch.input_size
    image = _photo(320, 320, seed=1)
    starts = [(0, 0), (stride, 0), (3 * stride, 2 * stride), (5 * stride, 7 * stride)]
    boxes = torch.tensor([[x, y, x + side, y + side] for x, y in starts])
    windows = shared.conv5_windows(net, image, boxes)
    prep = net.preprocessing
    patches = extract_patches(image, boxes, size=side, mean=prep.mean, std=prep.std,
                              reverse_channels=prep.reverse_channels)
    expected = net(patches, "conv5")
    torch.testing.assert_close(windows, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(windows, "fc7", start="conv5"), net(patches, "fc7"),
                               rtol=1e-4, atol=1e-5)


def test_the_border_effect_on_alexnet_is_bounded():
    """AlexNet's layout (padded convs, 227 px, random weights) on the paper's grid at 500x375:
    the per-patch network zero-pads each patch's maps at its border where the shared map sees
    the neighbouring image, the patches are resampled from the whole image rather than from
    their crop, and most windows are not at whole-cell offsets (bilinear sampling).

    Raw cosines say little here: random FC7 vectors share a large common component (two
    different patches' FC7 have a raw cosine of about 0.94). So the features are compared
    after removing the mean over the image's patches: measured median 0.60, 5th percentile
    0.43, against 0.09 for two different patches; and the shared FC7 of a patch is nearer to
    its own per-patch FC7 than to any other patch's for 99.4% of the patches."""
    net = alexnet("alexnet", width=0.25, seed=0)
    image = _photo(500, 375)
    per_patch, boxes = PatchFeatureExtractor(net)(image)
    sharing, shared_boxes = PatchFeatureExtractor(net, mode="shared")(image)
    assert torch.equal(boxes, shared_boxes) and sharing.shape == per_patch.shape
    mean = per_patch.mean(0)
    cosine = F.cosine_similarity(per_patch - mean, sharing - mean)
    other = F.cosine_similarity(per_patch - mean, (per_patch - mean).roll(1, 0))
    assert cosine.median() > 0.5 and cosine.quantile(0.05) > 0.35, cosine.quantile(
        torch.tensor([0.05, 0.5]))
    assert other.median() < 0.2
    nearest = torch.cdist(sharing - mean, per_patch - mean).argmin(dim=1)
    retrieval = (nearest == torch.arange(len(boxes))).double().mean()
    assert retrieval > 0.97
    # features.shared.agreement reports the same figures
    agree = shared.agreement(per_patch, sharing)
    assert agree["cosine_median"] == pytest.approx(float(cosine.median()), abs=1e-5)
    assert agree["other_patch_median"] == pytest.approx(float(other.median()), abs=1e-5)
    assert agree["retrieval"] == pytest.approx(float(retrieval))


def test_windows_are_cut_exactly_or_sampled_at_the_projected_cells():
    """The window logic on maps of known values: whole-cell starts (within half an original
    pixel) give the n x n cells, others the map sampled bilinearly at the fractional cells
    (checked against F.grid_sample), and the map's edge repeats."""
    conv5 = torch.arange(2 * 8 * 9, dtype=torch.float32).reshape(2, 8, 9)
    stride, n = 32, 3
    starts = torch.tensor([[64.0, 32.0], [80.0, 32.0], [224.0, 192.0], [72.0, 56.0],
                           [64.0 + 5, 32.0 - 5]], dtype=torch.float64)
    out = shared._windows(conv5, starts, stride, n, factor=1.0)
    torch.testing.assert_close(out[0], conv5[:, 1:4, 2:5])          # cells (2, 1): exact
    # (2.5, 1) cells: on this linear map (value = 72 c + 9 y + x) bilinear sampling is exact,
    # and it tells x from y
    torch.testing.assert_close(out[1], conv5[:, 1:4, 2:5] + 0.5)
    torch.testing.assert_close(out[3], conv5[:, 1:4, 2:5] + 0.25 + 9 * 0.75)
    # (7, 6) + 3 cells runs past the 9 x 8 map: the last row and column repeat
    edge = conv5[:, [6, 7, 7], :][:, :, [7, 8, 8]]
    torch.testing.assert_close(out[2], edge)
    # 5 resized pixels off a whole cell are within half an original pixel when the image was
    # enlarged 10x (factor 10): exact; at factor 1 they are sampled
    snapped = shared._windows(conv5, starts[4:], stride, n, factor=10.0)
    torch.testing.assert_close(snapped[0], conv5[:, 1:4, 2:5])
    torch.testing.assert_close(out[4], conv5[:, 1:4, 2:5] + 5 / 32 - 9 * 5 / 32)
    # a random map, fractional starts inside it, against grid_sample at the cell centres
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((4, 10, 12), generator=generator)
    starts = torch.rand((6, 2), generator=generator, dtype=torch.float64) * 5 * stride
    got = shared._windows(noise, starts, stride, n, factor=1.0)
    cells = starts / stride + torch.arange(n, dtype=torch.float64)[:, None, None]  # [n, K, 2]
    x = (2 * cells[..., 0] + 1) / noise.shape[2] - 1                               # [n, K]
    y = (2 * cells[..., 1] + 1) / noise.shape[1] - 1
    grid = torch.stack(torch.broadcast_tensors(x.T[:, None, :], y.T[:, :, None]), -1).float()
    expected = F.grid_sample(noise[None].expand(6, -1, -1, -1), grid, align_corners=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_shared_mode_saves_multiply_adds_on_the_paper_grid():
    net = alexnet("alexnet", seed=0)
    boxes = paper_grid(500, 375)
    per_patch, sharing = shared.multiply_adds(net, 500, 375, boxes)
    assert len(boxes) == 496 and 4.0 < per_patch / sharing < 4.8


def test_shared_mode_conv5_dtypes_and_errors():
    net = alexnet("alexnet", width=0.125, seed=0)
    image = _photo(200, 150)
    features, boxes = PatchFeatureExtractor(net, layer="conv5", conv_pooling="max",
                                            mode="shared")(image)
    assert features.shape == (len(boxes), net.arch.conv_shapes()[-1][1][0])
    bf16, _ = PatchFeatureExtractor(net, dtype=torch.bfloat16, mode="shared")(image)
    fp32, _ = PatchFeatureExtractor(net, mode="shared")(image)
    assert bf16.dtype == torch.bfloat16
    assert F.cosine_similarity(bf16.float(), fp32).min() > 0.98
    with pytest.raises(ValueError, match="mode must be one of per_patch, shared"):
        PatchFeatureExtractor(net, mode="fast")
    with pytest.raises(ValueError, match="gives features of conv5 or a later layer"):
        PatchFeatureExtractor(net, layer="conv3", mode="shared")
    with pytest.raises(ValueError, match="needs square boxes"):
        shared.conv5_windows(net, image, torch.tensor([[0, 0, 40, 30]]))
    with pytest.raises(ValueError, match=r"x must be \[N, 32, 6, 6\] conv5 features"):
        net(torch.zeros(1, 32, 5, 5), "fc7", start="conv5")


def test_a_map_over_the_budget_is_computed_in_bands_with_the_same_cells(monkeypatch):
    """Item 4: the largest scale's map in bands of rows (receptive-field overlap, starts at a
    multiple of the total stride) equals the map computed whole, to float rounding."""
    net = alexnet("alexnet", width=0.125, seed=0)
    size, offset, stride = shared.receptive_field(net)
    assert (size, offset, stride) == (195, 64, 32)  # AlexNet's conv5 cell after pool5
    x = shared.resized(_photo(500, 375), 227 / 94, net, torch.float32)  # the paper's λ = 4
    whole, tiles = shared.conv5_map(net, x)
    assert tiles == 1
    per_pixel = shared.bytes_per_pixel(net, torch.float32)
    budget = int(per_pixel * x.shape[3] * 300)  # bands of 288 rows: 4 or more of them
    banded, tiles = shared.conv5_map(net, x, budget)
    assert tiles >= 4 and banded.shape == whole.shape
    torch.testing.assert_close(banded, whole, rtol=1e-4, atol=1e-5)
    # the extractor passes its byte budget down: the same features, in bands
    image = _photo(300, 225)
    expected, _ = PatchFeatureExtractor(net, mode="shared")(image)
    small = int(per_pixel * 227 / 45 * 300 * 300)
    tiles, whole_map = [], shared.conv5_map

    def counted(*args, **kwargs):
        result = whole_map(*args, **kwargs)
        tiles.append(result[1])
        return result
    monkeypatch.setattr(shared, "conv5_map", counted)
    got, _ = PatchFeatureExtractor(net, mode="shared", max_bytes=small)(image)
    assert len(tiles) == 9 and max(tiles) > 1, tiles  # the large scales came in bands
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="too small for shared convolutions"):
        shared.conv5_map(net, x, int(per_pixel * x.shape[3] * 100))


def test_grids_by_name_for_a_network():
    from cnnxfer.features.grids import aligned_grid
    from cnnxfer.transfer import FeatureSettings

    net = alexnet("alexnet", width=0.25, seed=0)
    assert torch.equal(shared.network_grid(net)(500, 375), paper_grid(500, 375))
    assert torch.equal(shared.network_grid(net, "aligned", scales=(1.0, 2.0))(500, 375),
                       aligned_grid(500, 375, total_stride=32, input_size=227, scales=(1, 2)))
    with pytest.raises(ValueError, match="grid must be one of paper, aligned, got 'dense'"):
        shared.network_grid(net, "dense")
    assert FeatureSettings(grid="aligned").header("f")["grid_name"] == "aligned"
    assert "grid_name" not in FeatureSettings().header("f")  # files of 0.2 stay valid


def test_shared_mode_warns_where_a_cell_sees_more_than_a_patch():
    small = alexnet("alexnet", width=0.25, input_size=64, seed=0)  # the generated world's
    with pytest.warns(UserWarning, match=r"a conv5 cell of alexnet sees 195 px, more than its "
                                         r"64 px input"):
        PatchFeatureExtractor(small, mode="shared")
