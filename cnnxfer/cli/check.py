"""`cnnxfer check`: the engine on this machine, in seconds: the fused ReLU + LRN + max-pool
against plain PyTorch, then the whole feature pipeline (a generated JPEG, a randomly initialized
AlexNet) against the reference, with speed ratios. Exits non-zero on a mismatch. (The paper's
whole comparison is `cnnxfer demo`.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ..features import PatchFeatureExtractor
from ..nets import alexnet, weights
from ..ops import reference, relu_lrn_maxpool
from .common import DTYPES, device, positive_int


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    status = _demo_op(args)
    if not args.no_pipeline:
        status = _demo_pipeline(args) or status
    return status


def _demo_pipeline(args: argparse.Namespace) -> int:
    """The paper's feature pipeline on a generated image with a randomly initialized AlexNet:
    no weights or images need to be at hand. Checks a few patches against the reference."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as folder:
        weights_path, image_path = Path(folder) / "alexnet.safetensors", Path(folder) / "image.jpg"
        weights.save(alexnet("alexnet", width=args.width, seed=0), weights_path)
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # smooth, like a photo
        Image.fromarray(coarse).resize((500, 375), Image.BILINEAR).save(image_path)
        net = weights.load(weights_path)
        extractor = PatchFeatureExtractor(net, layer="fc7", dtype=dtype, device=args.device)
        extractor(image_path)  # warm-up: weights cast and packed once per network
        start = time.perf_counter()
        features, boxes = extractor(image_path)
        seconds = time.perf_counter() - start
        pixels = Image.open(image_path).convert("RGB")
    pixels = torch.from_numpy(np.asarray(pixels).copy()).permute(2, 0, 1)[None]
    count = min(args.check, len(boxes))
    table = torch.cat([torch.zeros(count, 1, dtype=torch.int64), boxes[:count]], dim=1)
    prep, net = net.preprocessing, net.cpu()

    def reference_fc7(reference_dtype: torch.dtype) -> torch.Tensor:
        """Crop + F.interpolate per patch, then plain PyTorch layers."""
        patches = reference.extract_patches(pixels.to(reference_dtype), table,
                                            size=prep.input_size, mean=prep.mean, std=prep.std,
                                            out_dtype=reference_dtype,
                                            reverse_channels=prep.reverse_channels)
        return net(patches, "fc7", backend="reference")

    start = time.perf_counter()
    reference_fc7(dtype)
    reference_seconds = (time.perf_counter() - start) / count * len(boxes)
    expected = reference_fc7(torch.float64)
    error = ((features[:count].double().cpu() - expected).norm() / expected.norm()).item()
    print(f"\nfeature pipeline: 500x375 JPEG -> {len(boxes)} multi-scale patches -> AlexNet "
          f"(random weights, width {args.width}) fc7 [{features.shape[0]}, {features.shape[1]}] "
          f"{args.dtype}, {extractor.device}")
    print(f"  cnnxfer:   {seconds:8.2f} s/image (decode, patches, network)")
    print(f"  reference: {reference_seconds:8.2f} s/image (plain PyTorch in {args.dtype}, timed on "
          f"{count} patches and scaled)   -> cnnxfer is {reference_seconds / seconds:.1f}x faster")
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    print(f"  relative error of the first {count} patches vs the float64 reference: {error:.2e}")
    if not error <= tolerance:
        print(f"  MISMATCH: error {error:.3g} above {tolerance:g}", file=sys.stderr)
        return 1
    return 0


def _demo_op(args: argparse.Namespace) -> int:
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    shape = (args.batch, 96, 55, 55)  # AlexNet conv1 output for 224x224 inputs
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)

    def plain():  # eager LRN has no bf16 CPU kernel: compute in fp32 there
        source = x.float() if (dtype == torch.bfloat16 and device == "cpu") else x
        return reference.relu_lrn_maxpool(source).to(dtype)

    fused = relu_lrn_maxpool(x)
    expected = reference.relu_lrn_maxpool(x.double())
    error = (fused.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"relu_lrn_maxpool on {tuple(shape)} {args.dtype} {layout}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  max abs error vs float64 reference: {error:.3g} (outputs up to {scale:.3g})")
    t_fused = _median_seconds(lambda: relu_lrn_maxpool(x), args.repeats)
    t_plain = _median_seconds(plain, args.repeats)
    print(f"  cnnxfer fused:        {t_fused * 1e3:8.2f} ms")
    print(f"  plain PyTorch eager:  {t_plain * 1e3:8.2f} ms   -> cnnxfer is "
          f"{t_plain / t_fused:.1f}x faster")
    if args.compile:
        compiled = torch.compile(reference.relu_lrn_maxpool, dynamic=False)
        t_compiled = _median_seconds(lambda: compiled(x), args.repeats)
        print(f"  torch.compile:        {t_compiled * 1e3:8.2f} ms   -> cnnxfer is "
              f"{t_compiled / t_fused:.1f}x faster")
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if error > tolerance * max(scale, 1.0):
        print(f"  MISMATCH: error {error:.3g} above {tolerance:g}", file=sys.stderr)
        return 1
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("check", help="the engine on this machine: the fused op and "
                                              "the feature pipeline vs plain PyTorch, on "
                                              "generated data")
    parser.add_argument("--batch", type=positive_int, default=32,
                        help="images in the batch (default 32)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--channels-last", action="store_true", help="NHWC input")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs, median kept")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    parser.add_argument("--no-pipeline", action="store_true",
                      help="only the fused op, not the feature pipeline")
    parser.add_argument("--width", type=float, default=1.0,
                      help="AlexNet width multiplier for the pipeline (1.0: the paper's)")
    parser.add_argument("--check", type=int, default=8,
                      help="patches checked against the float64 reference (8)")
    parser.add_argument("--device", type=device, default="cpu",
                        help="pipeline device: cpu or cuda (cpu)")
    parser.set_defaults(run=run)
