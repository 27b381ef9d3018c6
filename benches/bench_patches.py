"""extract_patches on a 500x375 uint8 image with the paper's grid (496 boxes), and a batch of 8.

Providers, timed in the same run:
  cnnxfer      ops.extract_patches (antialias=True, the default)
  loop         cnnxfer.ops.reference.extract_patches: crop + F.interpolate per box, in Python
  grid_sample  one batched F.grid_sample over all boxes (plain bilinear, no antialias), normalize,
               cast: the usual way to batch crops in PyTorch
  floor        writing an output of the same size and dtype (fresh tensor, fill): the write floor
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnxfer import ops
from cnnxfer.features.grids import paper_grid
from cnnxfer.ops import reference

WIDTH, HEIGHT, SIZE = 500, 375, 224
MEAN, STD = [123.68, 116.28, 103.53], [58.40, 57.12, 57.38]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _image(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=generator)


def _grid_sample(image, boxes, dtype, channels_last):
    """All boxes at once: a sampling grid per box, one F.grid_sample."""
    k = boxes.shape[0]
    source = image.float()[None].expand(k, -1, -1, -1)
    steps = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
    x0, y0, x1, y1 = boxes.float().unbind(1)
    xs = x0[:, None] + steps[None] * (x1 - x0)[:, None]  # pixel coordinates of sample centres
    ys = y0[:, None] + steps[None] * (y1 - y0)[:, None]
    gx = xs / WIDTH * 2 - 1
    gy = ys / HEIGHT * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(k, SIZE, SIZE), gy[:, :, None].expand(k, SIZE, SIZE)],
                       dim=-1)
    out = F.grid_sample(source, grid, mode="bilinear", align_corners=False)
    out = (out - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    out = out.to(dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@pytest.mark.parametrize("provider", ["cnnxfer", "loop", "grid_sample", "floor"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_extract_patches_one_image(benchmark, record, dtype, layout, provider):
    image = _image()
    boxes = paper_grid(WIDTH, HEIGHT)
    table = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.int64), boxes], dim=1)
    out_dtype, channels_last = DTYPES[dtype], layout == "channels_last"
    kwargs = dict(size=SIZE, mean=MEAN, std=STD, out_dtype=out_dtype, channels_last=channels_last)
    fn = {
        "cnnxfer": lambda: ops.extract_patches(image, boxes, **kwargs),
        "loop": lambda: reference.extract_patches(image[None], table, **kwargs),
        "grid_sample": lambda: _grid_sample(image, boxes, out_dtype, channels_last),
        "floor": lambda: torch.empty((len(boxes), 3, SIZE, SIZE), dtype=out_dtype).fill_(1.0),
    }[provider]
    record(f"extract_patches 500x375 {len(boxes)} boxes {dtype} {layout}", provider, benchmark, fn)


@pytest.mark.parametrize("provider", ["cnnxfer", "floor"])
def test_extract_patches_batch_of_8(benchmark, record, provider):
    images = torch.stack([_image(seed) for seed in range(8)])
    boxes = paper_grid(WIDTH, HEIGHT)
    table = torch.cat([torch.arange(8).repeat_interleave(len(boxes))[:, None],
                       boxes.repeat(8, 1)], dim=1)
    fn = {
        "cnnxfer": lambda: ops.extract_patches(images, table, size=SIZE, mean=MEAN, std=STD,
                                               out_dtype=torch.bfloat16, channels_last=True),
        "floor": lambda: torch.empty((len(table), 3, SIZE, SIZE), dtype=torch.bfloat16).fill_(1.0),
    }[provider]
    record(f"extract_patches 8 images x {len(boxes)} boxes bf16 channels_last", provider,
           benchmark, fn)
