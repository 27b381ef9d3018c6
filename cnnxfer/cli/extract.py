"""`cnnxfer extract`: features and boxes of every grid patch of images, to a feature store
(--store: sharded, crash-safe, resumable, decoding in background workers, many processes under
torchrun), to one file, or to one file per image in a folder (resumable). Unreadable images are
reported and skipped; an interrupted run keeps what it finished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..features import PatchFeatureExtractor
from ..features import files as feature_files
from ..features.grids import PAPER_SCALES
from ..nets import weights
from .common import (
    DTYPES,
    NAME_HELP,
    add_grid_option,
    device,
    non_negative_int,
    positive_int,
    scales,
)


def _image_list(args: argparse.Namespace) -> list[str]:
    from ..data.extraction import read_list

    images = [str(image) for image in args.images]
    if args.list:
        images += read_list(args.list)
    if not images:
        raise ValueError("no images: give image paths, or --list FILE with one path per line")
    return images


def run(args: argparse.Namespace) -> int:
    if args.store:
        return _run_store(args)
    if args.output is None:
        raise ValueError("give --store DIR (a feature store) or -o OUT (a file or a folder)")
    return _run_files(args)


def _run_store(args: argparse.Namespace) -> int:
    """--store: the dataset path (cnnxfer.data.extraction), in this process or as one of
    torchrun's."""
    from ..data import extraction
    from ..features.grids import DEFAULT_OVERLAP
    from ..features.shared import network_grid, total_stride

    images = extraction.check_images(_image_list(args))
    with extraction.process_group(args.device) as (rank, world, local):
        device = f"cuda:{local}" if args.device == "cuda" else args.device
        net = weights.load(args.weights, name=args.name)
        extractor = PatchFeatureExtractor(net, layer=args.layer, device=device,
                                          dtype=DTYPES[args.dtype],
                                          grid=network_grid(net, args.grid, scales=args.scales),
                                          conv_pooling=args.conv_pooling, max_batch=args.batch,
                                          mode=args.mode)

        def report(record: dict) -> None:
            from tqdm import tqdm

            tqdm.write(f"cnnxfer extract: failed {record['id']}: {record['reason']}",
                       file=sys.stderr)  # above the progress bar, not through it

        try:
            summary = extraction.extract_to_store(
                images, args.store, extractor, weights=args.weights,
                grid={"name": args.grid, "scales": list(args.scales), "overlap": DEFAULT_OVERLAP,
                      **({"total_stride": total_stride(net), "input_size": net.arch.input_size}
                         if args.grid == "aligned" else {})},
                images_per_shard=args.images_per_shard, workers=args.workers,
                in_flight=args.in_flight, min_image_side=args.min_image_side,
                max_image_pixels=args.max_image_pixels, rank=rank, world=world,
                progress=not args.quiet, on_failure=report)
        except KeyboardInterrupt:
            print(f"cnnxfer extract: interrupted; the finished shards are kept in {args.store}: "
                  f"run the same command again to resume", file=sys.stderr)
            return 130
    rate = summary["images"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
    manifest = summary["manifest"]
    if manifest is None:  # not process 0: process 0 reports the store and its exit status
        return 0
    print(f"wrote store {args.store}: {manifest['images']} images, {manifest['patches']} "
          f"patches, {manifest['failures']} failed"
          + (f" (listed in {args.store}/failures.jsonl)" if manifest["failures"] else "")
          + f"; this run: {summary['images']} images ({rate:.1f} images/s, "
            f"{summary['patches'] / max(summary['seconds'], 1e-9):.0f} patches/s), "
            f"{summary['resumed']} already done")
    return 1 if manifest["failures"] and not args.allow_failures else 0


def _run_files(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # the progress bar: imported only when a run starts

    to_folder = Path(args.output).is_dir()
    if not to_folder:
        feature_files.check_path(args.output)  # fail before any work, not after it
    from ..features.shared import network_grid

    net = weights.load(args.weights, name=args.name)
    extractor = PatchFeatureExtractor(net, layer=args.layer, device=args.device,
                                      dtype=DTYPES[args.dtype], conv_pooling=args.conv_pooling,
                                      mode=args.mode, grid=network_grid(net, args.grid))
    # what a rerun (and `cnnxfer train`) must find to reuse a file: the network by its
    # contents, not by the path it was given as
    same = dict(layer=extractor.layer, weights_sha256=weights.fingerprint(args.weights),
                dtype=args.dtype, conv_pooling=args.conv_pooling)
    if args.mode != "per_patch":  # files of the default mode carry no mode (older files too)
        same["mode"] = args.mode
    if args.grid != "paper":  # nor of the paper's grid
        same["grid_name"] = args.grid
    header = dict(same, weights=str(args.weights))
    images, done = _image_list(args), []
    if to_folder:  # one file per image, written as it is done; a rerun skips finished ones
        paths = feature_files.per_image_paths(images, args.output)
        done = [source for source in images
                if feature_files.already_written(paths[source], source, same)]
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
                feature_files.save_features(paths[result.source], [result], **header)
                result = result._replace(features=None)  # on disk: keep only the count
            results.append(result)
            progress.update(1)
    except KeyboardInterrupt:
        print(f"cnnxfer extract: interrupted after {len(results)} images", file=sys.stderr)
        status = 130
    finally:
        progress.close()
        if not to_folder:
            feature_files.save_features(args.output, results, skipped=skipped, **header)
    patches = sum(len(r.boxes) for r in results)
    print(f"wrote {args.output}: {len(results)} images, {patches} patches, layer "
          f"{extractor.layer}, {extractor.feature_size()} features each; {len(skipped)} skipped")
    return status or (1 if skipped and not (results or done) else 0)


def add_parser(commands) -> None:
    parser = commands.add_parser("extract", help="features of every grid patch of images")
    parser.add_argument("images", nargs="*", help="image files (anything Pillow decodes)")
    parser.add_argument("--list", metavar="FILE",
                        help="a file of image paths, one per line (after any given above)")
    parser.add_argument("--weights", required=True, help=".safetensors, .pth or .onnx weights")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--store", metavar="DIR",
                     help="a feature store folder: shards + manifest, crash-safe; a rerun "
                          "resumes; torchrun runs it in many processes")
    out.add_argument("-o", "--output",
                     help="OUT.safetensors or OUT.npz (one file), or an existing folder "
                          "(one <stem>.safetensors per image; a rerun skips finished ones)")
    parser.add_argument("--layer", default="fc7",
                        help="any layer of the network (cnnxfer info lists them): conv1..conv5, "
                             "fc6, fc7, fc8 for AlexNet (fc7)")
    parser.add_argument("--conv-pooling", choices=("flatten", "max", "avg"), default="flatten",
                         help="how conv-layer maps become vectors (flatten)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--mode", choices=("per_patch", "shared"), default="per_patch",
                        help="per_patch: the whole network per patch (the paper's); shared: "
                             "conv1..conv5 once per scale, each patch's conv5 window cut from "
                             "the map (about 4x fewer multiply-adds; see the README)")
    add_grid_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--name", help=NAME_HELP)
    store = parser.add_argument_group("with --store")
    store.add_argument("--workers", type=non_negative_int, default=2,
                       help="decoding processes beside the network (2; 0: decode inline)")
    store.add_argument("--in-flight", type=positive_int, default=8,
                       help="images decoded ahead of the network, at most (8)")
    store.add_argument("--batch", type=positive_int, default=32,
                       help="patches per network batch, at most (32)")
    store.add_argument("--images-per-shard", type=positive_int,
                       help="images per shard (default: about 256 MiB of features)")
    store.add_argument("--min-image-side", type=positive_int, default=16,
                       help="images with a shorter side (pixels) are failures (16)")
    store.add_argument("--max-image-pixels", type=positive_int,
                       help="Pillow's decompression-bomb limit (default: Pillow's, 89.5 M)")
    store.add_argument("--scales", type=scales, default=PAPER_SCALES,
                       help="the grid's scales, comma-separated (the paper's nine)")
    store.add_argument("--allow-failures", action="store_true",
                       help="exit 0 even when some images failed")
    parser.set_defaults(run=run)
