"""`cnnxfer info`: a network, its preprocessing, its layers and their shapes.
"""
from __future__ import annotations

import argparse

from ..nets import weights
from .common import NAME_HELP


def run(args: argparse.Namespace) -> int:
    net = weights.load(args.weights, name=args.name)
    prep, arch = net.preprocessing, net.arch
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{args.weights}: {arch.name}, {parameters / 1e6:.1f} M parameters, input "
          f"{arch.input_size}x{arch.input_size}")
    print(f"preprocessing: {prep.channel_order}, mean {list(prep.mean)}, std {list(prep.std)} "
          f"(pixels 0..255)")
    print(f"layers ({len(arch.convs)} conv, {len(arch.fc_names())} FC; output per image, "
          f"parameters):")
    width = max(6, *map(len, net.layers))
    for layer in net.layers:
        shape = "x".join(map(str, arch.output_shape(layer)))
        count = sum(p.numel() for p in getattr(net, layer).parameters())
        print(f"  {layer:{width}s} {shape:14s} {count:>12,d}")
    print(net)
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("info", help="a network, its preprocessing and its layers")
    parser.add_argument("weights", help=".safetensors, .pth or .onnx weights")
    parser.add_argument("--name", help=NAME_HELP)
    parser.set_defaults(run=run)
