"""AlexNet-family networks whose conv blocks run through cnnxfer's fused ops.

    net = cnnxfer.nets.alexnet()                       # BVLC layout, random weights
    net = cnnxfer.weights.load("alexnet.safetensors")  # or .pth (torchvision), .onnx (model zoo)
    fc7 = net(batch, layer="fc7")                      # [N, 4096]

An `Architecture` is the spec of one network (filters, kernels, LRN and pooling of each conv
block, the FC widths); `AlexNet` is a module built from it, with parameters named conv1..conv5 and
fc6..fc8. Two backends compute the same function: "reference" runs plain PyTorch layers (the spec)
and "engine" (the default) runs the convolutions and GEMMs through PyTorch's best kernels with the
ReLU + LRN + max-pool epilogues fused by cnnxfer.ops.relu_lrn_maxpool, in-place ReLUs and no
dropout.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import ops, reference
from .pooling import as_padding, as_pair, pooled_length
from .preprocessing import CAFFE, TORCHVISION, Preprocessing
from .specs import LRN, MaxPool

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
BACKENDS = ("engine", "reference")


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

    def conv_shapes(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """For each conv block, (C, H, W) right after the convolution and after the whole block
        (ReLU, LRN, pool), for one input_size x input_size image."""
        side, shapes = self.input_size, []
        for block in self.convs:
            side = (side + 2 * block.padding - block.kernel_size) // block.stride + 1
            if side < 1:
                raise ValueError(f"{self.name}: input_size={self.input_size} is too small for the "
                                 f"conv layers (a feature map shrinks to nothing)")
            conv = (block.out_channels, side, side)
            if block.pool is not None:
                kh, kw = as_pair(block.pool.kernel_size, "kernel_size")
                sh, sw = as_pair(block.pool.stride, "stride")
                top, left, bottom, right = as_padding(block.pool.padding)
                if (kh, sh, top, bottom) != (kw, sw, left, right):
                    raise ValueError(f"{self.name}: pools must treat height and width alike "
                                     f"(square inputs stay square), got {block.pool}")
                if side + top + bottom < kh:
                    raise ValueError(f"{self.name}: input_size={self.input_size} is too small "
                                     f"for the pooling layers")
                side = pooled_length(side, kh, sh, top, bottom, block.pool.ceil_mode)
            shapes.append((conv, (block.out_channels, side, side)))
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
    def from_dict(cls, values: dict) -> "Architecture":
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


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 dot products in hardware (AVX-512-BF16 or AMX). Without
    them oneDNN emulates bf16 convolutions, several times slower than fp32 (8x measured on an AVX2
    Zen 3), so the engine computes in fp32 there and only stores bf16."""
    return _CPU_NATIVE_BF16


# Probed once at import: the probes are cheap, and torch.compile refuses to trace them.
_CPU_NATIVE_BF16 = any(getattr(torch.cpu, probe, lambda: False)()
                       for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the engine's convolutions and GEMMs run in for activations of `dtype`."""
    if (dtype in (torch.bfloat16, torch.float16) and device.type == "cpu"
            and not (dtype == torch.bfloat16 and cpu_has_native_bf16())):
        return torch.float32
    return dtype


class AlexNet(nn.Module):
    """An AlexNet-family network (see `Architecture`), always usable for inference as is.

    Parameters: conv1..conv5 (nn.Conv2d) and fc6, fc7, fc8 (nn.Linear; fc8 absent when
    arch.num_classes is None). `preprocessing` records the input convention of its weights.
    The network is a frozen feature extractor: forward runs under torch.no_grad (outputs never
    require grad) and train() keeps it in eval mode (there is no dropout to switch).

    forward(x, layer=None, backend=None):
        x: [N, 3, S, S] float32/bfloat16/float16 (S = arch.input_size for the FC layers; the conv
            layers take any size), NCHW or channels_last, already normalized.
        layer: the last layer to run, one of `self.layers` (default: the last one). Conv layers
            return [N, C, H, W] after their ReLU/LRN/pool; FC layers return [N, D] after their
            ReLU (fc8: the logits, no ReLU).
        backend: "engine" or "reference" (default: self.backend).
    Returns the activations in x's dtype.
    """

    def __init__(self, arch: Architecture, preprocessing: Preprocessing | None = None, *,
                 backend: str = "engine"):
        super().__init__()
        self.arch = arch
        self.preprocessing = preprocessing or default_preprocessing(arch)
        self.backend = _check_backend(backend)
        in_channels = 3
        for name, block in zip(CONV_LAYERS, arch.convs):
            self.add_module(name, nn.Conv2d(in_channels, block.out_channels, block.kernel_size,
                                            block.stride, block.padding, groups=block.groups))
            in_channels = block.out_channels
        c, h, w = arch.conv5_shape()
        widths = [c * h * w, *arch.fc] + ([arch.num_classes] if arch.num_classes else [])
        for name, (n_in, n_out) in zip(FC_LAYERS, zip(widths, widths[1:])):
            self.add_module(name, nn.Linear(n_in, n_out))
        self.eval()
        self._cast_cache: dict = {}  # (dtype, device, channels_last, packed) -> weights

    @property
    def layers(self) -> tuple[str, ...]:
        return self.arch.layers()

    def clear_cache(self) -> None:
        """Drops the engine's cast / prepacked weights. They follow .to(), load_state_dict and
        in-place edits of the parameters by themselves; call this after editing `.data`."""
        self._cast_cache = {}

    def _apply(self, fn, *args, **kwargs):
        self.clear_cache()  # .to(), .cuda(), .float(): the cached copies are of the old tensors
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_cache()
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        # The cache may hold oneDNN-packed tensors, which cannot be pickled or deep-copied.
        state = super().__getstate__()  # already a copy of __dict__
        state["_cast_cache"] = {}
        return state

    def train(self, mode: bool = True) -> "AlexNet":
        # A frozen feature extractor: there is no dropout to switch and nothing to train here;
        # adaptation layers live elsewhere. Always eval, so features never depend on a mode flag.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"arch={self.arch.name!r}, backend={self.backend!r}, preprocessing={self.preprocessing}"

    def check_layer(self, layer: str | None) -> str:
        layers = self.layers
        if layer is None:
            return layers[-1]
        if layer not in layers:
            raise ValueError(f"layer must be one of {', '.join(layers)}, got {layer!r}")
        return layer

    def forward(self, x: torch.Tensor, layer: str | None = None,
                backend: str | None = None) -> torch.Tensor:
        layer = self.check_layer(layer)
        backend = _check_backend(backend or self.backend)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a [N, 3, H, W] tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (normalized pixels), got {x.dtype}")
        stop = self.layers.index(layer)
        if stop >= len(CONV_LAYERS):
            c, h, w = self.arch.conv5_shape()
            if x.shape[2] != self.arch.input_size or x.shape[3] != self.arch.input_size:
                raise ValueError(f"x must be [N, 3, {self.arch.input_size}, "
                                 f"{self.arch.input_size}] for layer {layer!r} (fc6 expects "
                                 f"{c}x{h}x{w} conv5 features), got {tuple(x.shape)}")
        # The network is frozen: no forward records gradients, whatever the backend. no_grad
        # rather than inference_mode, so features can feed layers that are being trained.
        with torch.no_grad():
            if backend == "reference":
                return self._reference_forward(x, stop)
            return self._engine_forward(x, stop)

    def reference_forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """The spec as plain PyTorch layers, without forward's checks or its no_grad:
        what torch.compile baselines trace."""
        return self._reference_forward(x, self.layers.index(self.check_layer(layer)))

    # ---------------------------------------------------------------- reference: the spec

    def _reference_forward(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        for index, (name, block) in enumerate(zip(CONV_LAYERS, self.arch.convs)):
            conv = getattr(self, name)
            x = reference.conv_block(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype),
                                     stride=block.stride, padding=block.padding,
                                     groups=block.groups, lrn=block.lrn, pool=block.pool,
                                     order=block.order)
            if index == stop:
                return x
        if self.arch.adaptive_pool is not None:
            x = F.adaptive_avg_pool2d(x, self.arch.adaptive_pool)
        x = torch.flatten(x, 1)
        for index, name in enumerate(FC_LAYERS[:len(self.layers) - len(CONV_LAYERS)]):
            fc = getattr(self, name)
            x = F.linear(x, fc.weight.to(x.dtype), fc.bias.to(x.dtype))
            if name != "fc8":
                x = F.relu(x)
            if len(CONV_LAYERS) + index == stop:
                return x
        raise AssertionError("unreachable: stop is checked against self.layers")

    # ---------------------------------------------------------------- engine: the fast path

    def _weights(self, dtype: torch.dtype, device: torch.device, channels_last: bool) -> dict:
        """Parameters cast to the compute dtype/device/format, cached until a parameter changes
        (keyed by each tensor's version counter and storage). FC weights are transposed views
        for addmm, or prepacked for oneDNN where `_packed_linear` applies."""
        packed = _packed_linear(dtype, device)
        compiling = torch.compiler.is_compiling()  # traced: no cache, the compiler folds casts
        key = (dtype, device, channels_last, packed)
        stamp = None if compiling else tuple((p.data_ptr(), p._version) for p in self.parameters())
        cached = self._cast_cache.get(key)
        if cached is not None and cached[0] == stamp and not compiling:
            return cached[1]
        cast = {}
        for name, param in self.named_parameters():
            t = param.detach().to(device=device, dtype=dtype)
            if t.dim() == 4 and channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            elif t.dim() == 2:
                t = torch.ops.mkldnn._reorder_linear_weight(t, 32) if packed else t.t()
            cast[name] = t
        if not compiling:
            self._cast_cache = {k: v for k, v in self._cast_cache.items() if k[1] == device}
            self._cast_cache[key] = (stamp, cast)
        return cast

    def _engine_forward(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        out_dtype = x.dtype
        out_format = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                      and not x.is_contiguous() else torch.contiguous_format)
        dtype = compute_dtype(out_dtype, x.device)
        # oneDNN's CPU convolutions and the fused epilogue are faster channels_last (conv1 1.35x
        # measured); on GPUs the caller's layout is kept.
        channels_last = x.device.type == "cpu" or out_format == torch.channels_last
        w = self._weights(dtype, x.device, channels_last)
        x = x.to(dtype, memory_format=torch.channels_last if channels_last else out_format)
        for index, (name, block) in enumerate(zip(CONV_LAYERS, self.arch.convs)):
            x = ops.conv_block(x, w[f"{name}.weight"], w[f"{name}.bias"], stride=block.stride,
                               padding=block.padding, groups=block.groups, lrn=block.lrn,
                               pool=block.pool, order=block.order)
            if index == stop:
                return x.to(out_dtype, memory_format=out_format)
        if self.arch.adaptive_pool is not None:
            x = F.adaptive_avg_pool2d(x, self.arch.adaptive_pool)
        x = torch.flatten(x.contiguous(), 1)  # fc6 reads conv5 in NCHW order
        packed = _packed_linear(dtype, x.device)
        for index, name in enumerate(FC_LAYERS[:len(self.layers) - len(CONV_LAYERS)]):
            relu = name != "fc8"
            if packed:  # GEMM + bias + ReLU in one oneDNN call on prepacked weights
                x = torch.ops.mkldnn._linear_pointwise(x, w[f"{name}.weight"], w[f"{name}.bias"],
                                                       "relu" if relu else "none", [], "")
            else:
                x = torch.addmm(w[f"{name}.bias"], x, w[f"{name}.weight"])
                x = F.relu_(x) if relu else x
            if len(CONV_LAYERS) + index == stop:
                return x.to(out_dtype)
        raise AssertionError("unreachable: stop is checked against self.layers")


def _packed_linear(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether FC layers run as oneDNN GEMMs on prepacked weights: fp32 on CPUs with oneDNN
    (1.5x faster than addmm for fc6/fc7 at batch 32, measured on an AVX2 Zen 3)."""
    # Under torch.compile the opaque packed tensors cannot be traced; inductor packs on its own.
    return (device.type == "cpu" and dtype == torch.float32 and ENGINE_OPTIONS["packed_linear"]
            and not torch.compiler.is_compiling() and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


# Switches for the engine's optional paths; tests turn them off to check the plain path too.
ENGINE_OPTIONS = {"packed_linear": True}


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def alexnet(name: str = "alexnet", *, preprocessing: Preprocessing | None = None,
            backend: str = "engine", seed: int | None = None, **arch_options) -> AlexNet:
    """A network of the family with freshly initialized weights (PyTorch's default init, or
    deterministic with `seed`). For pretrained weights use cnnxfer.weights.load.
    arch_options: width, input_size, num_classes, lrn_k (see `architecture`)."""
    arch = architecture(name, **arch_options)
    if seed is None:
        return AlexNet(arch, preprocessing, backend=backend)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AlexNet(arch, preprocessing, backend=backend)
