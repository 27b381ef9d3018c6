"""AlexNet-family architectures: the spec of one network as data.

An `Architecture` lists the conv blocks (filters, kernel, stride, padding, groups, and the LRN
and max-pool after the ReLU, in either order) and the FC widths; `architecture(name)` builds the
named ones. Shapes are computed here (`conv_shapes`, `output_shape`), so a network, an importer
or a feature file can be sized without building a module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..ops.geometry import as_padding, as_pair, pooled_length
from ..ops.layers import LRN, MaxPool
from .preprocessing import CAFFE, TORCHVISION, Preprocessing

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")


@dataclass(frozen=True)
class ConvBlock:
    """conv (kernel, stride, padding, groups) + ReLU, then optional LRN and max-pool in `order`."""

    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: LRN | None = None
    pool: MaxPool | None = None
    order: str = "lrn_pool"


@dataclass(frozen=True)
class Architecture:
    """One AlexNet-family network.

    Attributes:
        name: "alexnet", "caffenet", "torchvision" or a free name (imported graphs).
        convs: the five conv blocks.
        fc: widths of fc6 and fc7.
        num_classes: width of fc8; None builds a headless network (no fc8).
        input_size: side of the square input the FC layers are sized for.
        adaptive_pool: torchvision's AdaptiveAvgPool2d((n, n)) after conv5, or None.
    """

    name: str
    convs: tuple[ConvBlock, ...]
    fc: tuple[int, int] = (4096, 4096)
    num_classes: int | None = 1000
    input_size: int = 224
    adaptive_pool: int | None = None

    def conv_shapes(self, height: int | None = None, width: int | None = None
                    ) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """For each conv block, (C, H, W) right after the convolution and after the whole block
        (ReLU, LRN, pool), for one input_size x input_size image, or a height x width one (the
        conv blocks take any size; a whole image in shared mode)."""
        height = self.input_size if height is None else height
        width = self.input_size if width is None else width
        size = self.input_size if (height, width) == (self.input_size,) * 2 else (height, width)
        shapes = []
        for block in self.convs:
            height, width = ((side + 2 * block.padding - block.kernel_size) // block.stride + 1
                             for side in (height, width))
            if min(height, width) < 1:
                raise ValueError(f"{self.name}: input_size={size} is too small for the conv "
                                 f"layers (a feature map shrinks to nothing)")
            conv = (block.out_channels, height, width)
            if block.pool is not None:
                kh, kw = as_pair(block.pool.kernel_size, "kernel_size")
                sh, sw = as_pair(block.pool.stride, "stride")
                top, left, bottom, right = as_padding(block.pool.padding)
                if (kh, sh, top, bottom) != (kw, sw, left, right):
                    raise ValueError(f"{self.name}: pools must treat height and width alike "
                                     f"(square inputs stay square), got {block.pool}")
                if min(height, width) + top + bottom < kh:
                    raise ValueError(f"{self.name}: input_size={size} is too small for the "
                                     f"pooling layers")
                height, width = (pooled_length(side, kh, sh, top, bottom, block.pool.ceil_mode)
                                 for side in (height, width))
            shapes.append((conv, (block.out_channels, height, width)))
        return shapes

    def conv5_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) that enters fc6 for an input_size x input_size image."""
        c, h, w = self.conv_shapes()[-1][1]
        if self.adaptive_pool is not None:
            h = w = self.adaptive_pool
        return c, h, w

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """Shape of one image's output at `layer`: (C, H, W) for conv layers, (D,) for FC."""
        if layer in CONV_LAYERS:
            return self.conv_shapes()[CONV_LAYERS.index(layer)][1]
        widths = dict(zip(FC_LAYERS, (*self.fc, self.num_classes)))
        if layer not in self.layers():
            raise ValueError(f"layer must be one of {', '.join(self.layers())}, got {layer!r}")
        return (widths[layer],)

    def layers(self) -> tuple[str, ...]:
        """Names of the layers whose output a caller can ask for, in network order."""
        return CONV_LAYERS + (FC_LAYERS if self.num_classes is not None else FC_LAYERS[:2])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Architecture:
        def block(b: dict) -> ConvBlock:
            lrn = LRN(**b["lrn"]) if b.get("lrn") else None
            pool = MaxPool(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in b["pool"].items()}) if b.get("pool") else None
            return ConvBlock(**{**b, "lrn": lrn, "pool": pool})

        return cls(name=values["name"], convs=tuple(block(b) for b in values["convs"]),
                   fc=tuple(values["fc"]), num_classes=values["num_classes"],
                   input_size=int(values["input_size"]), adaptive_pool=values["adaptive_pool"])


def _scaled(channels: int, width: float, groups: int = 2) -> int:
    """channels * width, at least `groups`, a multiple of `groups` (conv2/4/5 are grouped)."""
    return max(groups, int(round(channels * width / groups)) * groups)


def architecture(name: str = "alexnet", *, width: float = 1.0, input_size: int | None = None,
                 num_classes: int | None = 1000, lrn_k: float = 1.0) -> Architecture:
    """The spec of a named network of the family.

    Args:
        name: "alexnet" (Krizhevsky/BVLC: 96-256-384-384-256 filters, groups 2 on conv2/4/5,
            ReLU -> LRN -> max-pool after conv1/2), "caffenet" (the same with the pool before
            the LRN) or "torchvision" (64-192-384-256-256, no LRN, adaptive average pool).
        width: multiplier for every conv and FC width (small variants, tests); 1.0 is the paper's.
        input_size: 224 or 227 (default: 227 for alexnet/caffenet as in Caffe, 224 for
            torchvision). Pools round up (Caffe's rule; identical to rounding down at 227).
        num_classes: width of fc8, or None for a network that ends at fc7.
        lrn_k: the LRN bias k (1 for the BVLC weights, 2 in Krizhevsky's paper).
    """
    if not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    if name in ("alexnet", "caffenet"):
        order = "lrn_pool" if name == "alexnet" else "pool_lrn"
        lrn, pool = LRN(5, 1e-4, 0.75, lrn_k), MaxPool(3, 2, 0, ceil_mode=True)
        c = [_scaled(n, width) for n in (96, 256, 384, 384, 256)]
        convs = (ConvBlock(c[0], 11, 4, 0, 1, lrn, pool, order),
                 ConvBlock(c[1], 5, 1, 2, 2, lrn, pool, order),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 2),
                 ConvBlock(c[4], 3, 1, 1, 2, None, pool))
        arch = Architecture(name, convs, input_size=input_size or 227, adaptive_pool=None)
    elif name == "torchvision":
        pool = MaxPool(3, 2, 0, ceil_mode=False)
        c = [_scaled(n, width, 1) for n in (64, 192, 384, 256, 256)]
        convs = (ConvBlock(c[0], 11, 4, 2, 1, None, pool),
                 ConvBlock(c[1], 5, 1, 2, 1, None, pool),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 1),
                 ConvBlock(c[4], 3, 1, 1, 1, None, pool))
        arch = Architecture(name, convs, input_size=input_size or 224, adaptive_pool=6)
    else:
        raise ValueError(f"name must be 'alexnet', 'caffenet' or 'torchvision', got {name!r}")
    fc = _scaled(4096, width, 1)
    arch = replace(arch, fc=(fc, fc), num_classes=num_classes)
    arch.conv5_shape()  # fails early, naming input_size, when it is too small
    return arch


def default_preprocessing(arch: Architecture) -> Preprocessing:
    """The input convention of the weights usually published for `arch`."""
    base = TORCHVISION if arch.name == "torchvision" else CAFFE
    return replace(base, input_size=arch.input_size)
