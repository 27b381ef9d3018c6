"""`cnnxfer toyvoc`: writes the generated world (cnnxfer.data.toyvoc): a VOC-format tree of
scenes of the target classes on real photographs, and the source task's labelled images.
"""
from __future__ import annotations

import argparse

from .common import positive_int


def image_size(text: str) -> tuple[int, int]:
    """argparse type of --size: WxH in pixels."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH in pixels (e.g. 160x120), got "
                                         f"{text!r}") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"expected at least 32x32, got {text!r}")
    return width, height


def run(args: argparse.Namespace) -> int:
    from ..data import toyvoc

    world = toyvoc.generate(args.out, seed=args.seed, images=args.images, size=args.size,
                            source_images=args.source_images, source_size=args.source_size,
                            progress=not args.quiet)
    print(f"wrote {world.root} ({args.images} scenes of {', '.join(world.target_classes)}) and "
          f"{world.source} ({args.source_images} source images of "
          f"{len(world.source_classes)} other classes)")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("toyvoc", help="generate a VOC-format world and a source task")
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=positive_int, default=200,
                        help="target scenes, split train/val/test 35/15/50%% (200)")
    parser.add_argument("--size", type=image_size, default=(160, 120),
                        help="the scenes' size, WxH (160x120)")
    parser.add_argument("--source-images", type=positive_int, default=4000,
                        help="labelled images of the source task (4000)")
    parser.add_argument("--source-size", type=positive_int, default=64,
                        help="their side in pixels (64)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
