"""relu_lrn_maxpool: every backend against cnnxfer.ops.reference, plus errors, autograd, compile."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from cnnxfer import LRN, MaxPool, ops
from cnnxfer.ops import reference
from cnnxfer.ops.geometry import as_padding, pooled_length

from devices import TRITON_DEVICE, backend_device_params, needs_triton
from tolerances import assert_close_to_reference

# (backend, device): every kernel where it can run here (see devices.py)
BACKEND_DEVICES = backend_device_params()
# the same, with the interpreted Triton cases in the slow tier: these sets are large
BACKEND_DEVICES_SLOW_INTERPRETER = [
    pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.slow])
    if p.id == "triton-cpu" else p for p in BACKEND_DEVICES]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (shape, kwargs): odd sizes, C below the LRN window, the AlexNet and CaffeNet settings,
# asymmetric ONNX pads, ceil mode, non-square windows.
CASES = [
    ((2, 7, 13, 11), {}),
    ((1, 3, 9, 9), {"size": 5}),                       # C < size
    ((2, 1, 6, 7), {"size": 3, "kernel_size": 2, "stride": 2}),
    ((1, 10, 8, 9), {"order": "pool_lrn"}),
    ((2, 6, 10, 12), {"padding": 1, "ceil_mode": True}),
    ((1, 5, 11, 10), {"padding": (0, 0, 1, 1)}),      # bvlc_alexnet's last pool
    ((1, 9, 9, 12), {"padding": (1, 0, 0, 1), "ceil_mode": True, "order": "pool_lrn"}),
    ((2, 4, 7, 9), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
    ((1, 12, 5, 5), {"relu": False, "size": 7, "alpha": 0.5, "beta": 0.6, "k": 2.0}),
    ((1, 8, 7, 6), {"beta": 0.5, "alpha": 1.0}),
    ((1, 8, 7, 6), {"beta": 1.0, "alpha": 1.0, "order": "pool_lrn"}),
    ((1, 6, 5, 7), {"k": 0.0, "alpha": 1.0, "relu": False}),
    ((1, 4, 3, 3), {"kernel_size": 3, "stride": 3}),   # one window covers the whole map
    ((1, 20, 17, 33), {"kernel_size": 3, "stride": 2, "size": 5, "alpha": 0.01}),
    # channel counts that fill whole vectors, widths that leave partial blocks
    ((2, 16, 5, 6), {}),
    ((1, 24, 11, 20), {"order": "pool_lrn", "padding": (0, 0, 1, 1)}),
    ((1, 8, 7, 9), {"size": 3, "alpha": 0.2}),
    ((1, 32, 9, 17), {"size": 7, "beta": 0.5, "alpha": 0.05}),
]


def _inputs(shape, dtype, layout, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 3
    x = x.to(dtype).to(device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":  # a view with no unit stride along W
        n, c, h, w = shape
        wide = torch.randn((n, c, h, 2 * w), generator=generator, dtype=torch.float64) * 3
        x = wide.to(dtype).to(device)[..., ::2]
    return x


def _expected(x, **kwargs):
    return reference.relu_lrn_maxpool(x.double().cpu(), **kwargs)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES_SLOW_INTERPRETER)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_reference_float32(backend, device, layout, case):
    shape, kwargs = CASES[case]
    x = _inputs(shape, torch.float32, layout, device, seed=case)
    y = ops.relu_lrn_maxpool(x, backend=backend, **kwargs)
    assert_close_to_reference(y, _expected(x, **kwargs))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES_SLOW_INTERPRETER)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
@pytest.mark.parametrize("shape", [(2, 11, 15, 13), (1, 16, 9, 19)], ids=str)
def test_matches_reference_every_dtype(backend, device, dtype, layout, order, shape):
    x = _inputs(shape, dtype, layout, device, seed=7)
    y = ops.relu_lrn_maxpool(x, order=order, backend=backend)
    assert y.dtype == dtype
    assert_close_to_reference(y, _expected(x, order=order))


@pytest.mark.parametrize("shape", [(32, 96, 55, 55), (4, 256, 27, 27)], ids=["C1", "C2"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_alexnet_shapes_native_cpu(shape, layout, dtype):
    """The benchmark shapes (full vector widths, many threads' worth of work)."""
    x = _inputs(shape, dtype, layout, "cpu", seed=3)
    y = ops.relu_lrn_maxpool(x)
    assert_close_to_reference(y, _expected(x))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_memory_format_follows_input(backend, device, layout):
    x = _inputs((2, 8, 9, 9), torch.float32, layout, device)
    y = ops.relu_lrn_maxpool(x, backend=backend)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    else:
        assert y.is_contiguous()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("order", ["lrn_pool", "pool_lrn"])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_propagate_as_in_reference(backend, device, order, relu, layout):
    x = _inputs((2, 9, 11, 11), torch.float32, "contiguous", "cpu", seed=11)
    positions = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(1))[:12]
    # 1e20 squares to inf in float32: the LRN must then give 0, as the float32 reference's x / inf
    x.view(-1)[positions] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e20] * 3)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    y = ops.relu_lrn_maxpool(x.to(device), order=order, relu=relu, backend=backend)
    # the reference in the same float32 arithmetic: float64 would not overflow on 1e20 ** 2
    assert_close_to_reference(y, reference.relu_lrn_maxpool(x, order=order, relu=relu))
    assert y.isnan().any()  # the check above compared real NaNs


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("kwargs,scale", [
    ({"k": 0.0, "alpha": 1.0, "beta": 1.0, "relu": False, "size": 3}, 1e-18),   # D = 0 and tiny D
    ({"k": 1e-39, "alpha": 1.0, "beta": 1.0}, 1e-30),                           # subnormal k
    ({"k": 1e-25, "alpha": 1.0, "beta": 2.0}, 1e-15),                           # D^beta underflows
    ({"k": 0.0, "beta": 0.75}, 1.0),                                  # k = 0, AlexNet beta
    ({"beta": 0.0}, 1.0),                                             # D^0 = 1, even D = inf
])
def test_tiny_denominators_and_beta_zero_as_in_reference(backend, device, kwargs, scale):
    """x / D^beta must not become x * D^-beta where D^-beta overflows (k tiny or 0)."""
    x = _inputs((1, 8, 7, 7), torch.float32, "contiguous", "cpu", seed=4) * scale
    x[0, 2] = 0.0  # whole channels of zeros: D = k there
    x[0, 5, 3, 3] = float("inf")
    y = ops.relu_lrn_maxpool(x.to(device), backend=backend, **kwargs)
    assert_close_to_reference(y, reference.relu_lrn_maxpool(x, **kwargs))


def test_empty_batch_and_channels():
    for shape in [(0, 4, 9, 9), (2, 0, 9, 9)]:
        y = ops.relu_lrn_maxpool(torch.randn(shape))
        assert y.shape == (shape[0], shape[1], 4, 4)


# ------------------------------------------------------------------ geometry and the reference


@pytest.mark.parametrize("length,kernel,stride,pad,ceil_mode", [
    combo for combo in itertools.product(range(3, 12), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2),
                                         (False, True))
    if combo[3] <= combo[1] // 2 and combo[1] <= combo[0] + 2 * combo[3]
])
def test_pooled_length_matches_torch(length, kernel, stride, pad, ceil_mode):
    out = F.max_pool2d(torch.zeros(1, 1, length, 1), (kernel, 1), (stride, 1), (pad, 0),
                       ceil_mode=ceil_mode)
    assert pooled_length(length, kernel, stride, pad, pad, ceil_mode) == out.shape[2]


def _slow_max_pool(x, kernel, stride, pads, ceil_mode):
    """The obvious loop: windows start at i*stride - pad; a window must start before the end of
    the input plus the leading pad (PyTorch's rule); pads never win."""
    top, left, bottom, right = pads
    n, c, h, w = x.shape
    out_h = pooled_length(h, kernel, stride, top, bottom, ceil_mode)
    out_w = pooled_length(w, kernel, stride, left, right, ceil_mode)
    y = torch.empty(n, c, out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            r0, c0 = i * stride - top, j * stride - left
            window = x[:, :, max(r0, 0):min(r0 + kernel, h), max(c0, 0):min(c0 + kernel, w)]
            y[:, :, i, j] = window.amax(dim=(2, 3))
    return y


@pytest.mark.parametrize("pads", [(0, 0, 1, 1), (1, 0, 0, 1), (1, 1, 0, 0), (0, 1, 1, 0)])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("size", [(6, 7), (9, 9), (10, 5)])
def test_reference_asymmetric_max_pool_is_the_obvious_loop(pads, ceil_mode, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    expected = _slow_max_pool(x, 3, 2, pads, ceil_mode)
    torch.testing.assert_close(reference.max_pool(x, 3, 2, pads, ceil_mode), expected)


def test_padding_spellings_agree():
    assert as_padding(1) == (1, 1, 1, 1)
    assert as_padding((1, 0)) == (1, 0, 1, 0)
    assert as_padding([0, 0, 1, 1]) == (0, 0, 1, 1)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("kwargs,error,words", [
    ({"x": torch.randn(3, 9, 9)}, ValueError, ["x", "4-d", "(3, 9, 9)"]),
    ({"x": torch.ones(1, 3, 9, 9, dtype=torch.int32)}, TypeError, ["x", "torch.int32"]),
    ({"size": 4}, ValueError, ["size", "odd", "4"]),
    ({"size": 0}, ValueError, ["size", "0"]),
    ({"size": -3}, ValueError, ["size", "-3"]),
    ({"k": -1.0}, ValueError, ["k", "-1.0", ">= 0"]),
    ({"beta": -0.5}, ValueError, ["beta", "-0.5"]),
    ({"alpha": float("nan")}, ValueError, ["alpha", "nan"]),
    ({"kernel_size": 11}, ValueError, ["kernel_size", "(11, 11)", "(9, 9)"]),
    ({"kernel_size": 0}, ValueError, ["kernel_size", "0"]),
    ({"stride": (2, 0)}, ValueError, ["stride", "(2, 0)"]),
    ({"padding": 2}, ValueError, ["padding", "[0, 1]", "2"]),
    ({"padding": (0, 0, 2, 0)}, ValueError, ["padding", "bottom", "(0, 0, 2, 0)"]),
    ({"padding": (1, 2, 3)}, TypeError, ["padding", "(1, 2, 3)"]),
    ({"kernel_size": (3, 3, 3)}, TypeError, ["kernel_size", "(3, 3, 3)"]),
    ({"order": "lrn"}, ValueError, ["order", "'lrn'", "pool_lrn"]),
    ({"backend": "gpu"}, ValueError, ["backend", "'gpu'", "triton"]),
    ({"x": [[1.0]]}, TypeError, ["x", "list"]),
])
def test_bad_arguments_name_argument_value_and_expectation(kwargs, error, words):
    arguments = {"x": torch.randn(1, 3, 9, 9)} | kwargs
    x = arguments.pop("x")
    with pytest.raises(error) as info:
        ops.relu_lrn_maxpool(x, **arguments)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def _direct_ops():
    """Each op reached through torch.ops, bypassing the face: C++ callers get the C++ checks,
    the Triton op the face's own validator (checks.lrn_pool_args)."""
    return [pytest.param(lambda: torch.ops.cnnxfer.relu_lrn_maxpool, "cpu", id="native"),
            pytest.param(ops.triton_lrn_pool_op, TRITON_DEVICE, id="triton", marks=needs_triton)]


@pytest.mark.parametrize("get_op,device", _direct_ops())
def test_the_op_itself_checks_its_arguments(get_op, device):
    """Direct torch.ops callers (C++ included) get the same checks as the face."""
    ops.load_library()
    op = get_op()
    x = torch.randn(1, 3, 9, 9, device=device)
    with pytest.raises(ValueError, match="size"):
        op(x, 4, 1e-4, 0.75, 1.0, [3, 3], [2, 2], [0, 0, 0, 0], False, False, True)
    with pytest.raises(ValueError, match="larger than the padded input"):
        op(x, 5, 1e-4, 0.75, 1.0, [13, 3], [2, 2], [0, 0, 0, 0], False, False, True)
    with pytest.raises(ValueError, match="k must be a finite number >= 0"):
        op(x, 5, 1e-4, 0.75, -1.0, [3, 3], [2, 2], [0, 0, 0, 0], False, False, True)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got inf"):
        op(x, 5, float("inf"), 0.75, 1.0, [3, 3], [2, 2], [0, 0, 0, 0], False, False, True)
    with pytest.raises(ValueError, match="padding left must lie in .0, kernel_size // 2. = .0, 0."):
        op(x, 5, 1e-4, 0.75, 1.0, [3, 1], [2, 1], [0, 1, 0, 0], False, False, True)
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16, got .*(?i:float8)"):
        op(x.to(torch.float8_e4m3fn), 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2], [0, 0, 0, 0], False,
           False, True)


# ------------------------------------------------------------------ autograd, opcheck, compile


@pytest.mark.parametrize("kwargs", [
    {},
    {"order": "pool_lrn"},
    {"relu": False, "padding": (0, 0, 1, 1), "ceil_mode": True},
    {"relu": False, "order": "pool_lrn", "padding": 1, "size": 3, "alpha": 0.3, "beta": 0.6},
    {"kernel_size": (2, 3), "stride": (1, 2), "alpha": 0.5, "k": 2.0},
])
def test_gradcheck_float64(kwargs):
    x = torch.randn(2, 6, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: ops.relu_lrn_maxpool(t, **kwargs), (x,))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_matches_reference_autograd(backend, device, dtype):
    x = _inputs((2, 7, 9, 9), dtype, "contiguous", device, seed=9).requires_grad_(True)
    y = ops.relu_lrn_maxpool(x, padding=(0, 0, 1, 1), backend=backend)
    grad_out = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, x, grad_out)
    x64 = x.detach().double().cpu().requires_grad_(True)
    expected_y = reference.relu_lrn_maxpool(x64, padding=(0, 0, 1, 1))
    (expected,) = torch.autograd.grad(expected_y, x64, grad_out.double().cpu())
    assert got.dtype == dtype
    assert_close_to_reference(got, expected)


def test_opcheck():
    x = torch.randn(2, 5, 9, 8, requires_grad=True)
    for pool_first in (False, True):
        args = (x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2], [0, 0, 1, 1], True, pool_first, True)
        torch.library.opcheck(torch.ops.cnnxfer.relu_lrn_maxpool.default, args)
    x_cl = torch.randn(2, 5, 9, 8).to(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.cnnxfer.relu_lrn_maxpool.default,
                          (x_cl, 3, 1e-2, 0.75, 2.0, [3, 2], [2, 1], [1, 0, 1, 0], False, False,
                           False))


@needs_triton
def test_opcheck_triton():
    x = torch.randn(1, 4, 7, 7, requires_grad=True, device=TRITON_DEVICE)
    checks = ("test_schema", "test_autograd_registration")
    if TRITON_DEVICE == "cuda":
        # On the CPU the interpreter runs the kernel for real even on fake tensors, so the fake
        # check needs a GPU, where triton_op traces the launch instead.
        checks += ("test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(ops.triton_lrn_pool_op().default,
                          (x, 5, 1e-4, 0.75, 1.0, [3, 3], [2, 2], [0, 0, 1, 1], True, False,
                           True), test_utils=checks)


@pytest.mark.slow
def test_torch_compile_fullgraph():
    def block(t):
        return ops.relu_lrn_maxpool(t * 2.0, padding=(0, 0, 1, 1)) + 1.0

    x = torch.randn(2, 8, 13, 13)
    compiled = torch.compile(block, fullgraph=True)  # inductor around the custom op
    torch.testing.assert_close(compiled(x), block(x))


# ------------------------------------------------------------------ conv_block


@pytest.mark.parametrize("lrn,pool,order", [
    (LRN(), MaxPool(), "lrn_pool"),
    (LRN(), MaxPool(), "pool_lrn"),
    (LRN(size=3, alpha=1e-3), None, "lrn_pool"),
    (None, MaxPool(padding=(0, 0, 1, 1)), "lrn_pool"),
    (None, None, "lrn_pool"),
])
@pytest.mark.parametrize("dtype,layout", [(torch.float32, "contiguous"),
                                          (torch.bfloat16, "channels_last")], ids=str)
def test_conv_block_matches_plain_layers(lrn, pool, order, dtype, layout):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 15, 15, generator=generator)
    weight = torch.randn(12, 4, 5, 5, generator=generator) * 0.2
    bias = torch.randn(12, generator=generator)
    args = dict(stride=1, padding=2, groups=2, lrn=lrn, pool=pool, order=order)
    xd, wd, bd = (t.to(dtype) for t in (x, weight, bias))
    if layout == "channels_last":
        xd = xd.to(memory_format=torch.channels_last)
    y = ops.conv_block(xd, wd, bd, **args)
    # Reference on the same rounded inputs in float64; the conv itself rounds in bf16 here, so
    # bf16 is held to twice the op tolerance.
    expected = reference.conv_block(xd.double(), wd.double(), bd.double(), **args)
    if dtype == torch.bfloat16:
        torch.testing.assert_close(y.double(), expected, rtol=3.2e-2, atol=3e-2)
    else:
        assert_close_to_reference(y, expected)


def test_conv_block_rejects_mismatched_devices():
    x = torch.randn(1, 3, 9, 9)
    weight = torch.randn(4, 3, 3, 3, device="meta")
    with pytest.raises(ValueError, match="weight is on meta but x is on cpu"):
        ops.conv_block(x, weight, None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_conv_block_computes_in_the_compute_dtype(dtype):
    """bf16 on CPUs without bf16 units and fp16 on any CPU: the convolution runs in fp32 and only
    the result is stored in the input's dtype (no emulated low-precision convolutions)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 13, 13, generator=generator).to(dtype, memory_format=torch.channels_last)
    weight = (torch.randn(8, 3, 3, 3, generator=generator) * 0.3).to(dtype)
    bias = torch.randn(8, generator=generator).to(dtype)
    args = dict(padding=1, groups=2, lrn=LRN(size=3), pool=MaxPool())
    y = ops.conv_block(x, weight, bias, **args)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    compute = ops.compute_dtype(dtype, x.device)
    same_in_compute_dtype = ops.conv_block(x.to(compute), weight.to(compute), bias.to(compute),
                                           **args).to(dtype)
    assert torch.equal(y, same_in_compute_dtype)
    expected = reference.conv_block(x.double(), weight.double(), bias.double(), **args)
    torch.testing.assert_close(y.double(), expected, rtol=3.2e-2, atol=3e-2)


def test_conv_block_rejects_mixed_dtypes():
    x = torch.randn(1, 3, 9, 9, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="weight is torch.float32 but x is torch.bfloat16"):
        ops.conv_block(x, torch.randn(4, 3, 3, 3), None)


def test_conv_block_under_autocast_lets_autocast_choose_the_dtype():
    """As F.conv2d: under autocast the block computes (and returns) autocast's dtype."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 13, 13, generator=generator)
    weight, bias = torch.randn(8, 6, 3, 3, generator=generator) * 0.3, torch.randn(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.conv_block(x, weight, bias, padding=1)
        plain = F.conv2d(x, weight, bias, padding=1)
    assert y.dtype == plain.dtype == torch.bfloat16
    expected = reference.conv_block(x.double(), weight.double(), bias.double(), padding=1)
    torch.testing.assert_close(y.double(), expected, rtol=3.2e-2, atol=3e-2)
