"""The input convention that goes with a set of weights: what a network expects its pixels to be."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preprocessing:
    """How images become network inputs for one set of weights.

    A network input is ``(pixel - mean) / std`` per channel, with pixels in 0..255 (uint8 scale)
    and channels in ``channel_order``, at ``input_size`` x ``input_size``. This is exactly what
    ``cnnxfer.ops.extract_patches(..., mean=..., std=..., reverse_channels=...)`` computes from an
    RGB uint8 image, so the extractor applies it in the same pass that crops and resizes.

    Attributes:
        mean: per-channel mean in pixel units (0..255), in the network's channel order.
        std: per-channel divisor in pixel units; Caffe models use 1.
        channel_order: "RGB" (torchvision) or "BGR" (Caffe, the ONNX model zoo).
        input_size: side of the square input in pixels (224 or 227 for this family).
    """

    mean: tuple[float, ...] = (123.675, 116.28, 103.53)
    std: tuple[float, ...] = (58.395, 57.12, 57.375)
    channel_order: str = "RGB"
    input_size: int = 224

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Preprocessing mean and std must have 3 values (one per channel), "
                             f"got mean={self.mean}, std={self.std}")
        if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            raise ValueError(f"Preprocessing mean must be finite and std finite and > 0, got "
                             f"mean={self.mean}, std={self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"Preprocessing channel_order must be 'RGB' or 'BGR', got "
                             f"{self.channel_order!r}")
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"Preprocessing input_size must be a positive int, got "
                             f"{self.input_size!r}")

    @property
    def reverse_channels(self) -> bool:
        """True when RGB images must be fed as BGR."""
        return self.channel_order == "BGR"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        return cls(mean=tuple(values["mean"]), std=tuple(values["std"]),
                   channel_order=values["channel_order"], input_size=int(values["input_size"]))


# torchvision's ImageNet weights: RGB, mean/std of ImageNet in 0..1 scaled to pixels.
TORCHVISION = Preprocessing()
# BVLC Caffe weights (and the ONNX model zoo's bvlc_alexnet / caffenet): BGR, the ImageNet mean
# pixel subtracted, no scaling.
CAFFE = Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR",
                      input_size=227)
