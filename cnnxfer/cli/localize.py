"""`cnnxfer localize`: localization maps of images with a trained head: per class, each patch
adds its probability over the pixels it covers, normalized by how many patches cover each pixel;
written as PNG overlays (one panel per class) and, with --arrays, as .npy [C, H, W] float32.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DTYPES, class_names, device, positive_float, positive_int, scales


def run(args: argparse.Namespace) -> int:
    import functools

    import numpy as np
    from tqdm import tqdm

    from ..features import PatchFeatureExtractor, load_image, paper_grid
    from ..features.files import per_image_paths
    from ..nets import weights as weight_files
    from ..transfer import AdaptationHead, image_scores, save_overlay, score_maps
    from ..transfer.head import check_network

    head = AdaptationHead.load(args.head)
    chosen = list(args.classes) if args.classes else None
    unknown = [c for c in chosen or [] if c not in head.classes]
    if unknown:
        raise ValueError(f"--classes names {unknown[0]!r}, which the head does not know; its "
                         f"classes: {', '.join(head.classes)}")
    check_network(head, weight_files.fingerprint(args.weights), f"--weights {args.weights}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = weight_files.load(args.weights)
    # one <stem>.png per image, <stem>-1.png ... where stems repeat (as feature folders do)
    names = per_image_paths([str(p) for p in args.images], out)
    grid = functools.partial(paper_grid, scales=args.scales) if args.scales else paper_grid
    extractor = PatchFeatureExtractor(net, layer=head.layer, grid=grid, device=args.device,
                                      dtype=DTYPES[args.dtype])
    skipped = []
    bar = tqdm(total=len(args.images), unit="image", disable=args.quiet)

    def report(source: str, error: Exception) -> None:
        skipped.append(source)
        bar.update(1)
        tqdm.write(f"cnnxfer localize: skipped {source}: {error}", file=sys.stderr)

    written = 0
    for result in extractor.extract([str(p) for p in args.images], on_error=report):
        probs = head.probabilities(result.features.cpu())[:, :head.num_classes]
        image = load_image(result.source)
        maps = score_maps(result.boxes, probs, image.shape[2], image.shape[1])
        shown = chosen or [head.classes[c] for c in image_scores(probs, args.k).topk(
            min(args.top, head.num_classes)).indices]
        name = names[result.source].with_suffix("")
        save_overlay(name.with_suffix(".png"), image, maps, head.classes, classes=shown)
        if args.arrays:
            np.save(name.with_suffix(".npy"), maps.numpy())
        written += 1
        bar.update(1)
    bar.close()
    print(f"wrote {written} maps to {out}; {len(skipped)} images skipped")
    return 1 if skipped and not written else 0


def add_parser(commands) -> None:
    parser = commands.add_parser("localize", help="localization maps of images (PNG overlays)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--head", required=True, help="a head written by cnnxfer train")
    parser.add_argument("--weights", required=True, help="the network the head was trained on")
    parser.add_argument("--out", required=True, help="folder for <stem>.png (and .npy)")
    parser.add_argument("--classes", type=class_names,
                        help="classes to draw, comma-separated (default: the --top scoring)")
    parser.add_argument("--top", type=positive_int, default=3,
                        help="classes drawn by default: the best scoring ones (3)")
    parser.add_argument("-k", type=positive_float, default=5.0,
                        help="image score = mean over patches of y^k, ranks the classes (5)")
    parser.add_argument("--arrays", action="store_true", help="also write the maps as .npy")
    parser.add_argument("--scales", type=scales, default=None,
                        help="the grid's scales (default: the paper's nine)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
