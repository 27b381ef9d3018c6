"""Shared convolutions: one image's patch features, shared mode against the per-patch mode.

Case: the paper's grid (496 patches) on a 500x375 image, AlexNet (full width, random weights:
the speed does not depend on the values) to fc7, fp32, and bf16 where the CPU computes it
natively. Providers, same run:
  cnnxfer     PatchFeatureExtractor(mode="shared"): conv1..conv5 once per scale on the resized
              image, each patch's conv5 window cut from the map, FC6/FC7 per patch.
  per_patch   PatchFeatureExtractor(mode="per_patch"), the engine at its floor per patch (the
              paper's computation): the ratio is the speed-up (target >= 3.5x, against about
              4.3x fewer multiply-adds).
  eager       plain PyTorch per patch: crop + F.interpolate per patch, the reference network.
Notes under the table: the multiply-add ratio (and VGG-16's, from its shapes) and the FC7
agreement of the two modes (features.shared.agreement: centred cosine per patch, median and
5th percentile, against two different patches; nearest-neighbour retrieval), on the paper's
grid and on the aligned grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnxfer import PatchFeatureExtractor
from cnnxfer.features import shared
from cnnxfer.nets import alexnet, network
from cnnxfer.ops import compute_dtype, reference

DTYPES = ("fp32", "bf16")


@pytest.fixture(scope="module")
def setting():
    coarse = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BILINEAR))
    return alexnet("alexnet", seed=0), torch.from_numpy(pixels.copy()).permute(2, 0, 1)


@pytest.mark.parametrize("provider", ("cnnxfer", "per_patch", "eager"))
@pytest.mark.parametrize("name", DTYPES)
def test_shared_against_per_patch(benchmark, record, note, setting, name, provider):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
    if dtype == torch.bfloat16 and compute_dtype(dtype, torch.device("cpu")) != dtype:
        pytest.skip("this CPU has no native bf16: the bf16 case would time an emulation")
    net, image = setting
    case = f"patch features 500x375 (496 patches) fc7 {name}"
    if provider == "eager":
        extractor = PatchFeatureExtractor(net, dtype=dtype)
        boxes = extractor.grid(500, 375)
        table = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.int64), boxes], dim=1)
        prep = net.preprocessing

        def fn():
            patches = reference.extract_patches(image[None].to(dtype), table,
                                                size=prep.input_size, mean=prep.mean,
                                                std=prep.std, out_dtype=dtype,
                                                reverse_channels=prep.reverse_channels)
            for begin in range(0, len(patches), 32):
                net(patches[begin:begin + 32], "fc7", backend="reference")
        record(case, provider, benchmark, fn)
        return
    mode = "shared" if provider == "cnnxfer" else "per_patch"
    extractor = PatchFeatureExtractor(net, dtype=dtype, mode=mode)
    record(case, provider, benchmark, lambda: extractor(image))
    if provider == "per_patch":
        boxes = extractor.grid(500, 375)
        full, saved = shared.multiply_adds(net, 500, 375, boxes)
        with torch.device("meta"):  # shapes only
            vgg16 = network("vgg16", num_classes=None)
        vgg_full, vgg_saved = shared.multiply_adds(vgg16, 500, 375, boxes)
        note(f"{case}: shared does {full / saved:.2f}x fewer multiply-adds "
             f"(VGG-16: {vgg_full / vgg_saved:.2f}x)")
        for grid in ("paper", "aligned"):
            settings = dict(dtype=dtype, grid=shared.network_grid(net, grid))
            per_patch, _ = PatchFeatureExtractor(net, **settings)(image)
            sharing, _ = PatchFeatureExtractor(net, mode="shared", **settings)(image)
            agree = shared.agreement(per_patch, sharing)
            note(f"{case}, {grid} grid ({len(per_patch)} patches): FC7 shared vs per patch, "
                 f"centred cosine median {agree['cosine_median']:.3f}, 5th percentile "
                 f"{agree['cosine_p5']:.3f} (two different patches: "
                 f"{agree['other_patch_median']:.3f}); own patch nearest for "
                 f"{100 * agree['retrieval']:.1f}%")
