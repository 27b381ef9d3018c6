"""`cnnxfer compare`: the paper's comparison on a generated world, from nothing
(cnnxfer.transfer.comparison): generate the world (or reuse it), pretrain a source network with
cnnxfer (or reuse it from the cache), extract the patch features of every image, train the
adaptation layers, score the test split, and print the AP table of the four rows. Work in
progress: its sizes are not yet tuned for time, nor its world for the rows the paper predicts
(docs/demo-notes.md).
"""
from __future__ import annotations

import argparse

from .common import device, positive_int
from .toyvoc import image_size


def run(args: argparse.Namespace) -> int:
    from ..transfer.comparison import DemoSettings, compare, table
    from ..transfer.pretrain import PretrainConfig

    if (args.weights is None) != (args.voc is None):
        raise ValueError("--weights and --voc go together: a real network and a VOCdevkit "
                         "tree (without both, the demo makes its own)")
    settings = DemoSettings(seed=args.seed, images=args.images, size=args.size,
                            source_images=args.source_images,
                            pretrain=PretrainConfig(epochs=args.pretrain_epochs),
                            device=args.device)
    results = compare(args.out, settings, weights=args.weights, voc=args.voc,
                      progress=not args.quiet)
    print(table(results))
    stages = ", ".join(f"{stage} {value:.1f} s" for stage, value in results["seconds"].items())
    print(f"time: {stages}")
    if results.get("patches_per_second"):
        print(f"patch features: {results['patches_per_second']:.0f} patches/s on "
              f"{results['machine']}")
    print(f"wrote {args.out}/report.md, results.json and transfer/maps/")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "compare", help="the paper's comparison on a generated world: transfer vs scratch vs "
                        "whole image vs chance (work in progress)")
    parser.add_argument("--out", default="cnnxfer-demo", help="output folder (cnnxfer-demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=positive_int, default=200,
                        help="target scenes of the world (200)")
    parser.add_argument("--size", type=image_size, default=(160, 120),
                        help="the scenes' size, WxH (160x120)")
    parser.add_argument("--source-images", type=positive_int, default=4000,
                        help="labelled images of the source task (4000)")
    parser.add_argument("--pretrain-epochs", type=positive_int, default=24)
    parser.add_argument("--weights", help="a real source network (with --voc)")
    parser.add_argument("--voc", help="a real VOCdevkit year folder (with --weights)")
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
