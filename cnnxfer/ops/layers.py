"""The parameters of the layers that follow a convolution in an AlexNet-family block: what
ops.conv_block, the reference and the network architectures take."""
from __future__ import annotations

from dataclasses import dataclass

from .geometry import IntOrPair


@dataclass(frozen=True)
class LRN:
    """Local response normalization across channels, as F.local_response_norm / Caffe LRN:
    y_c = x_c / (k + alpha / size * sum_{c' in window(c)} x_c'^2) ** beta, size odd."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling; padding is an int, (height, width) or (top, left, bottom, right)."""

    kernel_size: IntOrPair = 3
    stride: IntOrPair = 2
    padding: IntOrPair = 0
    ceil_mode: bool = False
