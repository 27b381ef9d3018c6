"""cnnxfer's public ops: argument checks, backend choice, fake kernels and autograd.

Each op is a real torch op (torch.ops.cnnxfer.*): it dispatches by device, traces under
torch.compile(fullgraph=True) through its fake kernel, and differentiates through
register_autograd. The functions here are the friendly faces: keyword arguments, PyTorch-style
int-or-pair sizes, and errors that name the argument, the value and what was expected.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from . import _extension, reference
from .lrn_pool_backward import relu_lrn_maxpool_backward
from .pooling import IntOrPair, as_padding, as_pair, pooled_length
from .specs import LRN, MaxPool

_extension.load()

BACKENDS = ("auto", "native", "triton", "reference")
_ORDERS = ("lrn_pool", "pool_lrn")
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


# --------------------------------------------------------------------------- relu_lrn_maxpool

def _check_lrn_pool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, order):
    """Returns the op's positional arguments after checking every one of them."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-d (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float64, bfloat16 or float16, got {x.dtype}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 2 == 0:
        raise ValueError(f"size (the LRN window) must be a positive odd int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
                value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    if kh <= 0 or kw <= 0:
        raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    pads = as_padding(padding)
    for side, pad, window in zip(("top", "left", "bottom", "right"), pads, (kh, kw, kh, kw)):
        if not 0 <= pad <= window // 2:
            raise ValueError(
                f"padding {side} must lie in [0, kernel_size // 2] = [0, {window // 2}], "
                f"got padding={padding!r}")
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    height, width = x.shape[-2:]
    out_h = pooled_length(height, kh, sh, pads[0], pads[2], bool(ceil_mode))
    out_w = pooled_length(width, kw, sw, pads[1], pads[3], bool(ceil_mode))
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"kernel_size {(kh, kw)} is larger than the padded input "
            f"{(height + pads[0] + pads[2], width + pads[1] + pads[3])} of x with shape "
            f"{tuple(x.shape)} and padding={padding!r}")
    return (size, float(alpha), float(beta), float(k), [kh, kw], [sh, sw], list(pads),
            bool(ceil_mode), order == "pool_lrn")


def _lrn_pool_backend(x: torch.Tensor, backend: str) -> Callable:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        # CPU: the C++ kernel. GPU: the CUDA kernel when this build has it, else Triton. (Neither
        # GPU kernel has been timed against the other yet, so this order is not a measurement.)
        native_here = x.device.type == "cpu" or _extension.has_kernel(
            "cnnxfer::relu_lrn_maxpool", x.device.type.upper())
        backend = "native" if native_here else "triton"
    if backend == "native":
        return torch.ops.cnnxfer.relu_lrn_maxpool
    if backend == "triton":
        return triton_lrn_pool_op()
    return _reference_lrn_pool


def triton_lrn_pool_op():
    """torch.ops.cnnxfer.relu_lrn_maxpool_triton, registering it on first use (imports triton)."""
    from cnnxfer.kernels import lrn_pool  # noqa: F401  (registers the op and its autograd)

    if not _registered_autograd.get("relu_lrn_maxpool_triton"):
        _register_lrn_pool_autograd("cnnxfer::relu_lrn_maxpool_triton")
    return torch.ops.cnnxfer.relu_lrn_maxpool_triton


def _reference_lrn_pool(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                        pool_first, relu):
    return reference.relu_lrn_maxpool(x, size, alpha, beta, k, kernel_size, stride, padding,
                                      ceil_mode, "pool_lrn" if pool_first else "lrn_pool", relu)


def relu_lrn_maxpool(
    x: torch.Tensor,
    *,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    kernel_size: IntOrPair = 3,
    stride: IntOrPair = 2,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    order: str = "lrn_pool",
    relu: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """ReLU, local response normalization across channels and max-pooling in one pass.

    Means exactly ``F.max_pool2d(F.local_response_norm(F.relu(x), size, alpha, beta, k),
    kernel_size, stride, padding, ceil_mode=ceil_mode)`` (order="lrn_pool", AlexNet); with
    order="pool_lrn" the max-pool comes first (CaffeNet, GoogLeNet). See
    cnnxfer.reference.relu_lrn_maxpool.

    Args:
        x: [N, C, H, W] float32, float64, bfloat16 or float16, NCHW or channels_last, CPU or GPU.
            bf16/fp16 are accumulated in float32.
        size: LRN window across channels (odd); alpha, beta, k: LRN constants (>= 0).
        kernel_size, stride: int or (height, width).
        padding: int, (height, width) or ONNX-style (top, left, bottom, right); pads are -inf.
        ceil_mode: as F.max_pool2d.
        relu: apply the ReLU first (False: LRN + pool only).
        backend: "auto" (C++ on CPU, CUDA or Triton on GPU), "native", "triton", "reference".

    Returns:
        [N, C, OH, OW] in x's dtype, channels_last when x is channels_last.
    """
    args = _check_lrn_pool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                                order)
    return _lrn_pool_backend(x, backend)(x, *args, bool(relu))


def _fake_relu_lrn_maxpool(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                           pool_first, relu):
    out_h = pooled_length(x.shape[2], kernel_size[0], stride[0], padding[0], padding[2], ceil_mode)
    out_w = pooled_length(x.shape[3], kernel_size[1], stride[1], padding[1], padding[3], ceil_mode)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last
                       else torch.contiguous_format)


torch.library.register_fake("cnnxfer::relu_lrn_maxpool")(_fake_relu_lrn_maxpool)

_LRN_POOL_ARG_NAMES = ("size", "alpha", "beta", "k", "kernel_size", "stride", "padding",
                       "ceil_mode", "pool_first", "relu")
_registered_autograd: dict[str, bool] = {}


def _lrn_pool_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.arguments = inputs[1:]


def _lrn_pool_backward(ctx, grad_out):
    (x,) = ctx.saved_tensors
    return (relu_lrn_maxpool_backward(grad_out, x, *ctx.arguments),) + (None,) * len(
        _LRN_POOL_ARG_NAMES)


def _register_lrn_pool_autograd(op_name: str) -> None:
    torch.library.register_autograd(op_name, _lrn_pool_backward,
                                    setup_context=_lrn_pool_setup_context)
    _registered_autograd[op_name.split("::")[1]] = True


_register_lrn_pool_autograd("cnnxfer::relu_lrn_maxpool")


# --------------------------------------------------------------------------- conv_block

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

    The convolution is PyTorch's own (oneDNN on CPUs, cuDNN on GPUs: the best there is); the
    ReLU + LRN + max-pool epilogue is the fused relu_lrn_maxpool. lrn=None or pool=None leaves
    that layer out (then plain PyTorch ReLU / max-pool run). Reference:
    cnnxfer.reference.conv_block.

    Args:
        x: [N, C_in, H, W]; weight: [C_out, C_in / groups, KH, KW]; bias: [C_out] or None; all in
            one dtype and on one device. bf16 + channels_last is the fast path on CPUs and GPUs.
    Returns:
        [N, C_out, OH, OW] in x's dtype and memory format.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a 4-d [C_out, C_in/groups, KH, KW] tensor, got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None and isinstance(x, torch.Tensor) and tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}; "
                             f"expected one device")
    y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if lrn is None:  # nothing to fuse: PyTorch's ReLU (in place on the fresh conv output), pool
        y = F.relu_(y)
        return y if pool is None else reference.max_pool(y, pool.kernel_size, pool.stride,
                                                         pool.padding, pool.ceil_mode)
    if pool is None:  # LRN alone is the fused op with a 1x1 / stride-1 pool
        pool = MaxPool(kernel_size=1, stride=1, padding=0)
    return relu_lrn_maxpool(y, size=lrn.size, alpha=lrn.alpha, beta=lrn.beta, k=lrn.k,
                            kernel_size=pool.kernel_size, stride=pool.stride,
                            padding=pool.padding, ceil_mode=pool.ceil_mode, order=order,
                            backend=backend)


# --------------------------------------------------------------------------- extract_patches

_IMAGE_DTYPES = (torch.uint8,) + _FLOAT_DTYPES


def _as_box_table(boxes, images: torch.Tensor) -> torch.Tensor:
    """boxes as the op's int64 [K, 5] (image, x0, y0, x1, y1) table on the images' device, after
    checking every box; errors name the first bad box by index."""
    table = torch.as_tensor(boxes)
    if table.dim() != 2 or table.shape[1] not in (4, 5):
        raise ValueError(f"boxes must be [K, 4] (x0, y0, x1, y1) or [K, 5] (image, x0, y0, x1, "
                         f"y1), got shape {tuple(table.shape)}")
    if table.shape[1] == 4:
        if images.shape[0] != 1:
            raise ValueError(f"boxes [K, 4] name no image but images holds {images.shape[0]}; "
                             f"pass [K, 5] rows (image, x0, y0, x1, y1)")
        table = torch.cat([table.new_zeros(table.shape[0], 1), table], dim=1)
    host = table.detach().cpu()
    if host.is_floating_point():
        fractional = (host != host.round()) | ~host.isfinite()
        if fractional.any():
            index = int(fractional.any(dim=1).nonzero()[0])
            raise ValueError(f"boxes[{index}] = {host[index].tolist()} must hold integer pixel "
                             f"coordinates")
    elif host.dtype == torch.bool or host.is_complex():
        raise TypeError(f"boxes must be integer or float, got {host.dtype}")
    host = host.to(torch.int64)
    count, _, height, width = images.shape
    image, x0, y0, x1, y1 = host.unbind(1)
    bad_image = (image < 0) | (image >= count)
    if bad_image.any():
        index = int(bad_image.nonzero()[0])
        raise ValueError(f"boxes[{index}] points at image {int(image[index])} but images holds "
                         f"{count}")
    bad_box = (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x1 <= x0) | (y1 <= y0)
    if bad_box.any():
        index = int(bad_box.nonzero()[0])
        raise ValueError(
            f"boxes[{index}] = (x0, y0, x1, y1) = {tuple(host[index, 1:].tolist())} must have "
            f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (image {int(image[index])})")
    return host.to(images.device)


def _as_channel_values(name: str, values, channels: int) -> list[float] | None:
    if values is None:
        return None
    values = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten().tolist()]
    if len(values) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {values}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {values}")
    if name == "std" and any(v == 0 for v in values):
        raise ValueError(f"std must not contain 0, got {values}")
    return values


def extract_patches(
    images: torch.Tensor,
    boxes,
    *,
    size: int = 224,
    mean=None,
    std=None,
    out_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    antialias: bool = True,
    reverse_channels: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Crops, resizes and normalizes one square network input per box, in one pass.

    Means exactly cnnxfer.reference.extract_patches: each crop images[i, :, y0:y1, x0:x1] is
    resized to size x size by F.interpolate(mode="bilinear", align_corners=False,
    antialias=antialias), its channels reversed if reverse_channels (RGB images, BGR networks such
    as Caffe weights), normalized as (value - mean[c]) / std[c] per output channel, and cast.

    Args:
        images: one image [C, H, W] or a batch [N, C, H, W]; uint8 (0..255) or floating; any
            strides (an HWC array's permuted view works without a copy).
        boxes: [K, 4] (x0, y0, x1, y1) for one image, or [K, 5] (image, x0, y0, x1, y1) as
            torchvision.ops.roi_align takes them; integer pixel coordinates, x1/y1 exclusive.
        size: side of the output patches, in pixels.
        mean, std: C values each, in the images' units (0..255 for uint8), output-channel order.
        out_dtype: float32 (default), float64, bfloat16 or float16.
        channels_last: return the batch in channels_last memory format (what a bf16 CPU or GPU
            convolution wants).
        antialias: True (default) low-pass filters crops larger than size, as torchvision's
            Resize does by default; the paper's largest patches (the whole short side of a
            500x375 image) shrink 1.7x, and more for larger images, where plain bilinear aliases.
        backend: "auto", "native", "triton" or "reference".

    Returns:
        [K, C, size, size] in out_dtype. Not differentiable.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be [C, H, W] or [N, C, H, W], got shape "
                         f"{tuple(images.shape)}")
    if images.dtype not in _IMAGE_DTYPES:
        raise TypeError(f"images must be uint8 or floating, got {images.dtype}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if out_dtype is not None and out_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"out_dtype must be float32, float64, bfloat16 or float16, got "
                        f"{out_dtype}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    channels = images.shape[1]
    table = _as_box_table(boxes, images)
    args = (table, size, _as_channel_values("mean", mean, channels),
            _as_channel_values("std", std, channels), out_dtype, bool(channels_last),
            bool(antialias), bool(reverse_channels))
    if backend == "auto":
        native_here = images.device.type == "cpu" or _extension.has_kernel(
            "cnnxfer::extract_patches", images.device.type.upper())
        backend = "native" if native_here else "triton"
    if backend == "reference":
        return reference.extract_patches(images, table.cpu(), size, args[2], args[3], out_dtype,
                                         bool(channels_last), bool(antialias),
                                         bool(reverse_channels)).to(images.device)
    if backend == "triton":
        from cnnxfer.kernels import patches  # noqa: F401  (registers the op)

        return torch.ops.cnnxfer.extract_patches_triton(images, *args)
    return torch.ops.cnnxfer.extract_patches(images, *args)


@torch.library.register_fake("cnnxfer::extract_patches")
def _fake_extract_patches(images, boxes, size, mean, std, out_dtype, channels_last, antialias,
                          reverse_channels):
    return torch.empty((boxes.shape[0], images.shape[1], size, size),
                       dtype=out_dtype or torch.float32, device=images.device,
                       memory_format=torch.channels_last if channels_last
                       else torch.contiguous_format)
