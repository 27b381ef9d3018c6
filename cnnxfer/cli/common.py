"""What the subcommands share: dtype names and the --name option's help."""
from __future__ import annotations

import argparse

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

NAME_HELP = ("architecture of a bare state_dict with cnnxfer names (alexnet, caffenet or "
             "torchvision); stored or recognized weights need none")


def positive_int(text: str) -> int:
    """argparse type of a count: a clear usage error for 0, negatives and non-numbers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value
