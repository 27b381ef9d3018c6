"""Shared convolutions: conv1..conv5 run once per scale on the whole resized image, and each
patch's conv5 window is cut from that map (as SPP-net and Fast R-CNN later did), instead of
running the conv blocks once per patch.

At a scale whose square patches have side s, the image is resized by r = S / s (S: the
network's input size), so that a patch becomes S x S pixels, exactly as the per-patch path
resizes it. A patch at (x0, y0) then starts at (x0 * r, y0 * r) in the resized image, that is
at (x0 * r / T, y0 * r / T) cells of the conv5 map (T: the network's total stride, 32 for
AlexNet). Its window is the n x n cells from there (n: conv5's side for one S x S input, 6 for
AlexNet at 227 px):
  - exact when the start is a whole number of cells (within half a pixel of the original
    image): the same cells the per-patch network computes, except near the window's border,
    where the per-patch network saw zero padding and the shared map sees the neighbouring
    image (the border effect);
  - otherwise sampled bilinearly at the projected, fractional cell positions (one sample per
    cell, as RoIAlign), which follows a sub-cell shift of the patch far better than max-pooling
    the n + 1 covering cells to n x n (the issue's first choice): measured on random AlexNet
    weights, the shared FC7 of a patch is nearest to its own per-patch FC7 for 99.9% of the
    paper grid's patches with bilinear windows, 13% with max-pooled ones.
Cells beyond the map's last one (right and bottom edges, where rounding leaves the map a cell
short) repeat the last cell.

For the paper's grid on a 500x375 image this does about 4.3x fewer multiply-adds than 496
separate patches (the FC layers still run per patch).

"conv5" here stands for the network's last conv layer (net.arch.last_conv: conv5_3 for VGG-16,
conv6 for OverFeat's accurate net); every function works for any chain of conv blocks.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..nets import ConvNet
from ..ops.geometry import as_padding
from .extractor import peak_bytes
from .grids import DEFAULT_OVERLAP, GRIDS, PAPER_SCALES, aligned_grid, paper_grid


def network_grid(net: ConvNet, name: str = "paper", *, scales=PAPER_SCALES,
                 overlap: float = DEFAULT_OVERLAP) -> Callable[[int, int], torch.Tensor]:
    """The grid `name` ("paper" or "aligned", grids.GRIDS) for `net` as grid(width, height):
    "aligned" steps by whole cells of net's last conv map (grids.aligned_grid with its total
    stride and input size), so that mode="shared" cuts most windows exactly."""
    if name == "paper":
        return functools.partial(paper_grid, scales=tuple(scales), overlap=overlap)
    if name == "aligned":
        return functools.partial(aligned_grid, total_stride=total_stride(net),
                                 input_size=net.arch.input_size, scales=tuple(scales),
                                 overlap=overlap)
    raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {name!r}")


def total_stride(net: ConvNet) -> int:
    """T: input pixels per conv5 cell (the product of the conv and pooling strides)."""
    return receptive_field(net)[2]


def receptive_field(net: ConvNet) -> tuple[int, int, int]:
    """(size, offset, stride) of one conv5 cell: cell i sees input pixels
    [i * stride - offset, i * stride - offset + size) along each axis."""
    size, offset, jump = 1, 0, 1
    for block in net.arch.convs:
        layers = [(block.kernel_size, block.stride, block.padding)]
        if block.pool is not None:
            kernel = block.pool.kernel_size
            stride = block.pool.stride
            layers.append((kernel if isinstance(kernel, int) else kernel[0],
                           stride if isinstance(stride, int) else stride[0],
                           as_padding(block.pool.padding)[0]))
        for kernel, stride, padding in layers:
            size += (kernel - 1) * jump
            offset += padding * jump
            jump *= stride
    return size, offset, jump


def bytes_per_pixel(net: ConvNet, dtype: torch.dtype) -> float:
    """Peak bytes of the conv blocks per input pixel: the extractor's estimate for one
    input_size image (features.extractor.peak_bytes), spread over its pixels."""
    return peak_bytes(net.arch, dtype, fc=False) / net.arch.input_size ** 2


def conv5_map(net: ConvNet, x: torch.Tensor, max_bytes: int | None = None
              ) -> tuple[torch.Tensor, int]:
    """(conv5 of the normalized image x [1, 3, h, w]: [C, mh, mw], the number of tiles it was
    computed in). When the whole image's activations would exceed max_bytes, the image is cut
    into bands of rows, each with the receptive field's overlap, starting at a multiple of the
    total stride (so every layer's grid lines up with the whole image's); a band keeps only the
    cells whose receptive field lies inside it (or reaches the image's real edge), which are
    the whole image's cells, bit for bit up to the convolutions' summation order."""
    height, width = int(x.shape[2]), int(x.shape[3])
    per_pixel = bytes_per_pixel(net, x.dtype)
    if max_bytes is None or height * width * per_pixel <= max_bytes:
        return net(x, net.arch.last_conv)[0], 1
    size, offset, stride = receptive_field(net)
    rows = int(max_bytes // (per_pixel * width)) // stride * stride
    if rows < size + stride:
        raise ValueError(f"max_bytes={max_bytes} is too small for shared convolutions on a "
                         f"{width}-pixel-wide map: a band needs {size + stride} rows "
                         f"({(size + stride) * width * per_pixel / 2**20:.0f} MiB)")
    bands, cell, tiles = [], 0, 0
    while True:
        top = max(0, (cell * stride - offset) // stride * stride)
        bottom = min(height, top + rows)
        band = net(x[:, :, top:bottom], net.arch.last_conv)[0]
        tiles += 1
        first = cell - top // stride
        if bottom == height:  # the image's real bottom edge: padded alike, all cells valid
            bands.append(band[:, first:])
            return torch.cat(bands, dim=1), tiles
        last = (bottom - top + offset - size) // stride  # its field ends inside the band
        bands.append(band[:, first:last + 1])
        cell += last + 1 - first


def window_cells(net: ConvNet) -> int:
    """n: the side of conv5's map for one input_size x input_size patch."""
    return int(net.arch.conv_shapes()[-1][1][1])


def resized(image: torch.Tensor, factor: float, net: ConvNet, dtype: torch.dtype
            ) -> torch.Tensor:
    """The whole image resized by `factor` as extract_patches resizes each patch (bilinear,
    antialiased when shrinking, pixel centres aligned: the sampling positions of a patch
    starting at x0 * factor are the per-patch ones), normalized: [1, 3, h, w] in `dtype`."""
    prep = net.preprocessing
    x = image.to(torch.float32)[None]
    x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False,
                      antialias=factor < 1, recompute_scale_factor=False)
    if prep.reverse_channels:
        x = x.flip(1)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def conv5_windows(net: ConvNet, image: torch.Tensor, boxes: torch.Tensor, *,
                  dtype: torch.dtype = torch.float32, channels_last: bool = True,
                  max_bytes: int | None = None) -> torch.Tensor:
    """[K, C, n, n] conv5 windows of the square `boxes` [K, 4] of `image` ([3, H, W], uint8 or
    pixel-valued float), in `dtype`; the FC layers take them as net(windows, layer,
    start=net.arch.last_conv). max_bytes: the conv blocks' activation budget per map
    (conv5_map tiles a scale whose whole map would not fit)."""
    if boxes.numel() and not bool(((boxes[:, 2] - boxes[:, 0]) == (boxes[:, 3] - boxes[:, 1]))
                                   .all()):
        raise ValueError("mode='shared' needs square boxes (the paper's grid gives them): a "
                         "patch's window in a shared map is n x n cells")
    size, stride, n = net.arch.input_size, total_stride(net), window_cells(net)
    channels = net.arch.conv_shapes()[-1][1][0]
    out = torch.empty((len(boxes), channels, n, n), dtype=dtype, device=image.device)
    sides = boxes[:, 2] - boxes[:, 0]
    for side in torch.unique(sides).tolist():
        rows = (sides == side).nonzero().flatten()
        factor = size / side
        x = resized(image, factor, net, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        conv5, _ = conv5_map(net, x, max_bytes)  # [C, mh, mw]: the whole map at this scale
        out[rows] = _windows(conv5, boxes[rows, :2].to(torch.float64) * factor, stride, n,
                             factor)
    return out


def _windows(conv5: torch.Tensor, starts: torch.Tensor, stride: int, n: int,
             factor: float) -> torch.Tensor:
    """[K, C, n, n] windows of conv5 [C, mh, mw] for patches starting at `starts` [K, 2]
    (x, y) in resized pixels: the n x n cells from the window's first cell, exact when the
    start is within half an original pixel of a whole cell, else sampled bilinearly at the
    fractional cell positions (one sample per cell, as RoIAlign)."""
    cells = starts / stride
    nearest = cells.round()
    # within half an original pixel of a cell boundary: the exact window
    exact = ((cells - nearest).abs() * stride <= factor / 2 + 1e-9).all(dim=1)
    cells = torch.where(exact[:, None], nearest, cells)
    first = cells.floor()
    weight = (cells - first).to(device=conv5.device, dtype=torch.float32)  # [K, 2]: (x, y)
    first = first.to(torch.int64)
    xs = first[:, 0].clamp(0, conv5.shape[2] - 1).to(conv5.device)
    ys = first[:, 1].clamp(0, conv5.shape[1] - 1).to(conv5.device)
    # Cells past the map's edge repeat its last ones, for windows that run past it.
    padded = F.pad(conv5[None], (0, n + 1, 0, n + 1), mode="replicate")[0]
    views = padded.unfold(1, n, 1).unfold(2, n, 1)  # every n x n window: [C, H', W', n, n]

    def window(dy: int, dx: int) -> torch.Tensor:  # [K, C, n, n], one gather
        return views[:, ys + dy, xs + dx].permute(1, 0, 2, 3)

    wx = weight[:, 0].view(-1, 1, 1, 1).to(conv5.dtype)
    wy = weight[:, 1].view(-1, 1, 1, 1).to(conv5.dtype)
    top = torch.lerp(window(0, 0), window(0, 1), wx)
    bottom = torch.lerp(window(1, 0), window(1, 1), wx)
    return torch.lerp(top, bottom, wy)


def multiply_adds(net: ConvNet, width: int, height: int, boxes: torch.Tensor) -> tuple[int, int]:
    """(per-patch, shared) multiply-adds of the conv and FC layers for these boxes of a
    width x height image: what the shared mode saves, computed from the layer shapes."""
    arch = net.arch

    def conv_macs(h: int, w: int) -> int:
        total, channels = 0, 3
        for block, (conv, _) in zip(arch.convs, arch.conv_shapes(h, w)):
            total += math.prod(conv) * block.kernel_size ** 2 * channels // block.groups
            channels = block.out_channels
        return total

    widths = [math.prod(arch.fc_input_shape()), *arch.fc]
    fc = sum(a * b for a, b in zip(widths, widths[1:]))
    per_patch = len(boxes) * (conv_macs(arch.input_size, arch.input_size) + fc)
    shared = len(boxes) * fc
    for side in torch.unique(boxes[:, 2] - boxes[:, 0]).tolist():
        factor = arch.input_size / side
        shared += conv_macs(math.floor(height * factor), math.floor(width * factor))
    return per_patch, shared


def agreement(per_patch: torch.Tensor, sharing: torch.Tensor) -> dict[str, float]:
    """How closely the shared features [K, D] of K patches of one image follow their per-patch
    ones [K, D]. Raw cosines flatter both: FC features share a large common component (two
    different patches of an image often have a raw cosine above 0.9), so the vectors are first
    centred on the per-patch mean over the K patches. Returns:
      cosine_median, cosine_p5: centred cosine of each patch's two features;
      other_patch_median: the same between two different patches (each with the next one):
          the level that means "unrelated";
      retrieval: the fraction of patches whose shared feature is nearer to its own per-patch
          feature than to any other patch's (Euclidean, centred)."""
    a, b = per_patch.double(), sharing.double()
    mean = a.mean(dim=0)
    a, b = a - mean, b - mean
    cosine = F.cosine_similarity(a, b)
    other = F.cosine_similarity(a, a.roll(1, dims=0))
    nearest = torch.cdist(b, a).argmin(dim=1)
    return {"cosine_median": float(cosine.median()),
            "cosine_p5": float(cosine.quantile(0.05)),
            "other_patch_median": float(other.median()),
            "retrieval": float((nearest == torch.arange(len(a), device=a.device)).double()
                               .mean())}
