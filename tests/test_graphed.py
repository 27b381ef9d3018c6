"""GraphedExtractor (the per-image pipeline as one CUDA graph) and the capture-safe patch launcher
it is built on (kernels.patches.PreparedPatches).

Without a GPU the fixed-shape pipeline runs eagerly and must equal PatchFeatureExtractor, and the
prepared launcher runs in Triton's interpreter against ops.extract_patches; the GPU tier captures
the graph and checks its replays against the eager extractor.
"""
from __future__ import annotations

import math

import pytest
import torch

from cnnxfer import PatchFeatureExtractor, nets, ops
from cnnxfer.features import GraphedExtractor
from cnnxfer.features.grids import dense_grid

from devices import TRITON_DEVICE, needs_gpu_engine, needs_triton

WIDTH, HEIGHT = 130, 90


@pytest.fixture(scope="module")
def net():
    return nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)


def _image(seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=generator)


def _grid(width, height):
    return dense_grid(width, height, side=min(width, height) // 2, stride=min(width, height) // 4)


def test_eager_pipeline_equals_the_extractor(net):
    graphed = GraphedExtractor(net, WIDTH, HEIGHT, grid=_grid, dtype=torch.float32, device="cpu")
    for seed in (0, 1):  # the second image replaces the first in the fixed buffer
        image = _image(seed)
        expected, boxes = PatchFeatureExtractor(net, grid=_grid, max_batch=64)(image)
        features, graphed_boxes = graphed(image)
        assert torch.equal(graphed_boxes, boxes)
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_conv_layers_come_flattened(net):
    graphed = GraphedExtractor(net, WIDTH, HEIGHT, layer="conv5", grid=_grid,
                               dtype=torch.float32, device="cpu")
    features, boxes = graphed(_image())
    assert features.shape == (len(boxes), math.prod(net.arch.output_shape("conv5")))


def test_errors_name_the_arguments(net):
    with pytest.raises(ValueError, match="capture=True needs a CUDA device"):
        GraphedExtractor(net, WIDTH, HEIGHT, device="cpu", capture=True)
    with pytest.raises(ValueError, match="width must be a positive int"):
        GraphedExtractor(net, 0, HEIGHT, device="cpu")
    graphed = GraphedExtractor(net, WIDTH, HEIGHT, grid=_grid, device="cpu",
                               dtype=torch.float32)
    with pytest.raises(ValueError, match="image is 131x90 but this extractor was built for "
                                         "130x90"):
        graphed(torch.zeros((3, HEIGHT, WIDTH + 1), dtype=torch.uint8))
    with pytest.raises(ValueError, match="image must be uint8"):
        graphed(torch.zeros((3, HEIGHT, WIDTH), dtype=torch.float32))


@needs_triton
def test_prepared_patches_equal_the_op():
    from cnnxfer.kernels.patches import PreparedPatches

    image = _image(2).to(TRITON_DEVICE)
    boxes = torch.as_tensor(_grid(WIDTH, HEIGHT))
    table = torch.cat([torch.zeros((len(boxes), 1), dtype=torch.int64), boxes], dim=1)
    mean, std = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]
    launch = PreparedPatches(image[None], table.to(TRITON_DEVICE), 32, mean, std,
                             torch.float32, True, reverse_channels=True)
    out = launch(image[None], launch.new_output())
    expected = ops.extract_patches(image, boxes, size=32, mean=mean, std=std,
                                   out_dtype=torch.float32, channels_last=True,
                                   reverse_channels=True, backend="reference")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.cpu(), expected.cpu(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="images must be laid out as prepared"):
        launch(image[None].float(), out)


@needs_gpu_engine
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_graph_replays_equal_the_eager_extractor(dtype):
    net = nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)  # its own: moved to CUDA
    graphed = GraphedExtractor(net, WIDTH, HEIGHT, grid=_grid, dtype=dtype, device="cuda")
    assert graphed._graph is not None
    extractor = PatchFeatureExtractor(net, grid=_grid, device="cuda", dtype=dtype, max_batch=64)
    for seed in (0, 1, 0):  # a new image each replay, then the first again
        image = _image(seed)
        expected, _ = extractor(image)
        features, _ = graphed(image)
        assert features.dtype == dtype and features.device.type == "cuda"
        error = ((features.float() - expected.float()).norm() / expected.float().norm()).item()
        assert error < (1e-3 if dtype == torch.float32 else 2e-2), (seed, error)
