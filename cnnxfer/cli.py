"""The `cnnxfer` command.

    cnnxfer extract --weights W IMAGES... -o OUT.safetensors|OUT.npz|FOLDER [--layer fc7] ...
    cnnxfer info W
    cnnxfer convert IN OUT.safetensors
    cnnxfer demo [--dtype float32|bfloat16] [--no-pipeline] [--width 1.0] [--compile] ...

extract writes the features and boxes of every grid patch of each image (see cnnxfer.store for
the layout); images that cannot be read are reported and skipped, and an interrupted run still
writes what it finished. info prints a network, its preprocessing and its layers. convert writes
any supported weights (.pth, .onnx, .safetensors) as cnnxfer safetensors. demo runs the fused
ReLU + LRN + max-pool against plain PyTorch, then the whole feature pipeline (a generated JPEG, a
randomly initialized AlexNet) against the reference, and prints the speed ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Sequence

import torch


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


def _demo(args: argparse.Namespace) -> int:
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

    from . import nets, reference, weights
    from .features import PatchFeatureExtractor

    dtype = _DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as folder:
        weights_path, image_path = Path(folder) / "alexnet.safetensors", Path(folder) / "image.jpg"
        weights.save(nets.alexnet("alexnet", width=args.width, seed=0), weights_path)
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
    from . import ops, reference

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    shape = (args.batch, 96, 55, 55)  # AlexNet conv1 output for 224x224 inputs
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)

    def plain():  # eager LRN has no bf16 CPU kernel: compute in fp32 there
        source = x.float() if (dtype == torch.bfloat16 and device == "cpu") else x
        return reference.relu_lrn_maxpool(source).to(dtype)

    fused = ops.relu_lrn_maxpool(x)
    expected = reference.relu_lrn_maxpool(x.double())
    error = (fused.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"relu_lrn_maxpool on {tuple(shape)} {args.dtype} {layout}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  max abs error vs float64 reference: {error:.3g} (outputs up to {scale:.3g})")
    t_fused = _median_seconds(lambda: ops.relu_lrn_maxpool(x), args.repeats)
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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _extract(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from . import store, weights
    from .features import PatchFeatureExtractor

    to_folder = Path(args.output).is_dir()
    if not to_folder:
        store.check_path(args.output)  # fail before any work, not after it
    net = weights.load(args.weights, name=args.name)
    extractor = PatchFeatureExtractor(net, layer=args.layer, device=args.device,
                                      dtype=_DTYPES[args.dtype], conv_pooling=args.conv_pooling)
    header = dict(layer=extractor.layer, weights=str(args.weights), dtype=args.dtype,
                  conv_pooling=args.conv_pooling)
    images, done = [str(image) for image in args.images], []
    if to_folder:  # one file per image, written as it is done; a rerun skips finished ones
        paths = store.per_image_paths(images, args.output)
        done = [source for source in images if store.already_written(paths[source], source, header)]
        images = [source for source in images if source not in set(done)]
        if done:
            print(f"cnnxfer extract: {len(done)} images already in {args.output}, skipped")
    results, skipped = [], []
    progress = tqdm(total=len(images), unit="image", disable=args.quiet)

    def report(source: str, error: Exception) -> None:
        skipped.append({"source": source, "error": str(error)})
        progress.update(1)
        tqdm.write(f"cnnxfer extract: skipped {source}: {error}", file=sys.stderr)

    status = 0
    try:
        for result in extractor.extract(images, on_error=report):
            if to_folder:
                store.save_features(paths[result.source], [result], **header)
                result = result._replace(features=None)  # on disk: keep only the count
            results.append(result)
            progress.update(1)
    except KeyboardInterrupt:
        print(f"cnnxfer extract: interrupted after {len(results)} images", file=sys.stderr)
        status = 130
    finally:
        progress.close()
        if not to_folder:
            store.save_features(args.output, results, skipped=skipped, **header)
    patches = sum(len(r.boxes) for r in results)
    print(f"wrote {args.output}: {len(results)} images, {patches} patches, layer "
          f"{extractor.layer}, {extractor.feature_size()} features each; {len(skipped)} skipped")
    return status or (1 if skipped and not (results or done) else 0)


def _info(args: argparse.Namespace) -> int:
    from . import weights

    net = weights.load(args.weights, name=args.name)
    prep, arch = net.preprocessing, net.arch
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{args.weights}: {arch.name}, {parameters / 1e6:.1f} M parameters, input "
          f"{arch.input_size}x{arch.input_size}")
    print(f"preprocessing: {prep.channel_order}, mean {list(prep.mean)}, std {list(prep.std)} "
          f"(pixels 0..255)")
    print("layers:")
    for layer in net.layers:
        print(f"  {layer:6s} {'x'.join(map(str, arch.output_shape(layer)))}")
    print(net)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from . import weights

    net = weights.convert(args.source, args.destination, name=args.name)
    print(f"wrote {args.destination}: {net.arch.name}, preprocessing {net.preprocessing}")
    return 0


_NAME_HELP = ("architecture of a bare state_dict with cnnxfer names (alexnet, caffenet or "
              "torchvision); stored or recognized weights need none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnxfer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the fused op and the feature pipeline vs plain "
                                             "PyTorch, on generated data")
    demo.add_argument("--batch", type=int, default=32, help="images in the batch (default 32)")
    demo.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    demo.add_argument("--channels-last", action="store_true", help="NHWC input")
    demo.add_argument("--compile", action="store_true", help="also time torch.compile")
    demo.add_argument("--repeats", type=int, default=10, help="timed runs, median kept")
    demo.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    demo.add_argument("--no-pipeline", action="store_true",
                      help="only the fused op, not the feature pipeline")
    demo.add_argument("--width", type=float, default=1.0,
                      help="AlexNet width multiplier for the pipeline (1.0: the paper's)")
    demo.add_argument("--check", type=int, default=8,
                      help="patches checked against the float64 reference (8)")
    demo.add_argument("--device", default="cpu", help="pipeline device: cpu or cuda (cpu)")
    demo.set_defaults(run=_demo)

    extract = commands.add_parser("extract", help="features of every grid patch of images")
    extract.add_argument("images", nargs="+", help="image files (anything Pillow decodes)")
    extract.add_argument("--weights", required=True, help=".safetensors, .pth or .onnx weights")
    extract.add_argument("-o", "--output", required=True,
                         help="OUT.safetensors or OUT.npz (one file), or an existing folder "
                              "(one <stem>.safetensors per image; a rerun skips finished ones)")
    extract.add_argument("--layer", default="fc7", help="conv1..conv5, fc6, fc7, fc8 (fc7)")
    extract.add_argument("--conv-pooling", choices=("flatten", "max", "avg"), default="flatten",
                         help="how conv-layer maps become vectors (flatten)")
    extract.add_argument("--dtype", choices=tuple(_DTYPES), default="float32")
    extract.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.add_argument("--name", help=_NAME_HELP)
    extract.set_defaults(run=_extract)

    info = commands.add_parser("info", help="a network, its preprocessing and its layers")
    info.add_argument("weights", help=".safetensors, .pth or .onnx weights")
    info.add_argument("--name", help=_NAME_HELP)
    info.set_defaults(run=_info)

    convert = commands.add_parser("convert", help="weights to cnnxfer safetensors")
    convert.add_argument("source", help=".pth, .onnx or .safetensors weights")
    convert.add_argument("destination", help="OUT.safetensors")
    convert.add_argument("--name", help=_NAME_HELP)
    convert.set_defaults(run=_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch", 1) <= 0:
        parser.error(f"--batch must be a positive int, got {args.batch}")
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, TypeError) as error:
        # a user's mistake (a missing file, weights that do not fit, a bad layer name): one line,
        # no traceback
        print(f"cnnxfer {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
