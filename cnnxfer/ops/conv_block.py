"""conv_block: one AlexNet block, convolution + bias, ReLU, LRN and max-pool.

The convolution is PyTorch's own (oneDNN on CPUs, cuDNN on GPUs); the ReLU + LRN + max-pool
epilogue is the fused relu_lrn_maxpool. Convolutions run in precision.compute_dtype: bf16 and fp16
inputs on a CPU without bf16 units are computed in fp32 and the result stored in the input's
dtype, as the networks do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import IntOrPair
from .layers import LRN, MaxPool
from .lrn_pool import relu_lrn_maxpool
from .max_pool import max_pool
from .precision import compute_dtype


def conv_block(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    groups: int = 1,
    lrn: LRN | None = LRN(),
    pool: MaxPool | None = MaxPool(),
    order: str = "lrn_pool",
    backend: str = "auto",
) -> torch.Tensor:
    """One AlexNet block: conv2d + bias, ReLU, LRN and max-pool (in `order`).

    Means cnnxfer.ops.reference.conv_block. lrn=None or pool=None leaves that layer out (then
    PyTorch's ReLU and max-pool run instead of the fused op).

    Args:
        x: [N, C_in, H, W] floating, NCHW or channels_last (the faster layout for oneDNN and
            cuDNN convolutions).
        weight: [C_out, C_in / groups, KH, KW]; bias: [C_out] or None; x's dtype and device.
        stride, padding, groups: as F.conv2d.
        lrn, pool, order: the layers after the ReLU ("lrn_pool" or "pool_lrn").
        backend: the fused epilogue's backend (see relu_lrn_maxpool).
    Returns:
        [N, C_out, OH, OW] in x's dtype and memory format. The convolution runs in
        compute_dtype(x.dtype, x.device): fp32 for bf16 on CPUs without bf16 units and for fp16
        on any CPU. Under torch.autocast, autocast chooses the dtype, as it does for F.conv2d.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a 4-d [C_out, C_in/groups, KH, KW] tensor, got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    # Under autocast, autocast picks the convolution's dtype (and mixes input dtypes), as for
    # F.conv2d; otherwise conv_block does, by the compute-dtype rule.
    autocast = torch.is_autocast_enabled(x.device.type)
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is None:
            continue
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}; "
                             f"expected one device")
        if tensor.dtype != x.dtype and not autocast:
            raise TypeError(f"{name} is {tensor.dtype} but x is {x.dtype}; expected one dtype")
    out_dtype = x.dtype
    dtype = out_dtype if autocast else compute_dtype(out_dtype, x.device)
    if dtype != out_dtype:  # emulated bf16 / fp16 convolutions: compute in fp32, store as asked
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if lrn is None:  # nothing to fuse: PyTorch's ReLU (in place on the fresh conv output), pool
        y = F.relu_(y)
        if pool is not None:
            y = max_pool(y, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode)
    else:
        if pool is None:  # LRN alone is the fused op with a 1x1 / stride-1 pool
            pool = MaxPool(kernel_size=1, stride=1, padding=0)
        y = relu_lrn_maxpool(y, size=lrn.size, alpha=lrn.alpha, beta=lrn.beta, k=lrn.k,
                             kernel_size=pool.kernel_size, stride=pool.stride,
                             padding=pool.padding, ceil_mode=pool.ceil_mode, order=order,
                             backend=backend)
    return y if y.dtype == out_dtype or autocast else y.to(out_dtype)
