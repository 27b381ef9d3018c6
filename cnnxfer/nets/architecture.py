"""Architectures of conv-block networks: the spec of one network as data.

An `Architecture` lists the conv blocks (filters, kernel, stride, padding, groups, and the LRN
and max-pool after the ReLU, in either order) and the FC widths, for chains of any depth:
AlexNet, CaffeNet, ZFNet, VGG-11/13/16/19 and OverFeat are named (`architecture(name)`), and
imported graphs describe their own. Shapes are computed here (`conv_shapes`, `output_shape`),
so a network, an importer or a feature file can be sized without building a module.

Layer names follow one of two schemes (`Architecture.naming`):
  - "sequential": conv1..convN, then fc(N+1).. (AlexNet, ZFNet, OverFeat: conv5 -> fc6);
  - "stages": conv{s}_{i} for the i-th conv of stage s, a stage ending at each max-pool, then
    fc(S+1).. after S stages (VGG: conv1_1 .. conv5_3 -> fc6), as Caffe's model files name them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..ops.geometry import as_padding, as_pair, pooled_length
from ..ops.layers import LRN, MaxPool
from .preprocessing import CAFFE, TORCHVISION, Preprocessing

# AlexNet's layer names (any Architecture gives its own: conv_names(), fc_names(), layers()).
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
NAMINGS = ("sequential", "stages")


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
    """One network: a chain of conv blocks, then FC layers.

    Attributes:
        name: a named architecture (see `architecture`) or a free name (imported graphs).
        convs: the conv blocks, at least one.
        fc: widths of the hidden FC layers (each followed by a ReLU), in order: (4096, 4096)
            for AlexNet's fc6 and fc7.
        num_classes: width of the class layer after them (logits, no ReLU); None builds a
            headless network.
        input_size: side of the square input the FC layers are sized for.
        adaptive_pool: torchvision's AdaptiveAvgPool2d((n, n)) after the last conv, or None.
        naming: "sequential" or "stages" (module docstring).
    """

    name: str
    convs: tuple[ConvBlock, ...]
    fc: tuple[int, ...] = (4096, 4096)
    num_classes: int | None = 1000
    input_size: int = 224
    adaptive_pool: int | None = None
    naming: str = "sequential"

    def __post_init__(self):
        if not self.convs:
            raise ValueError(f"{self.name}: convs must hold at least one ConvBlock, got none")
        if self.naming not in NAMINGS:
            raise ValueError(f"naming must be one of {', '.join(NAMINGS)}, got {self.naming!r}")
        if not self.fc and self.num_classes is None:
            raise ValueError(f"{self.name}: a network needs at least one FC layer (fc widths "
                             f"or num_classes), got fc=() and num_classes=None")
        bad = [w for w in self.fc if not isinstance(w, int) or w < 1]
        if bad:
            raise ValueError(f"{self.name}: fc widths must be positive ints, got {self.fc}")

    # ------------------------------------------------------------------ names

    def conv_names(self) -> tuple[str, ...]:
        """The conv layers' names, in order (conv1..conv5 for AlexNet, conv1_1.. for VGG)."""
        if self.naming == "sequential":
            return tuple(f"conv{i + 1}" for i in range(len(self.convs)))
        names, stage, index = [], 1, 1
        for block in self.convs:
            names.append(f"conv{stage}_{index}")
            stage, index = (stage + 1, 1) if block.pool is not None else (stage, index + 1)
        return tuple(names)

    def fc_names(self) -> tuple[str, ...]:
        """The FC layers' names: the hidden ones, then the class layer if any (fc6, fc7, fc8
        for AlexNet and VGG)."""
        if self.naming == "sequential":
            first = len(self.convs) + 1
        else:
            first = sum(block.pool is not None for block in self.convs) + 1
            first += self.convs[-1].pool is None  # a last stage that no pool closes
        count = len(self.fc) + (self.num_classes is not None)
        return tuple(f"fc{first + i}" for i in range(count))

    def layers(self) -> tuple[str, ...]:
        """Names of the layers whose output a caller can ask for, in network order."""
        return self.conv_names() + self.fc_names()

    @property
    def last_conv(self) -> str:
        """The last conv layer's name (conv5 for AlexNet): the FC layers read its output."""
        return self.conv_names()[-1]

    # ------------------------------------------------------------------ shapes

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

    def fc_input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) that enters the first FC layer for an input_size x
        input_size image (after the adaptive pool, if any)."""
        c, h, w = self.conv_shapes()[-1][1]
        if self.adaptive_pool is not None:
            h = w = self.adaptive_pool
        return c, h, w

    def conv5_shape(self) -> tuple[int, int, int]:
        """AlexNet's name for fc_input_shape (kept for callers of 0.2)."""
        return self.fc_input_shape()

    def fc_widths(self) -> tuple[int, ...]:
        """Output widths of the FC layers, in fc_names() order."""
        return (*self.fc, *((self.num_classes,) if self.num_classes is not None else ()))

    def output_shape(self, layer: str) -> tuple[int, ...]:
        """Shape of one image's output at `layer`: (C, H, W) for conv layers, (D,) for FC."""
        convs = self.conv_names()
        if layer in convs:
            return self.conv_shapes()[convs.index(layer)][1]
        if layer not in self.layers():
            raise ValueError(f"layer must be one of {', '.join(self.layers())}, got {layer!r}")
        return (self.fc_widths()[self.fc_names().index(layer)],)

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
                   input_size=int(values["input_size"]), adaptive_pool=values["adaptive_pool"],
                   naming=values.get("naming", "sequential"))  # files of 0.2 hold no naming


def _scaled(channels: int, width: float, groups: int = 2) -> int:
    """channels * width, at least `groups`, a multiple of `groups` (conv2/4/5 are grouped)."""
    return max(groups, int(round(channels * width / groups)) * groups)


# VGG's conv widths per stage (Simonyan & Zisserman, table 1: configurations A, B, D, E); every
# conv is 3x3, stride 1, padding 1, and every stage ends with a 2x2 max-pool of stride 2.
_VGG_STAGES = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
NAMES = ("alexnet", "caffenet", "torchvision", "zfnet", *_VGG_STAGES, "overfeat_fast",
         "overfeat_accurate")
# Networks whose usual weights come from torchvision (ImageNet mean/std, RGB in 0..1).
_TORCHVISION_LAYOUTS = ("torchvision", *_VGG_STAGES)


def architecture(name: str = "alexnet", *, width: float = 1.0, input_size: int | None = None,
                 num_classes: int | None = 1000, lrn_k: float = 1.0) -> Architecture:
    """The spec of a named network.

    Args:
        name: one of NAMES:
            - "alexnet" (Krizhevsky/BVLC: 96-256-384-384-256 filters, groups 2 on conv2/4/5,
              ReLU -> LRN -> max-pool after conv1/2), "caffenet" (the same with the pool
              before the LRN), "torchvision" (64-192-384-256-256, no LRN, adaptive average
              pool): input 227 (Caffe) or 224 (torchvision);
            - "zfnet" (Zeiler & Fergus 2014: 7x7/2 conv1, 5x5/2 conv2, pool then LRN), 224;
            - "vgg11", "vgg13", "vgg16", "vgg19" (torchvision's layout: 3x3 convs in five
              stages, adaptive average pool to 7x7), 224, layers named conv1_1 .. fc8;
            - "overfeat_fast" (231) and "overfeat_accurate" (221: six convs, fc7..fc9), from
              Sermanet et al. 2014, tables 1 and 3 (no LRN).
        width: multiplier for every conv and FC width (small variants, tests); 1.0 is the paper's.
        input_size: the side the FC layers are sized for (default: the network's own). Pools
            of Caffe networks round up (identical to rounding down at their own size).
        num_classes: width of the class layer, or None for a network that ends at its last
            hidden FC layer (fc7 for AlexNet).
        lrn_k: the LRN bias k (1 for the BVLC weights, 2 in Krizhevsky's paper).
    """
    if not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
    lrn = LRN(5, 1e-4, 0.75, lrn_k)
    fc = (4096, 4096)
    naming, adaptive_pool = "sequential", None
    if name in ("alexnet", "caffenet"):
        order = "lrn_pool" if name == "alexnet" else "pool_lrn"
        pool = MaxPool(3, 2, 0, ceil_mode=True)
        c = [_scaled(n, width) for n in (96, 256, 384, 384, 256)]
        convs = (ConvBlock(c[0], 11, 4, 0, 1, lrn, pool, order),
                 ConvBlock(c[1], 5, 1, 2, 2, lrn, pool, order),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 2),
                 ConvBlock(c[4], 3, 1, 1, 2, None, pool))
        default_size = 227
    elif name == "torchvision":
        pool = MaxPool(3, 2, 0, ceil_mode=False)
        c = [_scaled(n, width, 1) for n in (64, 192, 384, 256, 256)]
        convs = (ConvBlock(c[0], 11, 4, 2, 1, None, pool),
                 ConvBlock(c[1], 5, 1, 2, 1, None, pool),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 1),
                 ConvBlock(c[4], 3, 1, 1, 1, None, pool))
        default_size, adaptive_pool = 224, 6
    elif name == "zfnet":
        # 224 -> conv1 110 -> pool 55 -> conv2 26 -> pool 13 -> conv3..5 13 -> pool 6 (paper,
        # figure 3): Caffe's round-up pools give those sizes.
        pool = MaxPool(3, 2, 0, ceil_mode=True)
        c = [_scaled(n, width, 1) for n in (96, 256, 384, 384, 256)]
        convs = (ConvBlock(c[0], 7, 2, 1, 1, lrn, pool, "pool_lrn"),
                 ConvBlock(c[1], 5, 2, 0, 1, lrn, pool, "pool_lrn"),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 1),
                 ConvBlock(c[4], 3, 1, 1, 1, None, pool))
        default_size = 224
    elif name in _VGG_STAGES:
        pool = MaxPool(2, 2, 0)
        convs = tuple(ConvBlock(_scaled(n, width, 1), 3, 1, 1, 1,
                                pool=pool if i == len(stage) - 1 else None)
                      for stage in _VGG_STAGES[name] for i, n in enumerate(stage))
        default_size, adaptive_pool, naming = 224, 7, "stages"
    elif name == "overfeat_fast":
        # 231 -> 56 -> 28 -> 24 -> 12 -> 12 -> 12 -> 12 -> 6 (Sermanet et al., table 1)
        c = [_scaled(n, width, 1) for n in (96, 256, 512, 1024, 1024)]
        pool = MaxPool(2, 2, 0)
        convs = (ConvBlock(c[0], 11, 4, 0, 1, None, pool),
                 ConvBlock(c[1], 5, 1, 0, 1, None, pool),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 1),
                 ConvBlock(c[4], 3, 1, 1, 1, None, pool))
        default_size, fc = 231, (3072, 4096)
    elif name == "overfeat_accurate":
        # 221 -> 108 -> 36 -> 30 -> 15 -> 15 x 4 -> 5 (table 3): six convs, then fc7..fc9
        c = [_scaled(n, width, 1) for n in (96, 256, 512, 512, 1024, 1024)]
        convs = (ConvBlock(c[0], 7, 2, 0, 1, None, MaxPool(3, 3, 0)),
                 ConvBlock(c[1], 7, 1, 0, 1, None, MaxPool(2, 2, 0)),
                 ConvBlock(c[2], 3, 1, 1, 1),
                 ConvBlock(c[3], 3, 1, 1, 1),
                 ConvBlock(c[4], 3, 1, 1, 1),
                 ConvBlock(c[5], 3, 1, 1, 1, None, MaxPool(3, 3, 0)))
        default_size = 221
    else:
        raise ValueError(f"name must be one of {', '.join(NAMES)}, got {name!r}")
    arch = Architecture(name, convs, fc=tuple(_scaled(n, width, 1) for n in fc),
                        num_classes=num_classes, input_size=input_size or default_size,
                        adaptive_pool=adaptive_pool, naming=naming)
    arch.fc_input_shape()  # fails early, naming input_size, when it is too small
    return arch


def default_preprocessing(arch: Architecture) -> Preprocessing:
    """The input convention of the weights usually published for `arch`."""
    base = TORCHVISION if arch.name in _TORCHVISION_LAYOUTS else CAFFE
    return replace(base, input_size=arch.input_size)
