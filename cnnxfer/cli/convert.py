"""`cnnxfer convert`: weights in any supported format (.pth, .onnx, .safetensors) to cnnxfer
safetensors.
"""
from __future__ import annotations

import argparse

from ..nets import weights
from .common import NAME_HELP


def run(args: argparse.Namespace) -> int:
    net = weights.convert(args.source, args.destination, name=args.name)
    print(f"wrote {args.destination}: {net.arch.name}, preprocessing {net.preprocessing}")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("convert", help="weights to cnnxfer safetensors")
    parser.add_argument("source", help=".pth, .onnx or .safetensors weights")
    parser.add_argument("destination", help="OUT.safetensors")
    parser.add_argument("--name", help=NAME_HELP)
    parser.set_defaults(run=run)
