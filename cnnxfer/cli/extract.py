"""`cnnxfer extract`: features and boxes of every grid patch of images, to one file or one file per
image in a folder (resumable). Unreadable images are reported and skipped; an interrupted run
still writes what it finished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..features import PatchFeatureExtractor
from ..features import files as feature_files
from ..nets import weights
from .common import DTYPES, NAME_HELP, device


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # the progress bar: imported only when a run starts

    to_folder = Path(args.output).is_dir()
    if not to_folder:
        feature_files.check_path(args.output)  # fail before any work, not after it
    net = weights.load(args.weights, name=args.name)
    extractor = PatchFeatureExtractor(net, layer=args.layer, device=args.device,
                                      dtype=DTYPES[args.dtype], conv_pooling=args.conv_pooling)
    # what a rerun (and `cnnxfer train`) must find to reuse a file: the network by its
    # contents, not by the path it was given as
    same = dict(layer=extractor.layer, weights_sha256=weights.fingerprint(args.weights),
                dtype=args.dtype, conv_pooling=args.conv_pooling)
    header = dict(same, weights=str(args.weights))
    images, done = [str(image) for image in args.images], []
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
    parser.add_argument("images", nargs="+", help="image files (anything Pillow decodes)")
    parser.add_argument("--weights", required=True, help=".safetensors, .pth or .onnx weights")
    parser.add_argument("-o", "--output", required=True,
                         help="OUT.safetensors or OUT.npz (one file), or an existing folder "
                              "(one <stem>.safetensors per image; a rerun skips finished ones)")
    parser.add_argument("--layer", default="fc7", help="conv1..conv5, fc6, fc7, fc8 (fc7)")
    parser.add_argument("--conv-pooling", choices=("flatten", "max", "avg"), default="flatten",
                         help="how conv-layer maps become vectors (flatten)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--name", help=NAME_HELP)
    parser.set_defaults(run=run)
