"""The forward pass of a conv-block network that records gradients: for training the network
itself (pretraining on a source task), where ConvNet.forward is the frozen extractor.

    logits = trainable.forward(net, x, training=True)      # [N, num_classes], grads to net
    loss = F.cross_entropy(logits, y); loss.backward()

backend="engine" runs the conv blocks through ops.conv_block (PyTorch's convolution, then the
fused ReLU + LRN + max-pool, whose backward is cnnxfer's), channels_last; backend="reference"
runs the plain-PyTorch spec (F.local_response_norm, F.max_pool2d) through PyTorch's autograd,
which the tests hold the engine's gradients to. The hidden FC layers (FC6 and FC7 for AlexNet)
are followed by ReLU and dropout (p = 0.5, as AlexNet was trained), the class layer gives the
logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from ..ops import reference
from ..ops.dropout import dropout as drop


def forward(net, x: torch.Tensor, *, layer: str | None = None, dropout: float = 0.5,
            training: bool = True, backend: str = "engine") -> torch.Tensor:
    """net's activations at `layer` (default: its last) for x [N, 3, S, S] float32, with
    gradients to net's parameters (and to x if it requires them). Dropout after FC6/FC7 only
    when training."""
    layer = net.check_layer(layer)
    if backend not in ("engine", "reference"):
        raise ValueError(f"backend must be 'engine' or 'reference', got {backend!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be a [N, 3, H, W] tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
    stop = net.layers.index(layer)
    block_op = ops.conv_block if backend == "engine" else reference.conv_block
    if backend == "engine" and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's fastest layout
    arch = net.arch
    for index, (name, block) in enumerate(zip(arch.conv_names(), arch.convs)):
        conv = getattr(net, name)
        x = block_op(x, conv.weight, conv.bias, stride=block.stride, padding=block.padding,
                     groups=block.groups, lrn=block.lrn, pool=block.pool, order=block.order)
        if index == stop:
            return x
    if arch.adaptive_pool is not None:
        x = F.adaptive_avg_pool2d(x, arch.adaptive_pool)
    x = torch.flatten(x.contiguous(), 1)  # the first FC layer reads the last conv in NCHW order
    for index, name in enumerate(arch.fc_names()):
        fc = getattr(net, name)
        x = F.linear(x, fc.weight, fc.bias)
        if index < len(arch.fc):  # hidden layers; the class layer gives the logits
            x = F.relu(x)
            if len(arch.convs) + index != stop:  # no dropout on the output asked for
                x = drop(x, dropout, training)
        if len(arch.convs) + index == stop:
            return x
    raise AssertionError("unreachable: layer is checked against net.layers")


@torch.no_grad()
def initialize(net, *, seed: int | None = None):
    """Weights for training from scratch: He initialization (normal, fan-in, ReLU gain) for
    every conv and hidden FC layer and a small class layer (std 0.01, so training starts at the
    uniform prediction); biases 0.1 where AlexNet set them positive (conv2, conv4, conv5 when
    the layers are named so, and the hidden FC layers: it used 1, which is too much at He
    scale) so that the ReLUs start alive, else 0. PyTorch's
    default initialization is too small for a network this deep without normalization: the
    signal fades to near-uniform logits and SGD does not move (seen: loss 1.386 for 4 classes
    after 40 steps, where this initialization reaches 0.70). Returns net."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    arch = net.arch
    hidden_fc = arch.fc_names()[:len(arch.fc)]
    positive = {"conv2", "conv4", "conv5", *hidden_fc}
    classes = arch.fc_names()[len(arch.fc):]
    for name in arch.layers():
        module = getattr(net, name)
        fan_in = module.weight[0].numel()
        std = 0.01 if name in classes else (2.0 / fan_in) ** 0.5
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
        module.bias.fill_(0.1 if name in positive else 0.0)
    return net
