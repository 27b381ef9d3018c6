"""`cnnxfer pretrain`: trains a source network on a generated world's source task with cnnxfer's
own fused ops and their gradients, caches it (XDG cache folder) and prints where it is; a second
run with the same source and settings reuses it.
"""
from __future__ import annotations

import argparse

from .common import device, positive_float, positive_int


def run(args: argparse.Namespace) -> int:
    from ..transfer.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(arch=args.arch, width=args.width, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            device=args.device)
    _, summary = pretrain(args.source, config, out=args.out, cache=not args.no_cache,
                          progress=not args.quiet)
    state = "reused" if summary["cached"] else f"trained in {summary['seconds']:.1f} s"
    val = summary.get("val_accuracy")
    print(f"{summary['path']}: {state}; source accuracy {summary['train_accuracy']:.3f} "
          f"(training images), {val:.3f} (held out)" if val is not None else
          f"{summary['path']}: {state}")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("pretrain", help="train a source network on a world's source "
                                                  "task (cached)")
    parser.add_argument("source", help="a source task: WORLD/source.safetensors (cnnxfer toyvoc)")
    parser.add_argument("--out", help="weights file (default: the cache folder)")
    parser.add_argument("--arch", choices=("alexnet", "caffenet", "torchvision"),
                        default="alexnet")
    parser.add_argument("--width", type=positive_float, default=0.25,
                        help="width multiplier of the layout (0.25)")
    parser.add_argument("--epochs", type=positive_int, default=24)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--no-cache", action="store_true", help="train even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)
