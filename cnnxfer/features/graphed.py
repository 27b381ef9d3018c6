"""The per-image pipeline as one CUDA graph: image -> patches -> conv blocks -> FC6 -> FC7.

For images of one size the paper's grid gives the same K boxes every time, so the whole pipeline
has fixed shapes: [3, H, W] uint8 pixels -> [K, 3, S, S] patches -> [K, D] features. A
GraphedExtractor runs it once to warm up (cuDNN, the conv blocks' backend choice, Triton's
compiles), captures it as a CUDA graph, and then costs one host -> device copy of the pixels and
one graph launch per image: no kernel waits for the host, and the host waits for nothing inside
an image (only for the copy of the image before, to reuse its pinned staging buffer).

    extractor = GraphedExtractor(net, width=500, height=375, dtype=torch.bfloat16)
    features, boxes = extractor(image)        # [496, 4096] bf16 on the GPU, [496, 4]

On a CPU (or with capture=False) the same fixed-shape pipeline runs eagerly, which is how it is
tested without a GPU; the features equal PatchFeatureExtractor's.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..nets import ConvNet
from ..ops import compute_dtype, extract_patches
from . import images as image_io
from .grids import as_boxes, paper_grid


class GraphedExtractor:
    """Features of the grid patches of fixed-size images, the pipeline replayed as a CUDA graph.

    Args:
        net: a cnnxfer.nets.ConvNet (moved to `device`, run in eval mode).
        width, height: the images' size in pixels; other sizes are refused.
        layer: the layer whose output is returned ("fc7"); conv layers come flattened.
        grid: boxes of an image, grid(width, height) -> [K, 4] (default: the paper's).
        dtype: the activations' dtype (bfloat16 by default on GPUs: bf16 end to end).
        device: "cuda" (default) or a CUDA device; "cpu" runs eagerly.
        capture: capture a CUDA graph (default on CUDA devices); False runs eagerly.
    All K patches run as one batch: the GPU memory this takes is K times
    PatchFeatureExtractor.bytes_per_patch (about 0.6 GB for 500 AlexNet patches in bf16).
    """

    def __init__(self, net: ConvNet, width: int, height: int, *, layer: str = "fc7",
                 grid: Callable[[int, int], torch.Tensor] = paper_grid,
                 dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cuda",
                 capture: bool | None = None):
        if not isinstance(net, ConvNet):
            raise TypeError(f"net must be a cnnxfer.nets.ConvNet, got {type(net).__name__}")
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.device = torch.device(device)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        if capture is None:
            capture = self.device.type == "cuda"
        if capture and self.device.type != "cuda":
            raise ValueError(f"capture=True needs a CUDA device, got {self.device}")
        self.net = net.to(self.device).eval()
        self.layer = net.check_layer(layer)
        self.width, self.height, self.dtype = width, height, dtype
        self.boxes = as_boxes(torch.as_tensor(grid(width, height)), width, height)
        if len(self.boxes) == 0:
            raise ValueError(f"grid gave no boxes for a {width}x{height} image")
        self._image = torch.zeros((3, height, width), dtype=torch.uint8, device=self.device)
        self._patches = self._patch_function()
        self._graph = None
        self._staging = None
        if capture:
            self._capture()

    # ------------------------------------------------------------------ public API

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """features [K, D] (dtype, on the device) and boxes [K, 4] of one image (a path, PIL
        image, array or [3, H, W] tensor, as features.load_image takes it) of the prepared
        size. The features are a fresh tensor; on a GPU they are ready when the stream gets
        there (reading them synchronizes, as any GPU result)."""
        pixels = image_io.load_image(image)
        if pixels.dtype != torch.uint8:
            raise ValueError(f"image must be uint8 pixels (8-bit files, uint8 arrays), got "
                             f"{pixels.dtype}")
        if tuple(pixels.shape[1:]) != (self.height, self.width):
            raise ValueError(f"image is {pixels.shape[2]}x{pixels.shape[1]} but this extractor "
                             f"was built for {self.width}x{self.height}")
        if self._graph is None:
            self._image.copy_(pixels)
            return self._forward().clone(), self.boxes.clone()
        self._upload(pixels)
        self._graph.replay()
        return self._out.clone(), self.boxes.clone()

    # ------------------------------------------------------------------ internals

    def _patch_function(self) -> Callable[[], torch.Tensor]:
        """image buffer -> [K, 3, S, S] patches. On GPUs the Triton kernel prepared up front
        (kernels.patches.PreparedPatches: no host work, so it can be captured), writing into one
        buffer; elsewhere ops.extract_patches."""
        prep, size = self.net.preprocessing, self.net.arch.input_size
        patch_dtype = compute_dtype(self.dtype, self.device)
        if self.device.type != "cuda":
            return lambda: extract_patches(self._image, self.boxes, size=size, mean=prep.mean,
                                           std=prep.std, out_dtype=patch_dtype,
                                           channels_last=True,
                                           reverse_channels=prep.reverse_channels)
        from cnnxfer.kernels.patches import PreparedPatches

        table = torch.cat([torch.zeros((len(self.boxes), 1), dtype=torch.int64), self.boxes],
                          dim=1).to(self.device)
        images = self._image[None]
        launch = PreparedPatches(images, table, size, list(prep.mean), list(prep.std),
                                 patch_dtype, True, reverse_channels=prep.reverse_channels)
        out = launch.new_output()
        return lambda: launch(images, out)

    def _forward(self) -> torch.Tensor:
        with torch.no_grad():
            features = self.net(self._patches(), self.layer).to(self.dtype)
        return features.flatten(1)

    def _capture(self) -> None:
        # Warm-up on a side stream, as torch.cuda.graphs asks: the first calls choose cuDNN
        # algorithms and the conv blocks' backends and compile Triton kernels, none of which
        # may happen during capture.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._out = self._forward()
        self._staging = torch.empty(self._image.shape, dtype=torch.uint8, pin_memory=True)
        self._copied = torch.cuda.Event()
        self._copied.record()

    def _upload(self, pixels: torch.Tensor) -> None:
        """pixels -> the graph's image buffer, asynchronously: through a pinned buffer when they
        are on the host (the host waits only for the previous image's copy out of it)."""
        if pixels.device == self.device:
            self._image.copy_(pixels)
            return
        self._copied.synchronize()
        self._staging.copy_(pixels)
        self._image.copy_(self._staging, non_blocking=True)
        self._copied.record()
