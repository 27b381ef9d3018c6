"""conv_block: one AlexNet block, convolution + bias, ReLU, LRN and max-pool.

Two ways to compute it:
- "framework": PyTorch's convolution (oneDNN on CPUs, cuDNN on GPUs), then the fused ReLU + LRN +
  max-pool epilogue, relu_lrn_maxpool. Convolutions run in precision.compute_dtype: bf16 and
  fp16 inputs on a CPU without bf16 units are computed in fp32 and the result stored in the
  input's dtype, as the networks do.
- "triton": the whole block in one Triton kernel (torch.ops.cnnxfer.conv_block_triton, GPUs):
  the convolution's output never leaves the chip.
backend="auto" takes the framework path on CPUs; on GPUs it times both once per block shape and
keeps the faster (`conv_block_choices()` shows what it picked, and the cnnxfer.conv_block logger
says so at INFO). Blocks with neither LRN nor pool stay on the framework path untimed. The first
call of a shape on a GPU therefore compiles and times a few Triton tiles (CNNXFER_TUNE=0: one).
"""
from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from .geometry import IntOrPair, as_padding, as_pair
from .layers import LRN, MaxPool
from .lrn_pool import relu_lrn_maxpool
from .max_pool import max_pool
from .precision import compute_dtype

log = logging.getLogger("cnnxfer.conv_block")

CONV_BLOCK_BACKENDS = ("auto", "native", "triton", "reference")
# What "auto" picked per block shape on GPUs (see conv_block_choices).
_CHOICES: dict[tuple, str] = {}


def conv_block_choices() -> dict[tuple, str]:
    """backend="auto"'s pick per GPU block shape, "triton" or "framework" (with the reason when
    the Triton kernel could not be used): {(x shape, weight shape, dtype, stride, padding,
    groups, lrn, pool, order, device): choice}. A copy."""
    return dict(_CHOICES)


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
        backend: "triton": the whole block in one Triton kernel (ReLU always; float32 /
            bfloat16 / float16 on a GPU, or in Triton's interpreter); "native" / "reference":
            PyTorch's convolution, then that backend of relu_lrn_maxpool; "auto": native on
            CPUs, on GPUs whichever of the two paths was faster for this shape (timed once).
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
    if backend not in CONV_BLOCK_BACKENDS:
        raise ValueError(f"backend must be one of {CONV_BLOCK_BACKENDS}, got {backend!r}")
    if backend == "triton":
        return _triton_block(x, weight, bias, stride, padding, groups, lrn, pool, order)
    if backend == "auto" and x.device.type == "cuda" and not autocast:
        if _auto_choice(x, weight, bias, stride, padding, groups, lrn, pool, order) == "triton":
            return _triton_block(x, weight, bias, stride, padding, groups, lrn, pool, order)
    return _framework_block(x, weight, bias, stride, padding, groups, lrn, pool, order, backend,
                            autocast)


def _framework_block(x, weight, bias, stride, padding, groups, lrn, pool, order, backend,
                     autocast):
    """PyTorch's convolution, then relu_lrn_maxpool's `backend`."""
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


# ------------------------------------------------------------------ the Triton block


def _triton_arguments(stride, padding, groups, lrn, pool, order) -> tuple:
    """conv_block's arguments as torch.ops.cnnxfer.conv_block_triton takes them (after x,
    weight, bias): no LRN is the identity LRN, no pool a 1 x 1 / 1 pool."""
    if order not in ("lrn_pool", "pool_lrn"):
        raise ValueError(f"order must be 'lrn_pool' or 'pool_lrn', got {order!r}")
    if lrn is None:
        lrn_args = (1, 0.0, 0.0, 1.0)
    else:
        lrn_args = (lrn.size, float(lrn.alpha), float(lrn.beta), float(lrn.k))
    if pool is None:
        pool_args = ([1, 1], [1, 1], [0, 0, 0, 0], False)
    else:
        pool_args = (list(as_pair(pool.kernel_size, "pool.kernel_size")),
                     list(as_pair(pool.stride, "pool.stride")), list(as_padding(pool.padding)),
                     bool(pool.ceil_mode))
    return (list(as_pair(stride, "stride")), list(as_pair(padding, "padding")), groups,
            *lrn_args, *pool_args, order == "pool_lrn")


def _triton_block(x, weight, bias, stride, padding, groups, lrn, pool, order):
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"backend='triton' runs on a CUDA device (or in Triton's interpreter, "
                         f"TRITON_INTERPRET=1); x is on {x.device}")
    from cnnxfer.kernels import conv_block as kernel  # noqa: F401  (imports triton)

    y = torch.ops.cnnxfer.conv_block_triton(
        x, weight, bias, *_triton_arguments(stride, padding, groups, lrn, pool, order))
    if not x.is_contiguous(memory_format=torch.channels_last):  # NCHW in, NCHW out
        y = y.contiguous()
    return y


def _auto_choice(x, weight, bias, stride, padding, groups, lrn, pool, order) -> str:
    """"triton" or "framework" for this GPU block: timed once per shape, then remembered.

    Nothing is timed while torch.compile traces or a CUDA graph is captured: there the shape's
    earlier choice holds, else the framework path (warm up once before capturing)."""
    key = (tuple(x.shape), tuple(weight.shape), x.dtype, as_pair(stride, "stride"),
           as_pair(padding, "padding"), groups, lrn, pool, order, x.device)
    if key in _CHOICES:
        return _CHOICES[key].split(" ")[0]
    if torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing():
        return "framework"
    why_not = _why_not_triton(x, weight, stride, padding, groups, lrn, pool, order)
    if why_not is not None:
        _CHOICES[key] = f"framework ({why_not})"
        log.info("conv_block %s: framework (%s)", key[:2], why_not)
        return "framework"
    args = (stride, padding, groups, lrn, pool, order)
    with torch.no_grad():
        try:
            fused = _time_cuda(lambda: _triton_block(x, weight, bias, *args))
        except Exception as error:  # the kernel did not compile here: keep the framework
            _CHOICES[key] = f"framework (Triton failed: {type(error).__name__}: {error})"
            log.warning("conv_block %s: Triton kernel failed, framework path used: %s",
                        key[:2], error)
            return "framework"
        framework = _time_cuda(lambda: _framework_block(x, weight, bias, *args, "auto", False))
        # The two paths on this very input must agree before the faster one is trusted: a
        # Triton or driver version that miscompiles the kernel costs speed, never results.
        error = disagreement(_triton_block(x, weight, bias, *args),
                             _framework_block(x, weight, bias, *args, "auto", False))
    if error is not None:
        _CHOICES[key] = f"framework (Triton disagreed: relative error {error:.1e})"
        log.warning("conv_block %s: the Triton block disagrees with the framework path "
                    "(relative error %.1e); framework path used", key[:2], error)
        return "framework"
    choice = "triton" if fused < framework else "framework"
    _CHOICES[key] = f"{choice} (triton {fused:.3f} ms, framework {framework:.3f} ms)"
    log.info("conv_block %s: %s", key[:2], _CHOICES[key])
    return choice


def disagreement(fused: torch.Tensor, framework: torch.Tensor) -> float | None:
    """The largest difference between the two paths' outputs relative to the largest value,
    when it exceeds what their roundings allow (bf16 / fp16: 3e-2; fp32: 5e-3, TF32 products),
    else None. NaN counts as a disagreement."""
    allowed = 5e-3 if fused.dtype == torch.float32 else 3e-2
    scale = framework.abs().amax().float().clamp_min(1e-30)
    error = float(((fused.float() - framework.float()).abs().amax() / scale).item())
    return None if error <= allowed else error


def _why_not_triton(x, weight, stride, padding, groups, lrn, pool, order) -> str | None:
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"dtype {x.dtype}"
    if lrn is None and pool is None:
        # conv + ReLU alone (AlexNet's conv3, conv4): nothing to keep on chip, and not worth a
        # compile and a timing on the first call
        return "no LRN or pool to fuse"
    from cnnxfer.kernels import conv_block as kernel

    (stride, padding, groups, size, alpha, beta, k, pool_kernel, pool_stride, *_rest) = \
        _triton_arguments(stride, padding, groups, lrn, pool, order)
    geometry = kernel.block_geometry(weight, stride, padding, groups, size, alpha, beta, k,
                                pool_kernel, pool_stride)
    return kernel.fusable(geometry)


def _time_cuda(run, repeats: int = 10) -> float:
    """Median milliseconds of run() on the current CUDA stream (after two warm-up calls)."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]
