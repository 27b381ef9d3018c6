"""The `cnnxfer` command: one module per subcommand, each with add_parser(commands) and
run(args) -> exit status.

    cnnxfer extract --weights W IMAGES... -o OUT.safetensors|OUT.npz|FOLDER [--layer fc7] ...
    cnnxfer extract --weights W [IMAGES...] [--list FILE] --store DIR [--workers 2] ...
    cnnxfer store info|verify DIR
    cnnxfer info W
    cnnxfer convert IN OUT.safetensors
    cnnxfer demo [--out DIR] [--seed N] [--images N] [--size WxH] [--weights W --voc ROOT]
    cnnxfer check [--dtype float32|bfloat16] [--no-pipeline] [--width 1.0] [--compile] ...
    cnnxfer train --voc ROOT --split trainval --features DIR --out HEAD.safetensors [--weights W]
    cnnxfer eval --voc ROOT --split test --features DIR --head HEAD.safetensors --out DIR
    cnnxfer localize --head HEAD.safetensors --weights W IMAGES... --out DIR
    cnnxfer voc --root ROOT --weights W --out DIR [--task main|action] ...
    cnnxfer toyvoc OUT [--seed N] [--images N] [--size WxH]
    cnnxfer pretrain WORLD/source.safetensors [--epochs 12] [--width 0.25]
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import check, convert, demo, extract, info, localize, pretrain, store, toyvoc, train, voc
from . import eval as evaluate

SUBCOMMANDS = (demo, extract, store, info, convert, train, evaluate, localize, voc, toyvoc,
               pretrain, check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnxfer", description="Mid-level CNN patch features and their transfer to new tasks.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, TypeError) as error:
        # a user's mistake (a missing or unwritable file, weights that do not fit, a bad layer
        # name): one line, no traceback
        print(f"cnnxfer {args.command}: error: {error}", file=sys.stderr)
        return 2
