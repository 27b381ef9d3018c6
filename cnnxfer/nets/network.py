"""Conv-block networks (AlexNet, ZFNet, VGG, OverFeat, imported chains) as modules, whose conv
blocks run through cnnxfer's fused ops.

    net = cnnxfer.nets.network("alexnet")              # BVLC layout, random weights
    net = cnnxfer.nets.network("vgg16", seed=0)        # any name of architecture.NAMES
    net = cnnxfer.weights.load("alexnet.safetensors")  # or .pth (torchvision), .onnx (model zoo)
    fc7 = net(batch, layer="fc7")                      # [N, 4096]

`ConvNet` (0.2's name `AlexNet` is kept) is a module built from an `Architecture`, with one
parameter pair per layer under the layer's name (conv1..conv5 and fc6..fc8 for AlexNet, conv1_1
.. fc8 for VGG). Two backends compute the same function: "reference" runs plain PyTorch layers
(the spec) and "engine" (the default) runs engine.run: PyTorch's best convolutions and GEMMs
with the ReLU + LRN + max-pool epilogues fused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import compat, reference
from . import engine
from .architecture import Architecture, architecture, default_preprocessing
from .preprocessing import Preprocessing

BACKENDS = ("engine", "reference")


class ConvNet(nn.Module):
    """A conv-block network (see `Architecture`), always usable for inference as is.

    Parameters: one nn.Conv2d per conv layer and one nn.Linear per FC layer, under the layer
    names of arch.layers() (AlexNet: conv1..conv5, fc6, fc7, fc8; the class layer is absent when
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
        for name, block in zip(arch.conv_names(), arch.convs):
            self.add_module(name, nn.Conv2d(in_channels, block.out_channels, block.kernel_size,
                                            block.stride, block.padding, groups=block.groups))
            in_channels = block.out_channels
        c, h, w = arch.fc_input_shape()
        widths = [c * h * w, *arch.fc_widths()]
        for name, (n_in, n_out) in zip(arch.fc_names(), zip(widths, widths[1:])):
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

    def train(self, mode: bool = True) -> ConvNet:
        # A frozen feature extractor: there is no dropout to switch and nothing to train here;
        # adaptation layers live elsewhere. Always eval, so features never depend on a mode flag.
        return super().train(False)

    def extra_repr(self) -> str:
        return (f"arch={self.arch.name!r}, backend={self.backend!r}, "
                f"preprocessing={self.preprocessing}")

    def check_layer(self, layer: str | None) -> str:
        layers = self.layers
        if layer is None:
            return layers[-1]
        if layer not in layers:
            raise ValueError(f"layer must be one of {', '.join(layers)}, got {layer!r}")
        return layer

    def forward(self, x: torch.Tensor, layer: str | None = None,
                backend: str | None = None, *, start: str | None = None) -> torch.Tensor:
        layer = self.check_layer(layer)
        backend = _check_backend(backend or self.backend)
        if start is not None:
            return self._forward_from(x, start, layer, backend)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a [N, 3, H, W] tensor, got {got}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (normalized pixels), got {x.dtype}")
        stop = self.layers.index(layer)
        if stop >= len(self.arch.convs):
            c, h, w = self.arch.fc_input_shape()
            if x.shape[2] != self.arch.input_size or x.shape[3] != self.arch.input_size:
                raise ValueError(f"x must be [N, 3, {self.arch.input_size}, "
                                 f"{self.arch.input_size}] for layer {layer!r} "
                                 f"({self.arch.fc_names()[0]} expects {c}x{h}x{w} "
                                 f"{self.arch.last_conv} features), got {tuple(x.shape)}")
        # The network is frozen: no forward records gradients, whatever the backend. no_grad
        # rather than inference_mode, so features can feed layers that are being trained.
        with torch.no_grad():
            if backend == "reference":
                return self._reference_forward(x, stop)
            return engine.run(self, x, layer)

    def _forward_from(self, x: torch.Tensor, start: str, layer: str, backend: str
                      ) -> torch.Tensor:
        """The layers after `start` on x, the output of `start` ([N, C, H, W] for the last conv
        layer, conv5 for AlexNet: the windows of a shared map, sized as for one input_size
        image)."""
        last = self.arch.last_conv
        if start != last:
            raise ValueError(f"start must be {last!r} (the FC layers from {last} windows), got "
                             f"{start!r}")
        stop = self.layers.index(layer)
        if stop < len(self.arch.convs):
            raise ValueError(f"layer must come after start={start!r}, got {layer!r}")
        expected = self.arch.conv_shapes()[-1][1]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be [N, {', '.join(map(str, expected))}] {last} "
                             f"features, got {got}")
        with torch.no_grad():
            if backend == "reference":
                return self._reference_forward(x, stop, first=len(self.arch.convs))
            return engine.run(self, x, layer, start=start)

    def reference_forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """The spec as plain PyTorch layers, without forward's checks or its no_grad:
        what torch.compile baselines trace."""
        return self._reference_forward(x, self.layers.index(self.check_layer(layer)))

    # ---------------------------------------------------------------- reference: the spec

    def _reference_forward(self, x: torch.Tensor, stop: int, first: int = 0) -> torch.Tensor:
        for index, (name, block) in enumerate(zip(self.arch.conv_names(), self.arch.convs)):
            if index < first:
                continue
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
        hidden = len(self.arch.fc)
        for index, name in enumerate(self.arch.fc_names()):
            fc = getattr(self, name)
            x = F.linear(x, fc.weight.to(x.dtype), fc.bias.to(x.dtype))
            if index < hidden:  # the class layer gives logits: no ReLU
                x = F.relu(x)
            if len(self.arch.convs) + index == stop:
                return x
        raise AssertionError("unreachable: stop is checked against self.layers")

    # ---------------------------------------------------------------- engine: the fast path

    def engine_weights(self, dtype: torch.dtype, device: torch.device, channels_last: bool,
                       packed_linear: bool) -> dict[str, torch.Tensor]:
        """The parameters as engine.run reads them (engine.prepare_weights), cached until a
        parameter changes (keyed by each tensor's version counter and storage). Under
        torch.compile nothing is cached: the compiler folds the casts itself."""
        key = (dtype, device, channels_last, packed_linear)
        stamp = None
        if not torch.compiler.is_compiling():
            stamp = tuple((p.data_ptr(), compat.tensor_version(p)) for p in self.parameters())
        # no stamp while traced, nor where torch hides version counters: nothing to key on
        cacheable = stamp is not None and None not in (version for _, version in stamp)
        cached = self._cast_cache.get(key)
        if cacheable and cached is not None and cached[0] == stamp:
            return cached[1]
        prepared = engine.prepare_weights(self.named_parameters(), dtype, device, channels_last,
                                          packed_linear)
        if cacheable:
            self._cast_cache = {k: v for k, v in self._cast_cache.items() if k[1] == device}
            self._cast_cache[key] = (stamp, prepared)
        return prepared


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def network(name: str | Architecture = "alexnet", *,
            preprocessing: Preprocessing | None = None, backend: str = "engine",
            seed: int | None = None, **arch_options) -> ConvNet:
    """A named network (architecture.NAMES: alexnet, caffenet, torchvision, zfnet, vgg11..19,
    overfeat_fast, overfeat_accurate) or an Architecture, with freshly initialized weights
    (PyTorch's default init, or deterministic with `seed`). For pretrained weights use
    cnnxfer.weights.load. arch_options: width, input_size, num_classes, lrn_k (see
    `architecture`; not with an Architecture)."""
    if isinstance(name, Architecture):
        if arch_options:
            raise ValueError(f"arch_options apply to named networks, not to an Architecture; "
                             f"got {sorted(arch_options)}")
        arch = name
    else:
        arch = architecture(name, **arch_options)
    if seed is None:
        return ConvNet(arch, preprocessing, backend=backend)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvNet(arch, preprocessing, backend=backend)


def alexnet(name: str = "alexnet", **options) -> ConvNet:
    """network(name, **options): 0.2's name for it, whose default is AlexNet."""
    return network(name, **options)


AlexNet = ConvNet  # 0.2's name of the module class
