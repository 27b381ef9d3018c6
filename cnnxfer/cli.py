"""The `cnnxfer` command.

    cnnxfer demo [--batch 32] [--dtype float32|bfloat16] [--channels-last] [--compile]

demo runs the fused ReLU + LRN + max-pool on random AlexNet conv1 outputs, checks it against the
plain-PyTorch reference and prints the times and the speed ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Sequence

import torch


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _demo(args: argparse.Namespace) -> int:
    from . import ops, reference

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    shape = (args.batch, 96, 55, 55)  # AlexNet conv1 output for 224x224 inputs
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)

    def plain():  # eager LRN has no bf16 CPU kernel: compute in fp32 there
        source = x.float() if (dtype == torch.bfloat16 and device == "cpu") else x
        return reference.relu_lrn_maxpool(source).to(dtype)

    fused = ops.relu_lrn_maxpool(x)
    expected = reference.relu_lrn_maxpool(x.double())
    error = (fused.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"relu_lrn_maxpool on {tuple(shape)} {args.dtype} {layout}, {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  max abs error vs float64 reference: {error:.3g} (outputs up to {scale:.3g})")
    t_fused = _median_seconds(lambda: ops.relu_lrn_maxpool(x), args.repeats)
    t_plain = _median_seconds(plain, args.repeats)
    print(f"  cnnxfer fused:        {t_fused * 1e3:8.2f} ms")
    print(f"  plain PyTorch eager:  {t_plain * 1e3:8.2f} ms   -> cnnxfer is "
          f"{t_plain / t_fused:.1f}x faster")
    if args.compile:
        compiled = torch.compile(reference.relu_lrn_maxpool, dynamic=False)
        t_compiled = _median_seconds(lambda: compiled(x), args.repeats)
        print(f"  torch.compile:        {t_compiled * 1e3:8.2f} ms   -> cnnxfer is "
              f"{t_compiled / t_fused:.1f}x faster")
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if error > tolerance * max(scale, 1.0):
        print(f"  MISMATCH: error {error:.3g} above {tolerance:g}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnxfer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fused ReLU+LRN+max-pool vs plain PyTorch")
    demo.add_argument("--batch", type=int, default=32, help="images in the batch (default 32)")
    demo.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    demo.add_argument("--channels-last", action="store_true", help="NHWC input")
    demo.add_argument("--compile", action="store_true", help="also time torch.compile")
    demo.add_argument("--repeats", type=int, default=10, help="timed runs, median kept")
    demo.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "batch", 1) <= 0:
        build_parser().error(f"--batch must be a positive int, got {args.batch}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
