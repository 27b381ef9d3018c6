"""Gradient of relu_lrn_maxpool, written with aten ops so that it also runs under torch.compile,
and the autograd registration that attaches it to each op of that schema (the compiled op and the
Triton one). A leaf module (torch only), so the Triton kernels may use it.

Forward (lrn_pool order):  r = relu(x);  l = LRN(r);  y = maxpool(l)
  LRN:  l_c = r_c * D_c^-beta,  D_c = k + alpha/size * sum_{j in window(c)} r_j^2
  dL/dr_i = g_i * D_i^-beta
            - 2 * alpha * beta / size * r_i * sum_{c: i in window(c)} g_c * l_c / D_c
  (for an odd window, "c such that i is in window(c)" is window(i) itself).
The max-pool routes each output gradient to the position that held the max (the same position
torch.max_pool2d picks). bfloat16 and float16 are differentiated in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over the channel window [c - size//2, c + size//2] (zero outside), t: [N, C, H, W]."""
    half = size // 2
    padded = F.pad(t, (0, 0, 0, 0, half, half))
    channels = t.shape[1]
    total = padded[:, 0:channels]
    for offset in range(1, size):
        total = total + padded[:, offset:offset + channels]
    return total


def _lrn_denominator(r: torch.Tensor, size: int, alpha: float, k: float) -> torch.Tensor:
    return k + (alpha / size) * _window_sum(r * r, size)


def _lrn_backward(grad: torch.Tensor, r: torch.Tensor, size: int, alpha: float, beta: float,
                  k: float) -> torch.Tensor:
    d = _lrn_denominator(r, size, alpha, k)
    scale = d.pow(-beta)
    back = _window_sum(grad * r * scale / d, size)
    return grad * scale - (2.0 * alpha * beta / size) * r * back


def _pool_indices(t: torch.Tensor, kernel_size, stride, padding, out_hw) -> torch.Tensor:
    """Flat indices (into the -inf-padded plane) of each window's max."""
    top, left, bottom, right = padding
    padded = F.pad(t, (left, right, top, bottom), value=float("-inf"))
    _, indices = F.max_pool2d(padded, kernel_size, stride, 0, ceil_mode=True, return_indices=True)
    return indices[..., : out_hw[0], : out_hw[1]]


def _unpool(grad: torch.Tensor, indices: torch.Tensor, input_hw, padding) -> torch.Tensor:
    top, left, bottom, right = padding
    n, c = grad.shape[:2]
    height, width = input_hw[0] + top + bottom, input_hw[1] + left + right
    plane = grad.new_zeros(n, c, height * width)
    plane.scatter_add_(2, indices.reshape(n, c, -1), grad.reshape(n, c, -1))
    plane = plane.view(n, c, height, width)
    return plane[:, :, top: top + input_hw[0], left: left + input_hw[1]]


def relu_lrn_maxpool_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    kernel_size,
    stride,
    padding,
    ceil_mode: bool,
    pool_first: bool,
    relu: bool,
) -> torch.Tensor:
    """dL/dx given dL/dy; arguments as torch.ops.cnnxfer.relu_lrn_maxpool takes them."""
    del ceil_mode  # grad_out's shape already says which windows exist
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(compute)
    g = grad_out.to(compute)
    r = xc.clamp_min(0) if relu else xc
    in_hw = tuple(r.shape[-2:])
    out_hw = tuple(g.shape[-2:])
    if pool_first:
        indices = _pool_indices(r, kernel_size, stride, padding, out_hw)
        pooled = torch.gather(
            F.pad(r, (padding[1], padding[3], padding[0], padding[2]), value=float("-inf"))
            .flatten(2), 2, indices.flatten(2)).view_as(g)
        grad_r = _unpool(_lrn_backward(g, pooled, size, alpha, beta, k), indices, in_hw, padding)
    else:
        normalized = r * _lrn_denominator(r, size, alpha, k).pow(-beta)
        indices = _pool_indices(normalized, kernel_size, stride, padding, out_hw)
        grad_r = _lrn_backward(_unpool(g, indices, in_hw, padding), r, size, alpha, beta, k)
    if relu:
        grad_r = grad_r * (xc > 0)
    return grad_r.to(x.dtype)


# ------------------------------------------------------------------ autograd registration

# size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, pool_first, relu
_ARGUMENT_COUNT = 10


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.arguments = inputs[1:]


def _backward(ctx, grad_out):
    (x,) = ctx.saved_tensors
    return (relu_lrn_maxpool_backward(grad_out, x, *ctx.arguments),) + (None,) * _ARGUMENT_COUNT


def register_autograd(op_name: str) -> None:
    """Makes `op_name` ("cnnxfer::relu_lrn_maxpool" or its Triton twin) differentiable in x."""
    torch.library.register_autograd(op_name, _backward, setup_context=_setup_context)
