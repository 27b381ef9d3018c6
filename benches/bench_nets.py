"""AlexNet (BVLC layout, 227x227) and VGG-16 (torchvision layout, 224x224), random weights, to
FC7: cnnxfer's engine against plain PyTorch.

Batches of 32 patches (8 for VGG-16, 20x AlexNet's work per patch), providers timed in the same
run on the same input:
  cnnxfer  AlexNet with backend="engine" (oneDNN convolutions and GEMMs, fused ReLU+LRN+pool)
  eager    the same network with backend="reference": plain PyTorch layers (for bf16 on the CPU the
           LRN runs in fp32, as eager has no bf16 LRN kernel there)
  compile  torch.compile of that reference; for bf16 with channels_last inputs
           (both anchors hold their parameters in the case's dtype)
  floor    the convolutions (channels_last) and FC GEMMs alone, on inputs of the right shapes,
           in the engine's compute dtype (nets.compute_dtype): the part of the work the engine
           does not fuse away
End to end: one 500x375 JPEG, decoded, cut into the paper's 496 patches and run to FC7 by
PatchFeatureExtractor (seconds per image), against the reference path (extract_patches loop +
eager reference network; fp32 only).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnxfer import nets
from cnnxfer.features import PatchFeatureExtractor
from cnnxfer.features.grids import paper_grid
from cnnxfer.ops import reference

BATCH = 32
BATCHES = {"alexnet": BATCH, "vgg16": 8}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def _net(dtype: torch.dtype = torch.float32, name: str = "alexnet") -> nets.ConvNet:
    """The benched network; for the plain-PyTorch anchors, its parameters held in `dtype`, so
    they time the layers and not a cast of the weights on every call."""
    return nets.network(name, seed=0).to(dtype)


def _input(dtype, channels_last, name: str = "alexnet"):
    size = _net(name=name).arch.input_size
    x = torch.randn((BATCHES[name], 3, size, size),
                    generator=torch.Generator().manual_seed(0)) * 50
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _floor(dtype, name: str = "alexnet"):
    """The network's convolutions and GEMMs alone, each on a tensor of its input's shape, in the
    dtype and layout the engine computes in on this machine (fp32 for bf16 on CPUs that emulate
    bf16; channels_last convolutions on CPUs)."""
    net = _net(name=name)
    arch, batch = net.arch, BATCHES[name]
    dtype = nets.compute_dtype(dtype, torch.device("cpu"))
    fmt = torch.channels_last
    shapes = [(3, arch.input_size, arch.input_size)] + [out for _, out in arch.conv_shapes()]
    inputs = [torch.randn((batch, *shape)).to(dtype).contiguous(memory_format=fmt)
              for shape in shapes[:-1]]
    convs = [getattr(net, name) for name in arch.conv_names()]
    weights = [(c.weight.to(dtype).contiguous(memory_format=fmt), c.bias.to(dtype)) for c in convs]
    fcs = [getattr(net, name) for name in ("fc6", "fc7")]
    fc_in = [torch.randn((batch, fc.in_features)).to(dtype) for fc in fcs]
    fc_w = [(fc.bias.to(dtype), fc.weight.to(dtype).t()) for fc in fcs]

    def run():
        for x, (w, b), block in zip(inputs, weights, arch.convs):
            F.conv2d(x, w, b, block.stride, block.padding, 1, block.groups)
        for x, (b, w) in zip(fc_in, fc_w):
            torch.addmm(b, x, w)

    return run


@pytest.mark.parametrize("provider", ["cnnxfer", "eager", "compile", "floor"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BATCHES)
def test_net_fc7_batch(benchmark, record, note, name, dtype, provider):
    torch_dtype = DTYPES[dtype]
    net, anchor = _net(name=name), _net(torch_dtype, name)
    # fp32 runs NCHW (the reference network's layout); bf16 channels_last, the fast bf16 layout
    channels_last = dtype == "bf16"
    x = _input(torch_dtype, channels_last, name)
    with torch.inference_mode():
        if provider == "cnnxfer" and dtype == "bf16":
            fp32 = net(x.float(), "fc7")
            error = ((net(x, "fc7").float() - fp32).norm() / fp32.norm()).item()
            note(f"{name} fc7 bf16: relative error {error:.2e} against cnnxfer fp32 "
                 f"(compute dtype {nets.compute_dtype(torch_dtype, x.device)} on this CPU)")
        if provider == "compile":
            compiled = torch.compile(functools.partial(anchor.reference_forward, layer="fc7"))
            fn = functools.partial(compiled, x)
        else:
            fn = {
                "cnnxfer": lambda: net(x, "fc7"),
                "eager": lambda: anchor(x, "fc7", backend="reference"),
                "floor": _floor(torch_dtype, name),
            }[provider]
        layout = "channels_last" if channels_last else "nchw"
        record(f"{name} to fc7, batch {BATCHES[name]}, {dtype} {layout}", provider, benchmark,
               fn)


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    from PIL import Image

    rng = np.random.default_rng(0)
    # smooth content, as photos have: JPEG decode time depends on it
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("images") / "image.jpg"
    Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(path, quality=90)
    return path


@pytest.mark.parametrize("provider", ["cnnxfer", "eager"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_image_end_to_end(benchmark, record, jpeg, dtype, provider):
    if provider == "eager" and dtype == "bf16":
        pytest.skip("eager bf16 convolutions take minutes per image on CPUs without bf16 units")
    net, torch_dtype = _net(), DTYPES[dtype]
    if provider == "cnnxfer":
        extractor = PatchFeatureExtractor(net, layer="fc7", dtype=torch_dtype)
        fn = functools.partial(extractor, jpeg)
    else:
        from cnnxfer.features.images import load_image

        prep = net.preprocessing

        def fn():
            image = load_image(jpeg)
            boxes = paper_grid(image.shape[2], image.shape[1])
            table = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.int64), boxes], dim=1)
            with torch.inference_mode():
                out = []
                for start in range(0, len(table), BATCH):
                    patches = reference.extract_patches(
                        image[None], table[start:start + BATCH], size=net.arch.input_size,
                        mean=prep.mean, std=prep.std, out_dtype=torch_dtype,
                        reverse_channels=prep.reverse_channels)
                    out.append(net(patches, "fc7", backend="reference"))
            return torch.cat(out)
    record(f"one 500x375 jpeg, 496 patches to fc7, {dtype} (s/image)", provider, benchmark, fn)
