"""The engine's forward pass of a conv-block network (nets.ConvNet): the fast path.

Convolutions and GEMMs are PyTorch's best (oneDNN on CPUs, cuDNN and cuBLAS on GPUs); every conv
block's ReLU + LRN + max-pool epilogue is fused by ops.conv_block; ReLUs run in place; there is no
dropout. Activations are computed in ops.compute_dtype (fp32 where the CPU would emulate bf16)
and returned in the input's dtype. On CPUs the convolutions run channels_last, the layout oneDNN
is fastest in, and fp32 FC layers run as oneDNN GEMMs on prepacked weights where torch offers them
(ops.compat), with bias and ReLU fused into the call.

The weights come from the network (ConvNet.engine_weights), cast, laid out and packed once and
cached until a parameter changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from ..ops import compat


def uses_packed_linear(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether FC layers run as oneDNN GEMMs on prepacked weights: fp32 on CPUs with oneDNN.
    Never while torch.compile traces: the packed tensors are opaque to it, and inductor packs
    weights on its own."""
    return (device.type == "cpu" and dtype == torch.float32
            and not torch.compiler.is_compiling() and compat.packed_linear_available())


def prepare_weights(named_parameters, dtype: torch.dtype, device: torch.device,
                    channels_last: bool, packed_linear: bool) -> dict[str, torch.Tensor]:
    """The parameters as the engine reads them: cast to `dtype` on `device`, conv weights
    channels_last if asked, FC weights prepacked for oneDNN (packed_linear) or as transposed
    [in, out] views for addmm."""
    prepared = {}
    for name, param in named_parameters:
        t = param.detach().to(device=device, dtype=dtype)
        if t.dim() == 4 and channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        elif t.dim() == 2:
            t = compat.pack_linear_weight(t, 32) if packed_linear else t.t()
        prepared[name] = t
    return prepared


def run(net, x: torch.Tensor, layer: str, *, packed_linear: bool | None = None,
        start: str | None = None) -> torch.Tensor:
    """net's activations at `layer` for x [N, 3, H, W] (checked by the caller), in x's dtype and,
    for conv layers, x's memory format. packed_linear: None decides by uses_packed_linear; False
    forces the addmm path (both paths are tested). start: x is the output of that layer
    (the last conv layer, conv5 for AlexNet: windows cut from a shared map), and the layers
    after it run."""
    stop = net.layers.index(layer)
    first = net.layers.index(start) + 1 if start is not None else 0
    out_dtype = x.dtype
    out_format = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                  and not x.is_contiguous() else torch.contiguous_format)
    dtype = ops.compute_dtype(out_dtype, x.device)
    if packed_linear is None:
        packed_linear = uses_packed_linear(dtype, x.device)
    # CPUs: channels_last, oneDNN's fastest layout; on GPUs the caller's layout is kept.
    channels_last = x.device.type == "cpu" or out_format == torch.channels_last
    w = net.engine_weights(dtype, x.device, channels_last, packed_linear)
    x = x.to(dtype, memory_format=torch.channels_last if channels_last else out_format)
    arch = net.arch
    for index, (name, block) in enumerate(zip(arch.conv_names(), arch.convs)):
        if index < first:
            continue
        x = ops.conv_block(x, w[f"{name}.weight"], w[f"{name}.bias"], stride=block.stride,
                           padding=block.padding, groups=block.groups, lrn=block.lrn,
                           pool=block.pool, order=block.order)
        if index == stop:
            return x.to(out_dtype, memory_format=out_format)
    if arch.adaptive_pool is not None:
        x = F.adaptive_avg_pool2d(x, arch.adaptive_pool)
    x = torch.flatten(x.contiguous(), 1)  # the first FC layer reads the last conv in NCHW order
    for index, name in enumerate(arch.fc_names()):
        relu = index < len(arch.fc)  # the class layer gives logits
        if packed_linear:
            x = compat.packed_linear(x, w[f"{name}.weight"], w[f"{name}.bias"], relu)
        else:
            x = torch.addmm(w[f"{name}.bias"], x, w[f"{name}.weight"])
            x = F.relu_(x) if relu else x
        if len(arch.convs) + index == stop:
            return x.to(out_dtype)
    raise AssertionError("unreachable: layer is checked against net.layers")
