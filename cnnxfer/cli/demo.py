"""`cnnxfer demo`, the README's main job: the paper's comparison on a generated world, from
nothing (cnnxfer.transfer.comparison). Generate the world (or reuse it), pretrain a source
network with cnnxfer (or reuse it from the cache), extract the patch features of every image,
train the adaptation layers, score the test split, and print the AP table of the four rows.
With --weights and --voc, the same comparison on a real network and VOCdevkit tree.
"""
from __future__ import annotations

import argparse

from ..transfer.comparison import ROWS, DemoSettings, compare, table
from .common import add_grid_option, device, positive_int
from .toyvoc import image_size


def rows(text: str) -> tuple[str, ...]:
    """--rows: names from ROWS, comma-separated, transfer_patches among them."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    try:
        DemoSettings(rows=names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return names


def run(args: argparse.Namespace) -> int:
    from ..transfer.pretrain import PretrainConfig

    if (args.weights is None) != (args.voc is None):
        raise ValueError("--weights and --voc go together: a real network and a VOCdevkit "
                         "tree (without both, the demo makes its own)")
    settings = DemoSettings(seed=args.seed, images=args.images, size=args.size,
                            source_images=args.source_images, source_size=args.source_size,
                            pretrain=PretrainConfig(epochs=args.pretrain_epochs),
                            head_epochs=args.head_epochs, scratch_epochs=args.scratch_epochs,
                            rows=args.rows, device=args.device, mode=args.mode, grid=args.grid)
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
    defaults = DemoSettings()
    parser = commands.add_parser(
        "demo", help="the paper's comparison on a generated world (or --weights and --voc): "
                     "transfer vs scratch vs whole image vs chance")
    parser.add_argument("--out", default="cnnxfer-demo", help="output folder (cnnxfer-demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=positive_int, default=defaults.images,
                        help=f"target scenes of the world ({defaults.images})")
    parser.add_argument("--size", type=image_size, default=defaults.size,
                        help="the scenes' size, WxH ({}x{})".format(*defaults.size))
    parser.add_argument("--source-images", type=positive_int, default=defaults.source_images,
                        help=f"labelled images of the source task ({defaults.source_images})")
    parser.add_argument("--source-size", type=positive_int, default=defaults.source_size,
                        help=f"side of the source images in pixels, the network's input size "
                             f"({defaults.source_size}; 227 gives AlexNet's own, whose conv5 "
                             f"cells see less than a patch, as --mode shared needs)")
    parser.add_argument("--pretrain-epochs", type=positive_int,
                        default=defaults.pretrain.epochs,
                        help=f"source network's epochs ({defaults.pretrain.epochs})")
    parser.add_argument("--head-epochs", type=positive_int, default=defaults.head_epochs,
                        help=f"adaptation layers' epochs ({defaults.head_epochs})")
    parser.add_argument("--scratch-epochs", type=positive_int, default=defaults.scratch_epochs,
                        help=f"the scratch network's epochs ({defaults.scratch_epochs})")
    parser.add_argument("--rows", type=rows, default=ROWS,
                        help=f"comma-separated rows to compute, transfer_patches among them "
                             f"({','.join(ROWS)})")
    parser.add_argument("--weights", help="a real source network (with --voc)")
    parser.add_argument("--voc", help="a real VOCdevkit year folder (with --weights)")
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--mode", choices=("per_patch", "shared"), default="per_patch",
                        help="the transfer row's patch features: per patch (the paper's) or "
                             "shared convolutions (cnnxfer extract --help)")
    add_grid_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
