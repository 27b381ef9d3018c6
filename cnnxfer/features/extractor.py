"""Mid-level features of every patch of an image: decode -> grid -> extract_patches -> network.

    net = cnnxfer.weights.load("alexnet.safetensors")
    extractor = cnnxfer.PatchFeatureExtractor(net, layer="fc7")
    features, boxes = extractor("photo.jpg")       # [K, 4096], [K, 4] (x0, y0, x1, y1)
    for result in extractor.extract(paths):        # patches of several images share batches
        ...

The patches of one or more images go through the network in batches whose size follows a byte
budget, so a big image or a long list of images never holds more than that in activations. The
network's preprocessing (mean, std, channel order, input size) is applied by extract_patches in
the same pass that crops and resizes.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..nets import ConvNet
from ..ops import compute_dtype, extract_patches
from . import images as image_io
from .grids import as_boxes, paper_grid

CONV_POOLING = ("flatten", "max", "avg")
MODES = ("per_patch", "shared")
_DTYPES = {"cpu": (torch.float32, torch.bfloat16),
           "cuda": (torch.float32, torch.bfloat16, torch.float16)}


def peak_bytes(arch, dtype: torch.dtype, *, fc: bool = True) -> int:
    """Peak bytes one input_size x input_size input needs on the way through the network (its
    conv blocks only, without `fc`): the input (held twice while a batch is assembled from
    pieces) plus the two largest consecutive activations, in `dtype`."""
    element = torch.empty((), dtype=dtype).element_size()
    sizes = [3 * arch.input_size ** 2]
    for conv, out in arch.conv_shapes():
        sizes += [math.prod(conv), math.prod(out)]
    if fc:
        sizes += list(arch.fc)
    peak = max(a + b for a, b in zip(sizes, sizes[1:]))
    return (sizes[0] + peak) * element


class ImageFeatures(NamedTuple):
    """Features of one image: features [K, D] (dtype of the extractor), boxes [K, 4] int64
    (x0, y0, x1, y1) in pixels of the decoded, upright image; source names the image."""

    source: str
    features: torch.Tensor
    boxes: torch.Tensor


@dataclass
class _Job:
    """One image on its way through the batches: the boxes it has, how many are done."""

    source: str
    image: torch.Tensor
    boxes: torch.Tensor
    done: int = 0
    parts: list = field(default_factory=list)


class PatchFeatureExtractor:
    """Features of the grid patches of images, from any layer conv1..fc7 (or fc8).

    Args:
        net: a cnnxfer.nets.ConvNet; it is moved to `device` and is always run in eval mode.
        layer: the layer whose output is returned ("fc7" by default, as in the paper).
        grid: boxes of an image, called as grid(width, height) -> [K, 4] int64 (default: the
            paper's multi-scale grid, ~500 boxes on 500x375).
        device: where the network runs ("cpu", "cuda", torch.device); default cpu.
        dtype: the activations' dtype: float32 or bfloat16 on CPUs, also float16 on GPUs.
            Features come back in this dtype.
        conv_pooling: for conv layers, "flatten" ([K, C*H*W]), "max" or "avg" over H and W
            ([K, C]).
        max_bytes: budget for one batch's patches and activations (default 1 GiB).
        max_batch: upper bound on patches per batch (default 32; see the README's speed section
            for how the batch size was chosen).
        channels_last: feed the network channels_last patches (default: True, the faster
            layout for oneDNN and cuDNN convolutions).
        mode: "per_patch" (default: each patch resized to the input size and run through the
            whole network, as the paper does) or "shared" (conv1..conv5 once per scale on the
            whole resized image, each patch's conv5 window cut from the map, then FC6/FC7 per
            patch: about 4x fewer multiply-adds on the paper's grid, features that differ
            near the windows' borders; see cnnxfer.features.shared). "shared" needs square
            boxes and a layer from conv5 on.
    """

    def __init__(self, net: ConvNet, *, layer: str = "fc7",
                 grid: Callable[[int, int], torch.Tensor] = paper_grid,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 conv_pooling: str = "flatten", max_bytes: int = 1 << 30, max_batch: int = 32,
                 channels_last: bool = True, mode: str = "per_patch"):
        if not isinstance(net, ConvNet):
            raise TypeError(f"net must be a cnnxfer.nets.ConvNet, got {type(net).__name__}")
        self.device = torch.device(device if device is not None else "cpu")
        allowed = _DTYPES.get(self.device.type, (torch.float32,))
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {', '.join(map(str, allowed))} on "
                             f"{self.device.type}, got {dtype}")
        if conv_pooling not in CONV_POOLING:
            raise ValueError(f"conv_pooling must be one of {', '.join(CONV_POOLING)}, got "
                             f"{conv_pooling!r}")
        if not callable(grid):
            raise TypeError(f"grid must be callable as grid(width, height), got "
                            f"{type(grid).__name__}")
        for name, value in (("max_bytes", max_bytes), ("max_batch", max_batch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.net = net.to(self.device).eval()
        self.layer = net.check_layer(layer)
        last = net.arch.last_conv
        if mode == "shared" and self.layer in net.arch.conv_names() and self.layer != last:
            later = ", ".join(net.layers[net.layers.index(last):])
            raise ValueError(f"mode='shared' gives features of {last} or a later layer "
                             f"({later}): the windows are cut from {last}; got layer "
                             f"{self.layer!r}")
        self.mode = mode
        if mode == "shared":
            _warn_if_fields_exceed_the_patch(net)
        self.grid, self.dtype, self.conv_pooling = grid, dtype, conv_pooling
        self.channels_last = channels_last
        # Patches are written in the dtype the network computes in: where bf16 is emulated
        # (CPUs without bf16 units) that is fp32, and casting bf16 patches up would be wasted.
        self.patch_dtype = compute_dtype(dtype, self.device)
        self.batch_size = max(1, min(max_batch, max_bytes // self.bytes_per_patch()))
        self.max_bytes = max_bytes

    # ------------------------------------------------------------------ public API

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """features [K, D], boxes [K, 4] for one image (see cnnxfer.features.load_image)."""
        (result,) = self.extract([image], on_error="raise")
        return result.features, result.boxes

    def extract(self, images: Iterable, *, on_error: str | Callable = "warn"
                ) -> Iterator[ImageFeatures]:
        """Features of each image, in order, batching patches across images.

        on_error: what to do with an image that cannot be read: "warn" (warn, skip it, go on),
            "raise", or a callable(source_name, exception) that reports it (it is then skipped).
            Results already yielded are never affected.
        """
        if self.mode == "shared":
            yield from self._extract_shared(images, on_error)
            return
        queue: deque[_Job] = deque()
        queued = 0  # patches waiting in the queue
        for source in images:
            try:
                image = image_io.load_image(source).to(self.device)  # once, not per batch
                boxes = self._boxes(image)
            except (OSError, ValueError, TypeError) as error:
                self._report(source, error, on_error)
                continue
            queue.append(_Job(image_io.describe(source), image, boxes))
            queued += len(boxes)
            while queued >= self.batch_size:
                queued -= self._run_batch(queue)
            yield from self._finished(queue)
        while queued > 0:
            queued -= self._run_batch(queue)
        yield from self._finished(queue)

    def bytes_per_patch(self) -> int:
        """Peak bytes one patch needs on the way through the network (peak_bytes)."""
        return peak_bytes(self.net.arch, compute_dtype(self.dtype, self.device))

    def feature_size(self) -> int:
        """D, the length of one patch's feature vector."""
        shape = self.net.arch.output_shape(self.layer)
        if self.layer in self.net.arch.conv_names() and self.conv_pooling != "flatten":
            return shape[0]
        return math.prod(shape)

    # ------------------------------------------------------------------ internals

    def _extract_shared(self, images: Iterable, on_error) -> Iterator[ImageFeatures]:
        """mode="shared": per image, the conv5 windows of its boxes from one map per scale,
        then the layers after conv5 in batches."""
        from .shared import conv5_windows

        for source in images:
            try:
                image = image_io.load_image(source).to(self.device)
                boxes = self._boxes(image)
                windows = conv5_windows(self.net, image, boxes, dtype=self.patch_dtype,
                                        channels_last=self.channels_last,
                                        max_bytes=self.max_bytes)
            except (OSError, ValueError, TypeError) as error:
                self._report(source, error, on_error)
                continue
            if self.layer == self.net.arch.last_conv:
                features = self._pool_conv(windows.to(self.dtype))
            else:
                features = torch.empty((len(boxes), self.feature_size()), dtype=self.dtype,
                                       device=self.device)
                rows = self._fc_batch()
                for begin in range(0, len(boxes), rows):
                    batch = windows[begin:begin + rows]
                    features[begin:begin + len(batch)] = self.net(
                        batch, self.layer, start=self.net.arch.last_conv).to(self.dtype)
            yield ImageFeatures(image_io.describe(source), features, boxes)

    def _boxes(self, image: torch.Tensor) -> torch.Tensor:
        """The grid's boxes for this image, checked (inside the image, integer, positive size)
        here so that a bad box skips its image instead of stopping a run, and copied so that
        results never share one tensor."""
        width, height = int(image.shape[2]), int(image.shape[1])
        boxes = torch.as_tensor(self.grid(width, height))
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"grid must return [K, 4] boxes, got shape {tuple(boxes.shape)}")
        return as_boxes(boxes, width, height)  # int64, a copy

    def _run_batch(self, queue: deque) -> int:
        """Runs one batch of up to batch_size patches taken from the front of the queue and
        returns how many it ran."""
        pieces, owners, room = [], [], self.batch_size
        for job in queue:
            count = min(room, len(job.boxes) - job.done)
            if count > 0:
                pieces.append(self._patches(job.image, job.boxes[job.done:job.done + count]))
                owners.append((job, count))
                job.done += count
                room -= count
            if room == 0:
                break
        batch = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        features = self._features(batch)
        offset = 0
        for job, count in owners:
            job.parts.append(features[offset:offset + count])
            offset += count
        return batch.shape[0]

    def _finished(self, queue: deque) -> Iterator[ImageFeatures]:
        # Batches take patches from the front, so the finished images are a prefix of the queue.
        while queue and queue[0].done == len(queue[0].boxes):
            job = queue.popleft()
            features = (torch.cat(job.parts) if job.parts else
                        torch.empty((0, self.feature_size()), dtype=self.dtype,
                                    device=self.device))
            yield ImageFeatures(job.source, features, job.boxes)

    def _patches(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        prep = self.net.preprocessing
        return extract_patches(image, boxes, size=self.net.arch.input_size,
                               mean=prep.mean, std=prep.std, out_dtype=self.patch_dtype,
                               channels_last=self.channels_last,
                               reverse_channels=prep.reverse_channels)

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.net(batch, layer=self.layer).to(self.dtype)
        return self._pool_conv(out) if self.layer in self.net.arch.conv_names() else out

    def _fc_batch(self) -> int:
        """Rows per FC batch in shared mode: the FC layers alone need little memory per row,
        and their GEMMs run faster on taller batches (256 rows: 0.31 s instead of 0.51 s for
        AlexNet's FC6/FC7 on 496 rows in fp32 on 2 cores), within the byte budget."""
        element = torch.empty((), dtype=self.patch_dtype).element_size()
        per_row = (math.prod(self.net.arch.fc_input_shape()) + sum(self.net.arch.fc)) * element * 2
        return max(1, min(256, self.max_bytes // per_row))

    def _pool_conv(self, out: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] conv features as vectors: flattened, or max / average over space."""
        if self.conv_pooling == "max":
            return out.amax(dim=(2, 3))
        if self.conv_pooling == "avg":
            return out.mean(dim=(2, 3))
        return out.flatten(1)

    @staticmethod
    def _report(source, error: Exception, on_error) -> None:
        name = image_io.describe(source)
        if on_error == "raise":
            raise error
        if callable(on_error):
            on_error(name, error)
        else:
            warnings.warn(f"skipped {name}: {error}", stacklevel=3)


def _warn_if_fields_exceed_the_patch(net: ConvNet) -> None:
    """mode="shared" reproduces the per-patch features only where a last-conv cell sees about
    a patch or less: a cell whose receptive field is wider than the input sees, in the shared
    map, image the per-patch network replaces with zero padding."""
    from .shared import receptive_field  # shared imports this module

    size = receptive_field(net)[0]
    if size > net.arch.input_size:
        warnings.warn(f"mode='shared': a {net.arch.last_conv} cell of {net.arch.name} sees "
                      f"{size} px, more than its {net.arch.input_size} px input, so each "
                      f"patch's shared features also see the image around it, where the "
                      f"per-patch network sees padding: expect them to differ much (on the "
                      f"generated world's 64 px network the method loses about 7 mAP points)",
                      stacklevel=3)
