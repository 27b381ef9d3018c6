#!/usr/bin/env python3
"""GPU report: every cnnxfer GPU path checked against plain PyTorch and timed beside it.

A standalone script, not a pytest file (benches/ collects only bench_*.py and test_*.py):

    python3 benches/gpu_report.py                        # on a CUDA machine (~2 min on an H200)
    python3 benches/gpu_report.py --device cpu --small --compile none   # dry run on a CPU
    TRITON_INTERPRET=1 python3 benches/gpu_report.py --device cpu --small   # with Triton too

Groups of cases, each run in its own child process (a kernel that breaks the CUDA context or
hangs costs only its group; --no-isolate runs them in this process):
  lrn       relu_lrn_maxpool at AlexNet C1 / C2 outputs, fp32 and bf16, NCHW and channels_last
  patches   extract_patches, a batch of images cut on the paper grid (uint8 -> 224x224 patches)
  conv      conv_block on AlexNet conv1 / conv2
  alexnet   the AlexNet engine to fc7 on a batch of patches
  pipeline  PatchFeatureExtractor: one 500x375 image -> paper grid -> fc7

Every row: correctness first (relative error ||out - ref|| / ||ref|| against a float64
reference computed by cnnxfer.ops.reference / backend="reference", on the same random input),
then the median time over repetitions timed with CUDA events (L2 flushed between them).
"vs anchor" is the time of the best plain-PyTorch anchor (eager or torch.compile of the
reference) over the row's time: > 1 means faster than PyTorch. GB/s = bytes read + written by the
op over the time; the copy/fill row is the memory floor. A failure prints one line,
"case X: FAILED <type: message>", the traceback goes to --log, and the report goes on.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

GROUPS = ("lrn", "patches", "conv", "alexnet", "pipeline")
# The most seconds a group may take (the total deadline shortens them further).
GROUP_CAPS = {"lrn": 45, "patches": 40, "conv": 150, "alexnet": 60, "pipeline": 180}
ANCHORS = ("eager", "compile", "loop", "grid_sample")
# Relative error allowed against the float64 reference, by case kind and dtype. Convolutions in
# fp32 run in TF32 on GPUs by default (torch.backends.cudnn.allow_tf32), hence 5e-3 there.
TOLERANCE = {
    ("lrn", "fp32"): 1e-5, ("lrn", "bf16"): 1e-2,
    ("patches", "fp32"): 1e-5, ("patches", "bf16"): 1e-2,
    ("conv", "fp32"): 5e-3, ("conv", "bf16"): 3e-2,
    ("alexnet", "fp32"): 5e-3, ("alexnet", "bf16"): 5e-2,
    ("pipeline", "fp32"): 5e-3, ("pipeline", "bf16"): 5e-2,
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MEAN, STD = [123.68, 116.28, 103.53], [58.40, 57.12, 57.38]


class Interrupted(BaseException):
    """SIGTERM (an outer timeout): stop, keep what was measured, print the table."""


class ContextBroken(BaseException):
    """The CUDA context is unusable (an illegal access is sticky): the group stops."""


def _on_sigterm(signum, frame):
    raise Interrupted()


# ---------------------------------------------------------------------------------- the child


class Context:
    """What a group needs: device, sizes, the timer, where rows and logs go."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.small = args.small
        self.deadline = args.deadline or (time.time() + 1e9)
        self.log_handle = open(args.log, "a") if args.log else sys.stderr  # noqa: SIM115
        self._flush = (torch.empty(256 << 20, dtype=torch.int8, device=self.device)
                       if self.cuda else None)
        self.triton_reason = None
        if importlib.util.find_spec("triton") is None:
            self.triton_reason = "triton is not installed"
        elif not self.cuda and os.environ.get("TRITON_INTERPRET") != "1":
            self.triton_reason = "Triton on the CPU runs only with TRITON_INTERPRET=1"
        self.native_reason = None
        try:
            from cnnxfer.ops import library

            if not library.has_native_kernel(self.device):
                self.native_reason = "this build has no CUDA kernels"
        except Exception as error:  # ExtensionError: not built, or built for another torch
            self.native_reason = f"{type(error).__name__}: {_short(error)}"

    def log(self, line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.log_handle, flush=True)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def late(self, margin: float = 25.0) -> bool:
        return time.time() > self.deadline - margin

    def compile_allowed(self, main: bool) -> str | None:
        """None when a torch.compile anchor may run, else why not."""
        mode = self.args.compile
        if mode == "none" or (mode == "main" and not main):
            return f"not a main case (--compile {mode})" if mode == "main" else "--compile none"
        if self.late(40.0):
            return "skipped: near the time budget"
        return None

    def time(self, fn) -> float:
        """Median seconds of fn() over repetitions (after a warm-up call): CUDA events with the
        L2 cache flushed before each call and the host running ahead (launch overhead hidden
        where the GPU is the bottleneck); wall clock on the CPU."""
        fn()
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        once = time.perf_counter() - start
        budget = self.args.rep_seconds
        reps = int(min(self.args.max_reps, max(3, budget / max(once, 1e-7))))
        if self.late(10.0):
            reps = 3
        if not self.cuda:
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for begin, end in zip(starts, ends):
            self._flush.zero_()
            begin.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return statistics.median(b.elapsed_time(e) for b, e in zip(starts, ends)) * 1e-3

    def check_context(self) -> None:
        """After a failure on the GPU: raise ContextBroken when the context is gone."""
        if not self.cuda:
            return
        try:
            torch.cuda.synchronize(self.device)
            torch.zeros(1, device=self.device).add_(1).item()
        except Exception as error:
            raise ContextBroken(_short(error)) from error


def _short(error: BaseException, limit: int = 220) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def rel_err(out, ref) -> float:
    if isinstance(out, tuple):
        out = out[0]
    if out.dim() == ref.dim() and out.shape[1:] == ref.shape[1:] and out.shape[0] > ref.shape[0]:
        out = out[:ref.shape[0]]  # a reference of the first rows only (float64 is slow)
    if tuple(out.shape) != tuple(ref.shape):
        raise ValueError(f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    diff = out.detach().to(ref.device, torch.float64) - ref
    denom = torch.linalg.vector_norm(ref).item()
    num = torch.linalg.vector_norm(diff).item()
    if not math.isfinite(num):
        return math.inf
    return num / denom if denom else num


def record(ctx, kind, case, dtype, layout, provider, fn, *, ref=None, pick=None, bytes_moved=None,
           channels_last_out=None, skip=None, note=""):
    """One row: correctness against ref (float64; against out[pick] when the reference covers
    only those rows), then the time. A failure becomes a row with its message and one line on
    stdout; the report goes on."""
    row = dict(kind=kind, case=case, dtype=dtype, layout=layout, provider=provider, us=None,
               gbs=None, err=None, ok=None, note=note)
    label = f"{case} {dtype} {layout} {provider}"
    if skip:
        row["note"] = skip
        ctx.log(f"{label}: {skip}")
        _emit(ctx, row)
        return None
    out = None
    try:
        started = time.perf_counter()
        out = fn()
        ctx.sync()
        if ref is not None:
            row["err"] = rel_err(out if pick is None else out[pick], ref)
            tol = TOLERANCE.get((kind, dtype), 1e-2)
            row["ok"] = bool(row["err"] <= tol)
        if channels_last_out is not None and isinstance(out, torch.Tensor) and out.dim() == 4:
            is_cl = out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
            if is_cl != channels_last_out:
                row["ok"] = False
                row["note"] = (row["note"] + " " if row["note"] else "") + (
                    f"output layout {'channels_last' if is_cl else 'NCHW'}, expected "
                    f"{'channels_last' if channels_last_out else 'NCHW'}")
        first = time.perf_counter() - started
        seconds = ctx.time(fn)
        row["us"] = seconds * 1e6
        if bytes_moved:
            row["gbs"] = bytes_moved / seconds / 1e9
        ctx.log(f"{label}: {row['us']:.1f} us, err {row['err']}, first call {first:.2f} s")
    except Exception as error:
        message = f"{type(error).__name__}: {_short(error)}"
        row["note"] = f"FAILED {message}"
        row["ok"] = False
        print(f"case {label}: FAILED {message}", flush=True)
        ctx.log(f"{label}: FAILED\n{traceback.format_exc()}")
        _emit(ctx, row)
        ctx.check_context()
        return None
    _emit(ctx, row)
    return out


def _emit(ctx, row) -> None:
    with open(ctx.args.rows_file, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def _randn(ctx, shape, seed, scale=1.0):
    generator = torch.Generator(device=ctx.device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=ctx.device) * scale


def _layout(x, layout):
    return x.contiguous(memory_format=torch.channels_last) if layout == "cl" else x.contiguous()


def _settle_dynamo():
    # every case compiles the same reference function for new shapes / dtypes / layouts:
    # beyond the recompile limit dynamo would silently fall back to eager
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(256, getattr(torch._dynamo.config, name)))


# ------------------------------------------------------------------------- group: lrn

def group_lrn(ctx):
    from cnnxfer import ops
    from cnnxfer.ops import reference

    n = 2 if ctx.small else 128
    shapes = {"C1": (n, 96, 55, 55), "C2": (n, 256, 27, 27)}
    if ctx.small:
        shapes = {"C1": (n, 16, 15, 15), "C2": (n, 32, 9, 9)}
    ctx.log(f"lrn shapes {shapes}")
    compiled = torch.compile(reference.relu_lrn_maxpool, dynamic=False)
    for name, shape in shapes.items():
        for dtype in ("fp32", "bf16"):
            for layout in ("nchw", "cl"):
                case = f"lrn {name}"
                # x100: the LRN term alpha/size * sum x^2 is then ~0.5 next to k = 1, not 1e-4
                x = _layout(_randn(ctx, shape, seed=1).mul_(100).to(DTYPES[dtype]), layout)
                ref = reference.relu_lrn_maxpool(x.double())
                out_bytes = ref.numel() * x.element_size()
                moved = x.numel() * x.element_size() + out_bytes
                common = dict(ref=ref, bytes_moved=moved, channels_last_out=layout == "cl")
                record(ctx, "lrn", case, dtype, layout, "native",
                       lambda x=x: ops.relu_lrn_maxpool(x, backend="native"),
                       skip=ctx.native_reason, **common)
                record(ctx, "lrn", case, dtype, layout, "triton",
                       lambda x=x: ops.relu_lrn_maxpool(x, backend="triton"),
                       skip=ctx.triton_reason, **common)
                record(ctx, "lrn", case, dtype, layout, "eager",
                       lambda x=x: reference.relu_lrn_maxpool(x), **common)
                main = (dtype, layout) in (("fp32", "nchw"), ("bf16", "cl"))
                record(ctx, "lrn", case, dtype, layout, "compile",
                       lambda x=x: compiled(x), skip=ctx.compile_allowed(main), **common)
                buffer = torch.empty_like(x)
                record(ctx, "lrn", case, dtype, layout, "copy",
                       lambda x=x, buffer=buffer: buffer.copy_(x),
                       bytes_moved=2 * x.numel() * x.element_size(),
                       note="memory floor: copy of x (read + write)")
                del x, ref, buffer


# --------------------------------------------------------------------- group: patches

def _grid_sample(images, table, size, out_dtype, channels_last):
    """The usual batched PyTorch crop: one F.grid_sample per image over all its boxes (plain
    bilinear, no antialias: not the same function, only the speed anchor)."""
    outs = []
    height, width = images.shape[2], images.shape[3]
    steps = (torch.arange(size, dtype=torch.float32, device=images.device) + 0.5) / size
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    for index in range(images.shape[0]):
        boxes = table[table[:, 0] == index, 1:].to(images.device).float()
        k = boxes.shape[0]
        source = images[index].float()[None].expand(k, -1, -1, -1)
        x0, y0, x1, y1 = boxes.unbind(1)
        gx = (x0[:, None] + steps[None] * (x1 - x0)[:, None]) / width * 2 - 1
        gy = (y0[:, None] + steps[None] * (y1 - y0)[:, None]) / height * 2 - 1
        grid = torch.stack([gx[:, None, :].expand(k, size, size),
                            gy[:, :, None].expand(k, size, size)], dim=-1)
        outs.append(F.grid_sample(source, grid, mode="bilinear", align_corners=False))
    out = ((torch.cat(outs) - mean) / std).to(out_dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def group_patches(ctx):
    from cnnxfer import ops
    from cnnxfer.features.grids import paper_grid
    from cnnxfer.ops import reference

    count, width, height, size = (2, 64, 48, 32) if ctx.small else (8, 500, 375, 224)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8,
                           generator=generator).to(ctx.device)
    boxes = paper_grid(width, height)
    if ctx.small:
        boxes = boxes[:: max(1, len(boxes) // 24)]  # a few boxes of every scale
    table = torch.cat([torch.arange(count).repeat_interleave(len(boxes))[:, None],
                       boxes.repeat(count, 1)], dim=1)
    case = f"patches {count}x{len(boxes)}"
    ctx.log(f"{case}: {count} images {width}x{height}, {len(table)} boxes, size {size}")
    # The float64 reference on the host (reference.extract_patches subtracts a host mean tensor,
    # so it cannot run on CUDA images), on every step-th box to keep it to a few seconds.
    step = max(1, len(table) // 400)
    pick = torch.arange(0, len(table), step)
    ref = reference.extract_patches(images.cpu().double(), table[pick], size, MEAN, STD,
                                    torch.float64).to(ctx.device)
    pick = pick.to(ctx.device)
    for dtype, layout in (("bf16", "cl"), ("fp32", "nchw")):
        out_dtype, channels_last = DTYPES[dtype], layout == "cl"
        kwargs = dict(size=size, mean=MEAN, std=STD, out_dtype=out_dtype,
                      channels_last=channels_last)
        out_bytes = len(table) * 3 * size * size * torch.empty((), dtype=out_dtype).element_size()
        moved = images.numel() + out_bytes
        common = dict(ref=ref, pick=pick, bytes_moved=moved, channels_last_out=channels_last)
        record(ctx, "patches", case, dtype, layout, "native",
               lambda kw=kwargs: ops.extract_patches(images, table, backend="native", **kw),
               skip=ctx.native_reason, **common)
        record(ctx, "patches", case, dtype, layout, "triton",
               lambda kw=kwargs: ops.extract_patches(images, table, backend="triton", **kw),
               skip=ctx.triton_reason, **common)
        record(ctx, "patches", case, dtype, layout, "loop",
               lambda kw=kwargs, t=table.to(ctx.device): reference.extract_patches(images, t, **kw),
               note="reference: crop + F.interpolate per box, on the device's tensors",
               **common)
        record(ctx, "patches", case, dtype, layout, "grid_sample",
               lambda d=out_dtype, cl=channels_last: _grid_sample(images, table, size, d, cl),
               bytes_moved=moved, note="no antialias: its error is expected to be large")
        buffer = torch.empty((len(table), 3, size, size), dtype=out_dtype, device=ctx.device)
        record(ctx, "patches", case, dtype, layout, "fill", lambda b=buffer: b.fill_(1.0),
               bytes_moved=out_bytes, note="memory floor: writing the output")
        source = torch.empty_like(buffer)
        record(ctx, "patches", case, dtype, layout, "copy", lambda b=buffer, a=source: b.copy_(a),
               bytes_moved=2 * out_bytes, note="memory floor: copy bandwidth (read + write)")
        del buffer, source


# ------------------------------------------------------------------------ group: conv

def group_conv(ctx):
    from cnnxfer import LRN, MaxPool, ops
    from cnnxfer.ops import reference

    n = 2 if ctx.small else 128
    blocks = {  # input [C, H, W], weight, stride, padding, groups
        "conv1": ((3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
        "conv2": ((96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
    }
    compiled = torch.compile(reference.conv_block, dynamic=False)
    for name, (shape, wshape, stride, padding, groups) in blocks.items():
        conv = dict(stride=stride, padding=padding, groups=groups)
        # AlexNet's order in both dtypes, CaffeNet's (pool first) in bf16
        for dtype, layout, order in (("bf16", "cl", "lrn_pool"), ("bf16", "cl", "pool_lrn"),
                                     ("fp32", "nchw", "lrn_pool")):
            layers = dict(lrn=LRN(), pool=MaxPool(3, 2, 0, ceil_mode=True), order=order)
            case = f"conv_block {name} {order}"
            x = _layout(_randn(ctx, (n, *shape), seed=2, scale=3.0).to(DTYPES[dtype]), layout)
            w = (_randn(ctx, wshape, seed=3) * 0.05).to(DTYPES[dtype])
            b = _randn(ctx, (wshape[0],), seed=4).to(DTYPES[dtype])
            if layout == "cl":
                w = w.contiguous(memory_format=torch.channels_last)
            ref = reference.conv_block(x.double(), w.double(), b.double(), **conv, **layers)
            common = dict(ref=ref, channels_last_out=layout == "cl")
            record(ctx, "conv", case, dtype, layout, "native",
                   lambda x=x, w=w, b=b, c=conv, lay=layers: ops.conv_block(
                       x, w, b, backend="native", **c, **lay),
                   skip=ctx.native_reason, note="cuDNN conv + the CUDA epilogue", **common)
            record(ctx, "conv", case, dtype, layout, "triton",
                   lambda x=x, w=w, b=b, c=conv, lay=layers: ops.conv_block(
                       x, w, b, backend="triton", **c, **lay),
                   skip=ctx.triton_reason, **common)
            if ctx.triton_reason is None:
                _annotate_last(ctx, _tiles_text(x, w))
            if ctx.cuda:  # what "auto" picked for this shape, and the two times it compared
                record(ctx, "conv", case, dtype, layout, "auto",
                       lambda x=x, w=w, b=b, c=conv, lay=layers: ops.conv_block(x, w, b, **c,
                                                                                **lay),
                       **common)
                picked = [v for k, v in ops.conv_block_choices().items()
                          if k[:3] == (tuple(x.shape), tuple(w.shape), x.dtype) and k[8] == order]
                ctx.log(f"{case} {dtype}: auto picked {picked}")
                _annotate_last(ctx, f"auto: {picked[0] if picked else '?'}")
            record(ctx, "conv", case, dtype, layout, "eager",
                   lambda x=x, w=w, b=b, c=conv, lay=layers: reference.conv_block(x, w, b, **c,
                                                                                  **lay),
                   **common)
            record(ctx, "conv", case, dtype, layout, "compile",
                   lambda x=x, w=w, b=b, c=conv, lay=layers: compiled(x, w, b, **c, **lay),
                   skip=ctx.compile_allowed(dtype == "bf16" and order == "lrn_pool"), **common)
            compute = ops.compute_dtype(x.dtype, x.device)
            fx, fw, fb = x.to(compute), w.to(compute), b.to(compute)
            record(ctx, "conv", case, dtype, layout, "conv only",
                   lambda fx=fx, fw=fw, fb=fb, c=conv: F.conv2d(fx, fw, fb, c["stride"],
                                                                c["padding"], 1, c["groups"]),
                   note=f"floor: F.conv2d alone in {str(compute).replace('torch.', '')}")
            if order == "lrn_pool":
                _conv_relu_rows(ctx, name, dtype, layout, x, w, b, conv)
            del x, w, b, ref, fx, fw, fb


def _tiles_text(x, w) -> str:
    """The Triton block's tiles chosen for this shape (after its first call)."""
    from cnnxfer.kernels import conv_block as kernel

    tiles = [t for k, t in kernel.chosen_tiles().items()
             if k[0] == tuple(x.shape[1:]) and k[1] == tuple(w.shape) and k[2] == x.dtype]
    return (f"tiles {tiles[-1].tile_ph}x{tiles[-1].tile_pw} k{tiles[-1].block_k} "
            f"w{tiles[-1].num_warps} s{tiles[-1].num_stages}") if tiles else "tiles untimed"


def _annotate_last(ctx, text) -> None:
    """Appends text to the note of the last row written (rows are JSON lines)."""
    with open(ctx.args.rows_file) as handle:
        lines = handle.readlines()
    if not lines:
        return
    row = json.loads(lines[-1])
    row["note"] = (row["note"] + "; " if row["note"] else "") + text
    lines[-1] = json.dumps(row) + "\n"
    with open(ctx.args.rows_file, "w") as handle:
        handle.writelines(lines)


def _conv_relu_rows(ctx, name, dtype, layout, x, w, b, conv):
    """The Triton implicit-GEMM convolution + ReLU (kernels/conv.py, the conv block's first
    step) against cuDNN's convolution + an in-place ReLU, on the block's shapes."""
    case = f"conv+relu {name}"
    ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), conv["stride"], conv["padding"],
                          1, conv["groups"]))
    skip = ctx.triton_reason
    if skip is None:
        from cnnxfer.kernels import conv as _  # noqa: F401  (registers the op)
    record(ctx, "conv", case, dtype, layout, "triton",
           lambda: torch.ops.cnnxfer.conv2d_relu_triton(x, w, b, conv["stride"],
                                                         conv["padding"], conv["groups"], True),
           ref=ref, skip=skip)
    record(ctx, "conv", case, dtype, layout, "cudnn",
           lambda: F.relu_(F.conv2d(x, w, b, conv["stride"], conv["padding"], 1,
                                    conv["groups"])), ref=ref)


# ---------------------------------------------------------------------- group: alexnet

def _floor_fn(net, batch, dtype, device):
    """The network's convolutions (channels_last) and FC GEMMs alone, on inputs of their shapes."""
    from cnnxfer import nets

    arch = net.arch
    fmt = torch.channels_last
    shapes = [(3, arch.input_size, arch.input_size)] + [out for _, out in arch.conv_shapes()]
    inputs = [torch.randn((batch, *s), device=device).to(dtype).contiguous(memory_format=fmt)
              for s in shapes[:-1]]
    convs = [getattr(net, name) for name in nets.CONV_LAYERS]
    weights = [(c.weight.to(device, dtype).contiguous(memory_format=fmt), c.bias.to(device, dtype))
               for c in convs]
    fcs = [getattr(net, name) for name in ("fc6", "fc7")]
    fc_in = [torch.randn((batch, fc.in_features), device=device).to(dtype) for fc in fcs]
    fc_w = [(fc.bias.to(device, dtype), fc.weight.to(device, dtype).t()) for fc in fcs]

    def run():
        with torch.no_grad():
            for x, (w, b), block in zip(inputs, weights, arch.convs):
                F.conv2d(x, w, b, block.stride, block.padding, 1, block.groups)
            for x, (b, w) in zip(fc_in, fc_w):
                torch.addmm(b, x, w)

    return run


def group_alexnet(ctx):
    from cnnxfer import nets

    batch = 2 if ctx.small else 500
    options = dict(width=0.25) if ctx.small else {}
    net = nets.alexnet("alexnet", seed=0, input_size=224, **options).to(ctx.device)
    engine = "engine(native)" if ctx.native_reason is None else "engine(triton)"
    net64 = copy.deepcopy(net).double()
    check = min(batch, 32)  # float64 reference on the first patches only
    for dtype, layout in (("bf16", "cl"), ("fp32", "nchw")):
        case = f"alexnet fc7 b{batch}"
        x = _layout(_randn(ctx, (batch, 3, 224, 224), seed=5, scale=1.5).to(DTYPES[dtype]),
                    layout)
        with torch.no_grad():
            ref = net64(x[:check].double(), "fc7", backend="reference")
        anchor = copy.deepcopy(net).to(DTYPES[dtype])
        record(ctx, "alexnet", case, dtype, layout, engine,
               lambda x=x: net(x, "fc7"), ref=ref, note=f"error on the first {check} patches")
        record(ctx, "alexnet", case, dtype, layout, "eager",
               lambda x=x, a=anchor: a(x, "fc7", backend="reference"), ref=ref)
        skip = ctx.compile_allowed(dtype == "bf16")
        compiled = None if skip else torch.compile(
            functools.partial(anchor.reference_forward, layer="fc7"), dynamic=False)

        def run_compiled(x=x, compiled=compiled):
            with torch.no_grad():
                return compiled(x)

        record(ctx, "alexnet", case, dtype, layout, "compile", run_compiled, ref=ref, skip=skip)
        compute = nets.compute_dtype(DTYPES[dtype], ctx.device)
        record(ctx, "alexnet", case, dtype, layout, "conv+gemm",
               _floor_fn(net, batch, compute, ctx.device),
               note=f"floor: convolutions and FC GEMMs alone in {str(compute)[6:]}")
        del x, anchor, compiled


# --------------------------------------------------------------------- group: pipeline

def group_pipeline(ctx):
    """One 500x375 image -> its 496 paper-grid patches -> fc7, per image: cnnxfer's extractor
    and its CUDA-graph pipeline against the same pipeline written in plain PyTorch (grid_sample
    crops + the reference network, eager and torch.compile max-autotune), and the floors."""
    from cnnxfer import nets
    from cnnxfer.features import GraphedExtractor, PatchFeatureExtractor
    from cnnxfer.features.grids import paper_grid
    from cnnxfer.features.shared import multiply_adds
    from cnnxfer.ops import reference

    options = dict(width=0.25) if ctx.small else {}
    net = nets.alexnet("alexnet", seed=0, input_size=224, **options)
    width, height = (64, 48) if ctx.small else (500, 375)
    generator = torch.Generator().manual_seed(6)
    # smooth content, as photos have
    small = torch.randint(0, 256, (1, 3, 24, 32), dtype=torch.uint8, generator=generator)
    image = F.interpolate(small.float(), size=(height, width), mode="bilinear")[0]
    image = image.round().clamp(0, 255).to(torch.uint8)
    grid = (lambda w, h: paper_grid(w, h)[:48]) if ctx.small else paper_grid
    boxes = grid(width, height)
    check = min(16, len(boxes))
    prep = net.preprocessing
    net64 = copy.deepcopy(net).double().to(ctx.device)
    table = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.int64), boxes], dim=1)
    with torch.no_grad():
        patches = reference.extract_patches(image[None].double(), table[:check], 224, prep.mean,
                                            prep.std, torch.float64,
                                            reverse_channels=prep.reverse_channels)
        ref = net64(patches.to(ctx.device), "fc7", backend="reference")
    case = f"pipeline {width}x{height} {len(boxes)}p"
    note = f"uint8 image on the host; error on the first {check} patches"
    macs = multiply_adds(net, width, height, boxes)[0]
    ctx.log(f"{case}: {macs / 1e9:.1f} G multiply-adds to fc7")
    device_image = image.to(ctx.device)
    for dtype in ("bf16", "fp32"):
        for max_batch in (256, 512):
            extractor = PatchFeatureExtractor(net, layer="fc7", grid=grid, device=ctx.device,
                                              dtype=DTYPES[dtype], max_batch=max_batch)
            record(ctx, "pipeline", case, dtype, "cl", f"extractor b{max_batch}",
                   lambda e=extractor: e(image)[0][:check], ref=ref, note=note)
        if ctx.cuda:
            try:
                graphed = GraphedExtractor(net, width, height, grid=grid, dtype=DTYPES[dtype],
                                           device=ctx.device)
            except Exception as error:
                message = f"FAILED capture: {type(error).__name__}: {_short(error)}"
                print(f"case {case} {dtype} graphed: {message}", flush=True)
                ctx.log(f"{case} {dtype} graphed: capture FAILED\n{traceback.format_exc()}")
                _emit(ctx, _row("pipeline", case, dtype, "cl", "graphed", None, message,
                                ok=False))
            else:
                record(ctx, "pipeline", case, dtype, "cl", "graphed",
                       lambda g=graphed: g(image)[0][:check], ref=ref, note=note)
                del graphed
        # the plain-PyTorch pipeline: batched grid_sample crops (no antialias), the reference
        # network channels_last; speed anchors (their crops differ, so no error column)
        anchor = copy.deepcopy(net).to(ctx.device, DTYPES[dtype],
                                       memory_format=torch.channels_last)

        def plain(a=anchor, d=DTYPES[dtype]):
            with torch.no_grad():
                crops = _grid_sample(device_image[None], table, 224, d, True)
                return a.reference_forward(crops, layer="fc7")

        record(ctx, "pipeline", case, dtype, "cl", "eager", plain,
               note="grid_sample crops + reference network, channels_last")
        skip = ctx.compile_allowed(dtype == "bf16")
        if skip is None:
            compiled = torch.compile(plain, mode="max-autotune", dynamic=False)
            record(ctx, "pipeline", case, dtype, "cl", "compile", compiled,
                   note="torch.compile(mode='max-autotune') of the eager pipeline")
            del compiled
        else:
            record(ctx, "pipeline", case, dtype, "cl", "compile", None, skip=skip)
        del anchor
    if ctx.cuda:
        _floor_rows(ctx, case, macs)


def _floor_rows(ctx, case, macs) -> None:
    """The floors of the pipeline: its multiply-adds at the measured bf16 matmul rate (a
    cuBLAS GEMM of 8192^3), and the copy bandwidth (1 GiB copied)."""
    n = 2048 if ctx.small else 8192
    a = torch.randn((n, n), device=ctx.device, dtype=torch.bfloat16)
    b = torch.randn((n, n), device=ctx.device, dtype=torch.bfloat16)
    record(ctx, "floor", f"matmul {n}^3 bf16", "bf16", "-", "cublas", lambda: a @ b,
           note=f"flops {2 * n ** 3}")
    rows = _rows(ctx)
    if rows and rows[-1]["us"]:
        rate = 2 * n ** 3 / (rows[-1]["us"] * 1e-6)
        _emit(ctx, _row("pipeline", case, "bf16", "cl", "FLOP floor", 2 * macs / rate * 1e6,
                        f"floor: {2 * macs / 1e9:.0f} GFLOP at {rate / 1e12:.0f} TFLOP/s"))
    src = torch.empty(1 << 30, dtype=torch.uint8, device=ctx.device)
    dst = torch.empty_like(src)
    record(ctx, "floor", "copy 1 GiB", "-", "-", "copy", lambda: dst.copy_(src),
           bytes_moved=2 * src.numel(), note="memory floor: copy bandwidth")


def _row(kind, case, dtype, layout, provider, us, note, ok=None) -> dict:
    """A row that is not timed by record (a derived floor, a failed set-up)."""
    return dict(kind=kind, case=case, dtype=dtype, layout=layout, provider=provider, us=us,
                gbs=None, err=None, ok=ok, note=note)


def _rows(ctx) -> list[dict]:
    with open(ctx.args.rows_file) as handle:
        return [json.loads(line) for line in handle if line.strip()]


GROUP_FUNCTIONS = {"lrn": group_lrn, "patches": group_patches, "conv": group_conv,
                   "alexnet": group_alexnet, "pipeline": group_pipeline}


def run_group(args) -> int:
    torch.manual_seed(0)
    _settle_dynamo()
    ctx = Context(args)
    ctx.log(f"group {args.group} on {ctx.device}; native: {ctx.native_reason or 'yes'}; "
            f"triton: {ctx.triton_reason or 'yes'}")
    try:
        with torch.inference_mode(args.group in ("lrn", "patches", "conv")):
            GROUP_FUNCTIONS[args.group](ctx)
    except ContextBroken as error:
        print(f"case {args.group}: FAILED the CUDA context is broken ({error}); the rest of this "
              f"group is skipped (rerun with CUDA_LAUNCH_BLOCKING=1 to locate it)", flush=True)
        return 3
    except Exception as error:  # set-up of the group itself (imports, inputs, references)
        print(f"case {args.group}: FAILED {type(error).__name__}: {_short(error)}", flush=True)
        ctx.log(f"group {args.group} set-up FAILED\n{traceback.format_exc()}")
        return 2
    return 0


# --------------------------------------------------------------------------- the parent

def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def format_table(rows) -> list[str]:
    anchors = {}
    for row in rows:
        if row["provider"] in ANCHORS and row["us"]:
            key = (row["case"], row["dtype"], row["layout"])
            anchors[key] = min(anchors.get(key, math.inf), row["us"])
    lines = ["| case | dtype | layout | provider | µs | GB/s | vs anchor | rel err | note |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        if row["us"] is None and not row["note"].startswith("FAILED"):
            continue  # skipped: summarized under the table
        anchor = anchors.get((row["case"], row["dtype"], row["layout"]))
        ratio = f"{anchor / row['us']:.2f}x" if anchor and row["us"] else "-"
        err = _fmt(row["err"], ".1e")
        if row["ok"] is False and row["err"] is not None:
            err += " BAD"
        note = row["note"] or ""
        if note.startswith(("memory floor", "floor", "reference", "no antialias", "uint8",
                            "error on")):
            note = ""  # explained once under the table
        us = _fmt(row["us"], ".1f") if row["us"] is None or row["us"] < 1e5 else f"{row['us']:.3g}"
        lines.append(f"| {row['case']} | {row['dtype']} | {row['layout']} | {row['provider']} | "
                     f"{us} | {_fmt(row['gbs'], '.0f')} | {ratio} | {err} | {note[:90]} |")
    return lines


def environment_lines(device) -> list[str]:
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda}), python "
             f"{sys.version.split()[0]}"]
    if importlib.util.find_spec("triton"):
        import triton

        lines[0] += f", triton {triton.__version__}"
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        lines.append(f"GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                     f"{props.multi_processor_count} SMs; cudnn.allow_tf32="
                     f"{torch.backends.cudnn.allow_tf32}, matmul.allow_tf32="
                     f"{torch.backends.cuda.matmul.allow_tf32}")
    try:
        from cnnxfer.ops import library

        lines.append(f"cnnxfer native kernels on {device.type}: "
                     f"{library.has_native_kernel(device)}")
    except Exception as error:
        lines.append(f"cnnxfer native library: {type(error).__name__}: {_short(error)}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CPU dry run)")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help=f"comma-separated subset of {','.join(GROUPS)}")
    parser.add_argument("--compile", choices=("none", "main", "all"), default="main",
                        help="torch.compile anchors: none, the main cases only, or all")
    parser.add_argument("--time-budget", type=float, default=float(os.environ.get(
        "REPORT_BUDGET", 150)), help="seconds for the whole report (soft: late cases shrink)")
    parser.add_argument("--rep-seconds", type=float, default=0.15,
                        help="timing budget per row (at least 3 repetitions)")
    parser.add_argument("--max-reps", type=int, default=100)
    parser.add_argument("--log", default=None, help="progress and tracebacks (default stderr)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="run the groups in this process, not one child each")
    # internal: one group in a child process
    parser.add_argument("--group", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu --small for a dry run", flush=True)
        return 2
    if args.group:
        return run_group(args)

    signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.time()
    deadline = start + args.time_budget
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}; expected some of {GROUPS}")
    handle, rows_file = tempfile.mkstemp(prefix="gpu_report_rows_", suffix=".jsonl")
    os.close(handle)
    for line in environment_lines(torch.device(args.device)):
        print(line, flush=True)
    status = {}
    child = None
    try:
        for index, group in enumerate(groups):
            left = deadline - time.time() - 5 * (len(groups) - index - 1)
            timeout = min(GROUP_CAPS[group] * (4 if args.device == "cpu" else 1), left)
            if timeout < 10:
                status[group] = "skipped (time budget)"
                print(f"case {group}: skipped, time budget spent", flush=True)
                continue
            common = ["--device", args.device, "--compile", args.compile, "--rows-file",
                      rows_file, "--rep-seconds", str(args.rep_seconds), "--max-reps",
                      str(args.max_reps), "--deadline", str(time.time() + timeout)]
            common += ["--small"] if args.small else []
            common += ["--log", args.log] if args.log else []
            began = time.time()
            if args.no_isolate:
                code = main(["--group", group, *common])
            else:
                child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--group",
                                          group, *common])
                try:
                    code = child.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                    code = "timeout"
                    print(f"case {group}: FAILED timeout after {timeout:.0f} s (rows so far kept)",
                          flush=True)
                child = None
            status[group] = f"{code} in {time.time() - began:.0f} s"
    except Interrupted:
        print("interrupted (SIGTERM): printing what was measured", flush=True)
        if child is not None:
            child.kill()
    finally:
        with open(rows_file) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        os.unlink(rows_file)
        print_summary(rows, status, time.time() - start, args)
    failed = sum(1 for r in rows if r["note"].startswith("FAILED"))
    bad = sum(1 for r in rows if r["ok"] is False)
    return 1 if failed or bad else 0


def print_summary(rows, status, seconds, args) -> None:
    failed = sum(1 for r in rows if r["note"].startswith("FAILED"))
    bad = sum(1 for r in rows if r["ok"] is False and not r["note"].startswith("FAILED"))
    lines = ["", f"## cnnxfer GPU report ({args.device}{', small' if args.small else ''}, "
                 f"{seconds:.0f} s; groups: " + ", ".join(f"{g} {s}" for g, s in status.items())
             + ")",
             "anchor = best of eager / torch.compile of the reference (patches: loop / "
             "grid_sample); vs anchor = anchor µs / row µs (> 1: faster); copy / fill / "
             "conv only / conv+gemm = floors; rel err vs float64 reference, BAD = over tolerance "
             "(fp32 convs are TF32 on GPUs by default)"]
    lines += format_table(rows)
    skipped = {}
    for row in rows:
        if row["us"] is None and not row["note"].startswith("FAILED"):
            key = f"{row['provider']} ({row['note']})"
            skipped[key] = skipped.get(key, 0) + 1
    if skipped:
        lines.append("not run: " + "; ".join(f"{k} x{v}" for k, v in skipped.items()))
    lines.append(f"rows: {len(rows)}, failed: {failed}, wrong results (BAD): {bad}")
    lines += target_lines(rows)
    print("\n".join(lines), flush=True)


# The targets on the H200: (what, row of cnnxfer, row of the baseline, at least)
def _find(rows, case_prefix, dtype, provider):
    for row in rows:
        if row["case"].startswith(case_prefix) and row["dtype"] == dtype and \
                row["provider"] == provider and row["us"]:
            return row
    return None


def target_lines(rows) -> list[str]:
    """The targets, each with its measured ratio: met, missed, or not measured."""
    lines = ["", "### targets (bf16)", "| target | measured | goal | |", "|---|---:|---:|---|"]

    def ratio_line(what, fast, slow, goal, how):
        if fast is None or slow is None or not fast["us"] or not slow["us"]:
            lines.append(f"| {what} | not measured | {goal:.2f}x | |")
            return
        ratio = how(fast, slow)
        verdict = "met" if ratio >= goal else "MISSED"
        lines.append(f"| {what} | {ratio:.2f}x | {goal:.2f}x | {verdict} |")

    speedup = lambda fast, slow: slow["us"] / fast["us"]  # noqa: E731
    pipeline = next((r["case"] for r in rows if r["case"].startswith("pipeline")), "pipeline")
    ours = _find(rows, pipeline, "bf16", "graphed") or _find(rows, pipeline, "bf16",
                                                              "extractor b512")
    name = ours["provider"] if ours else "graphed"
    ratio_line(f"{pipeline} images/s, {name} vs eager", ours,
               _find(rows, pipeline, "bf16", "eager"), 1.5, speedup)
    ratio_line(f"{pipeline} images/s, {name} vs compile max-autotune", ours,
               _find(rows, pipeline, "bf16", "compile"), 1.2, speedup)
    floor = _find(rows, pipeline, "bf16", "FLOP floor")
    if ours and floor:
        lines.append(f"| {pipeline}: FLOP floor / {name} time | "
                     f"{floor['us'] / ours['us']:.2f} | - | fraction of the floor |")
    for block in ("conv1", "conv2"):
        for order in ("lrn_pool", "pool_lrn"):
            case = f"conv_block {block} {order}"
            ratio_line(f"{case}: fused Triton block vs cuDNN conv + CUDA epilogue",
                       _find(rows, case, "bf16", "triton"), _find(rows, case, "bf16", "native"),
                       1.3, speedup)
    patches = _find(rows, "patches", "bf16", "native")
    copy_row = _find(rows, "patches", "bf16", "copy")
    ratio_line("patch extractor GB/s / copy GB/s", patches, copy_row, 0.7,
               lambda fast, slow: fast["gbs"] / slow["gbs"])
    return lines


if __name__ == "__main__":
    sys.exit(main())
