"""The fused Triton conv block (torch.ops.cnnxfer.conv_block_triton, ops.conv_block(
backend="triton")) against the reference block in float64.

Without a GPU the kernel runs in Triton's interpreter (tests/devices.py sets TRITON_INTERPRET=1),
so the shapes are AlexNet's conv1 and conv2 geometry at small sizes, full and reduced widths,
chosen so that the pooled map spans several tiles with ragged edges and the channels do not fill
a power of two. The LRN constants are strong (alpha 0.5, k 2) so that an error in the channel
window shows.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from cnnxfer import ops  # noqa: E402
from cnnxfer.kernels import conv_block as kernel  # noqa: E402
from cnnxfer.ops import reference  # noqa: E402
from cnnxfer.ops.layers import LRN, MaxPool  # noqa: E402

from conv_cases import random_conv  # noqa: E402
from devices import HAS_CUDA, needs_triton  # noqa: E402
from devices import TRITON_DEVICE as DEVICE  # noqa: E402

pytestmark = needs_triton
OP = torch.ops.cnnxfer.conv_block_triton
STRONG_LRN = LRN(size=5, alpha=0.5, beta=0.75, k=2.0)
ALEXNET_POOL = MaxPool(kernel_size=3, stride=2)

# (N, C, H, W, C_out, kernel, stride, padding, groups)
SHAPES = {
    "conv1": (2, 3, 59, 63, 24, 11, 4, 0, 1),      # conv 13 x 14, pooled 6 x 6: 2 x 2 tiles
    "conv1_full": (1, 3, 43, 47, 96, 11, 4, 0, 1),  # AlexNet's 96 channels (a 128 tile)
    "conv2": (1, 12, 23, 21, 20, 5, 1, 2, 2),      # two groups of 10 channels in 16-wide halves
    "conv2_full": (1, 96, 9, 11, 256, 5, 1, 2, 2),  # AlexNet's 2 x 128 channels, LRN across both
}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def _inputs(shape, dtype, seed=0, requires_grad=False):
    stride, padding, groups = shape[6:]
    x, weight, bias = random_conv(shape, seed)
    tensors = [t.to(DEVICE, dtype).requires_grad_(requires_grad) for t in (x, weight, bias)]
    return tensors, dict(stride=stride, padding=padding, groups=groups)


def _relative_error(y, expected):
    return ((y.double().cpu() - expected.cpu()).abs().max() / expected.abs().max()).item()


def _expected(x, weight, bias, conv, lrn, pool, order):
    return reference.conv_block(x.detach().double(), weight.detach().double(),
                                bias.detach().double(), **conv, lrn=lrn, pool=pool, order=order)


@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
@pytest.mark.parametrize("name", SHAPES)
def test_matches_the_reference_block(name, order):
    (x, weight, bias), conv = _inputs(SHAPES[name], torch.float32)
    y = ops.conv_block(x, weight, bias, **conv, lrn=STRONG_LRN, pool=ALEXNET_POOL, order=order,
                       backend="triton")
    expected = _expected(x, weight, bias, conv, STRONG_LRN, ALEXNET_POOL, order)
    assert y.shape == expected.shape and y.dtype == torch.float32
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]
    # the LRN is strong enough that leaving it out would fail the check above
    unnormalized = _expected(x, weight, bias, conv, None, ALEXNET_POOL, order)
    assert _relative_error(unnormalized.float(), expected) > 100 * TOLERANCE[torch.float32]


def test_exact_fp32_products_when_tf32_is_off(monkeypatch):
    # cudnn.allow_tf32 off: the IEEE dot (the GPU's exact fp32 path; the interpreter's dots are
    # exact either way, so this checks that the switch reaches the kernel and the key)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert kernel.exact_fp32()
    (x, weight, bias), conv = _inputs(SHAPES["conv1"], torch.float32, seed=11)
    y = ops.conv_block(x, weight, bias, **conv, lrn=STRONG_LRN, pool=ALEXNET_POOL,
                       backend="triton")
    expected = _expected(x, weight, bias, conv, STRONG_LRN, ALEXNET_POOL, "lrn_pool")
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["conv1", "conv2"])
def test_half_precision_accumulates_in_fp32(name, dtype):
    (x, weight, bias), conv = _inputs(SHAPES[name], dtype, seed=1)
    y = OP(x, weight, bias, [conv["stride"]] * 2, [conv["padding"]] * 2, conv["groups"],
           STRONG_LRN.size, STRONG_LRN.alpha, STRONG_LRN.beta, STRONG_LRN.k, [3, 3], [2, 2],
           [0, 0, 0, 0], False, False)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    expected = _expected(x, weight, bias, conv, STRONG_LRN, ALEXNET_POOL, "lrn_pool")
    assert _relative_error(y, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("lrn, pool", [
    (None, ALEXNET_POOL),                                    # VGG-like: conv + ReLU + pool
    (STRONG_LRN, None),                                      # LRN alone
    (None, None),                                            # conv + ReLU
    (STRONG_LRN, MaxPool(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (STRONG_LRN, MaxPool(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1, 0, 1))),
    (LRN(size=4, alpha=0.5, beta=0.75, k=2.0), ALEXNET_POOL),  # even window: asymmetric
], ids=["no-lrn", "no-pool", "neither", "pad-ceil", "rectangular-onnx-pads", "even-lrn"])
@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
def test_block_variants(lrn, pool, order):
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=2)
    y = ops.conv_block(x, weight, bias, **conv, lrn=lrn, pool=pool, order=order,
                       backend="triton")
    expected = _expected(x, weight, bias, conv, lrn, pool, order)
    assert y.shape == expected.shape
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]


def test_channels_split_across_programs_without_lrn():
    # 300 channels in 3 groups: without LRN each program computes one group's block of channels
    (x, weight, bias), conv = _inputs((1, 6, 15, 13, 300, 3, 1, 1, 3), torch.float32, seed=3)
    geometry = kernel.block_geometry(weight, [1, 1], [1, 1], 3, 1, 0.0, 0.0, 1.0, [3, 3], [2, 2])
    assert not geometry.has_lrn and geometry.block_n() == 128
    y = ops.conv_block(x, weight, bias, **conv, lrn=None, pool=ALEXNET_POOL, backend="triton")
    expected = _expected(x, weight, bias, conv, None, ALEXNET_POOL, "lrn_pool")
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]


@pytest.mark.parametrize("tiles", kernel.tile_candidates(kernel.block_geometry(
    torch.empty(20, 6, 5, 5), [1, 1], [2, 2], 2, 5, 0.5, 0.75, 2.0, [3, 3], [2, 2])), ids=str)
def test_every_tile_candidate(tiles, monkeypatch):
    monkeypatch.setattr(kernel, "_choose", lambda *args: tiles)
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=4)
    y = ops.conv_block(x, weight, bias, **conv, lrn=STRONG_LRN, pool=ALEXNET_POOL,
                       backend="triton")
    expected = _expected(x, weight, bias, conv, STRONG_LRN, ALEXNET_POOL, "lrn_pool")
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]


def test_tile_candidates_fit_and_are_ranked():
    geometry = kernel.block_geometry(torch.empty(256, 48, 5, 5), [1, 1], [2, 2], 2, 5, 1e-4,
                                     0.75, 2.0, [3, 3], [2, 2])
    candidates = kernel.tile_candidates(geometry)
    assert candidates, "conv2's full width must fit some tile"
    # tiles within 128 x 128 accumulators first, each class best-filled first
    spills = [geometry.accumulators(t) > 128 * 128 for t in candidates]
    assert spills == sorted(spills) and any(spills) and not all(spills)
    for risky in (False, True):
        fill = [t.tile_ph * t.tile_pw / geometry.block_m(t)
                for t, s in zip(candidates, spills) if s == risky]
        assert fill == sorted(fill, reverse=True)
    for tiles in candidates:  # 256 channels: at most 128 rows of fp32 accumulators
        assert geometry.block_m(tiles) * 256 <= 128 * 256


@pytest.mark.parametrize("c_out, groups, tile, warps", [
    (96, 1, (5, 5), [8, 8]),      # conv1: 128 rows x 128 channels, one group: 8 warps
    (256, 2, (5, 5), [16]),       # conv2: 128 x 2*128, 16 warps alone
    (256, 2, (3, 3), [16, 16]),   # conv2: 64 x 2*128
    (128, 2, (3, 3), [8, 8]),     # half-width conv2: 64 x 2*64
    (16, 1, (3, 3), [4, 8]),      # 64 x 16: small enough for 4 warps untimed
])
def test_variants_follow_the_accumulator_size(c_out, groups, tile, warps):
    # The untimed choice (first variant) keeps the accumulator at <= 32 fp32 per thread where it
    # can: fewer warps made ptxas spill the epilogue's gathers to local memory.
    weight = torch.empty(c_out, 3 if groups == 1 else 48, 5, 5)
    geometry = kernel.block_geometry(weight, [1, 1], [2, 2], groups, 5, 1e-4, 0.75, 2.0,
                                     [3, 3], [2, 2])
    tiles = kernel.Tiles(*tile)
    variants = kernel._variants(geometry, tiles)
    assert [w for _, w, _ in variants] == warps


@pytest.mark.parametrize("tune", ["1", "0"])
def test_choice_times_one_shape_per_row_count(tune, monkeypatch):
    # The GPU's choice without a GPU: compiling always succeeds, and the timings are made up.
    # Full-width conv2: the 64-row tiles rank first (the 128 x 2*128 ones spill kilobytes), and
    # the timing covers the best 64-row shape and the best 128-row one, not two near twins.
    geometry = kernel.block_geometry(torch.empty(256, 48, 5, 5), [1, 1], [2, 2], 2, 5, 1e-4,
                                     0.75, 2.0, [3, 3], [2, 2])
    candidates = kernel.tile_candidates(geometry)
    assert [geometry.block_m(t) for t in candidates[:2]] == [64, 64]
    assert geometry.block_m(candidates[-1]) == 128
    timed = []

    def bench(fn, **_):
        fn()
        return 1.0 if timed[-1].tile_ph == 5 else 2.0  # the 5 x 5 tile "wins"

    # conv1: 5 x 5 and 3 x 3 (4 x 6 is 5 x 5's twin, 7 x 7 spills and recomputes as much)
    conv1 = kernel.block_geometry(torch.empty(96, 3, 11, 11), [4, 4], [0, 0], 1, 5, 1e-4, 0.75,
                                  2.0, [3, 3], [2, 2])
    assert kernel._timed_row_counts(conv1, kernel.tile_candidates(conv1)) == {128, 64}
    monkeypatch.setenv("CNNXFER_TUNE", tune)
    monkeypatch.setattr(kernel, "_INTERPRETED", False)
    monkeypatch.setattr(kernel, "_compiles", lambda launch, tiles: True)
    monkeypatch.setattr(kernel.triton.testing, "do_bench", bench)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    key = ("test", tune)
    kernel._CHOSEN.pop(key, None)
    try:
        best = kernel._choose(key, geometry, timed.append, torch.device("cuda"))
    finally:
        kernel._CHOSEN.pop(key, None)
    if tune == "0":  # untimed: the first candidate, first variant (16 warps: two groups)
        assert timed == []
        assert (best.tile_ph, best.tile_pw, best.num_warps) == (3, 3, 16)
    else:
        assert [(t.tile_ph, t.tile_pw) for t in timed] == [(3, 3), (3, 3), (5, 5)]
        assert {geometry.block_m(t) for t in timed} == {64, 128}
        assert (best.tile_ph, best.tile_pw, best.num_warps) == (5, 5, 16)


def test_memory_format_follows_x():
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=5)
    nchw = ops.conv_block(x, weight, bias, **conv, backend="triton")
    assert nchw.is_contiguous()
    nhwc = ops.conv_block(x.contiguous(memory_format=torch.channels_last), weight, bias, **conv,
                          backend="triton")
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw, nhwc, rtol=0, atol=0)


@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
def test_backward_matches_the_reference(order):
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=6, requires_grad=True)
    y = ops.conv_block(x, weight, bias, **conv, lrn=STRONG_LRN, pool=ALEXNET_POOL, order=order,
                       backend="triton")
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y.device)
    got = torch.autograd.grad((y * grad).sum(), (x, weight, bias))
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    expected = reference.conv_block(*leaves, **conv, lrn=STRONG_LRN, pool=ALEXNET_POOL,
                                    order=order)
    wanted = torch.autograd.grad((expected * grad.double()).sum(), leaves)
    for name, g, e in zip(("x", "weight", "bias"), got, wanted):
        assert _relative_error(g, e) < 1e-4, name


def test_opcheck_fake_kernel_and_autograd_registration():
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=8, requires_grad=True)
    args = (x, weight, bias, [1, 1], [2, 2], 2, 5, 0.5, 0.75, 2.0, [3, 3], [2, 2], [0, 0, 0, 0],
            False, True)
    torch.library.opcheck(OP, args, test_utils=("test_schema", "test_autograd_registration",
                                                "test_faketensor"))


def test_torch_compile_traces_through_the_op():
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32, seed=9)

    def block(x, weight, bias):
        return torch.relu(ops.conv_block(x, weight, bias, **conv, lrn=STRONG_LRN,
                                         pool=ALEXNET_POOL, backend="triton")) * 2

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, weight, bias), block(x, weight, bias))


_LOWER = """
import json, sys, torch
from triton.backends.compiler import GPUTarget
from cnnxfer.kernels import conv_block as kernel
kernel_size, stride, padding, groups, c_out = json.loads(sys.argv[1])
geometry = kernel.Geometry(kernel=tuple(kernel_size), stride=tuple(stride),
                           padding=tuple(padding), groups=groups, c_out=c_out,
                           pool_kernel=(3, 3), pool_stride=(2, 2), has_lrn=True)
shape = kernel.tile_candidates(geometry)[0]
block_k, warps, stages = kernel._variants(geometry, shape)[0]  # the untimed choice
tiles = kernel.Tiles(shape.tile_ph, shape.tile_pw, block_k, warps, stages)
compiled = kernel.compile_for(GPUTarget("cuda", 90, 32), geometry, tiles, torch.bfloat16)
print(json.dumps({"wgmma": "wgmma" in compiled.asm["ptx"], "shared": compiled.metadata.shared}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv1", "conv2"])
def test_lowers_for_the_h200_without_a_gpu(name):
    # Triton compiles for sm_90 with its own ptxas, no GPU needed: the GPU path lowers (gathers,
    # joins, the wgmma dots) and fits the SM's shared memory, checked on every CI run. AlexNet's
    # conv1 at full width; conv2's geometry at half width (the full one takes ~40 s of ptxas on
    # 2 cores). In a child process: this session's Triton is the interpreter.
    pytest.importorskip("triton.backends.nvidia")
    shapes = {"conv1": [[11, 11], [4, 4], [0, 0], 1, 96],
              "conv2": [[5, 5], [1, 1], [2, 2], 2, 128]}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", _LOWER, json.dumps(shapes[name])], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    assert compiled["wgmma"]  # Hopper's tensor-core instructions
    assert compiled["shared"] <= 227 * 1024


def test_errors_name_the_arguments():
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32)
    with pytest.raises(ValueError, match="LRN across 4 groups"):
        ops.conv_block(x, torch.zeros(20, 3, 5, 5), None, padding=2, groups=4, backend="triton")
    wide = torch.zeros(300, 12, 3, 3, device=x.device)
    with pytest.raises(ValueError, match="LRN across 300 channels"):
        ops.conv_block(x, wide, None, backend="triton")
    with pytest.raises(ValueError, match="pool padding"):
        ops.conv_block(x, weight, bias, **conv, pool=MaxPool(kernel_size=3, stride=2, padding=2),
                       backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.conv_block(x, weight, bias, **conv, backend="cudnn")
    with pytest.raises(ValueError, match="order must be"):
        ops.conv_block(x, weight, bias, **conv, order="pool_first", backend="triton")


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.zeros(1, 3, 11, 11)
    with pytest.raises(ValueError, match="backend='triton' runs on a CUDA device"):
        ops.conv_block(x, torch.zeros(4, 3, 3, 3), None, backend="triton")


def test_auto_refuses_a_triton_result_that_disagrees():
    from cnnxfer.ops.conv_block import disagreement

    framework = torch.rand(2, 8, 5, 5) + 0.5
    assert disagreement(framework + 1e-3, framework) is None                  # fp32 rounding
    assert disagreement(framework * 1.1, framework) > 5e-2                     # a wrong kernel
    assert disagreement(framework.bfloat16(), framework.bfloat16() * 1.01) is None
    nan = framework.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert math.isnan(disagreement(nan, framework))                           # NaN: refused


def test_auto_keeps_the_framework_path_on_cpus():
    (x, weight, bias), conv = _inputs(SHAPES["conv2"], torch.float32)
    before = ops.conv_block_choices()
    y = ops.conv_block(x.cpu(), weight.cpu(), bias.cpu(), **conv)
    assert ops.conv_block_choices() == before  # nothing timed, nothing chosen
    expected = _expected(x, weight, bias, conv, LRN(), ALEXNET_POOL, "lrn_pool")
    assert _relative_error(y, expected) < TOLERANCE[torch.float32]


# ------------------------------------------------------------------ GPU tier: AlexNet's shapes

ALEXNET_BLOCKS = {  # (N, C, H, W, C_out, kernel, stride, padding, groups)
    "conv1": (16, 3, 227, 227, 96, 11, 4, 0, 1),
    "conv2": (16, 96, 27, 27, 256, 5, 1, 2, 2),
}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("name, order, dtype", [
    ("conv1", "lrn_pool", torch.bfloat16), ("conv1", "pool_lrn", torch.bfloat16),
    ("conv2", "lrn_pool", torch.bfloat16), ("conv2", "pool_lrn", torch.float32)],
    ids=lambda v: str(v).replace("torch.", ""))
def test_alexnet_blocks_on_the_gpu(name, order, dtype, monkeypatch):
    # one compile per block (the first tile that compiles), not the timed search: the device
    # check's test step has minutes, and gpu_report times the tiles
    monkeypatch.setenv("CNNXFER_TUNE", "0")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 exact on both paths
    (x, weight, bias), conv = _inputs(ALEXNET_BLOCKS[name], dtype, seed=10)
    x = x.contiguous(memory_format=torch.channels_last)
    lrn = LRN(size=5, alpha=1e-4, beta=0.75, k=2.0)
    expected = _expected(x, weight, bias, conv, lrn, ALEXNET_POOL, order)
    fused = ops.conv_block(x, weight, bias, **conv, lrn=lrn, pool=ALEXNET_POOL, order=order,
                           backend="triton")
    assert _relative_error(fused, expected) < TOLERANCE[dtype]
    chosen = ops.conv_block(x, weight, bias, **conv, lrn=lrn, pool=ALEXNET_POOL, order=order)
    assert _relative_error(chosen, expected) < TOLERANCE[dtype]
    picks = [v for k, v in ops.conv_block_choices().items() if k[0] == tuple(x.shape)
             and k[1] == tuple(weight.shape) and k[2] == dtype and k[8] == order]
    assert len(picks) == 1 and picks[0].split(" ")[0] in ("triton", "framework"), picks
