"""conv2d_relu_triton (the GPU conv block's implicit-GEMM convolution) against F.conv2d + ReLU in
float64.

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
so the shapes are AlexNet's conv1 and conv2 geometry at small sizes and widths, chosen so that
no tile is full: M, the group's output channels and the reduction are not multiples of the
blocks (64, 32, 32).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from cnnxfer.kernels import conv  # noqa: E402,F401  (registers the op)

from conv_cases import random_conv  # noqa: E402
from devices import TRITON_DEVICE as DEVICE  # noqa: E402
from devices import needs_triton  # noqa: E402

pytestmark = needs_triton
OP = torch.ops.cnnxfer.conv2d_relu_triton

# (N, C, H, W, C_out, kernel, stride, padding, groups)
SHAPES = {
    "conv1": (2, 3, 27, 31, 20, 11, 4, 0, 1),     # 11x11 / 4, three input channels
    "conv2": (1, 12, 9, 11, 18, 5, 1, 2, 2),      # 5x5, padding 2, two groups
    "conv3": (3, 10, 7, 7, 36, 3, 1, 1, 1),       # 3x3, a second block of channels
    "pointwise": (1, 40, 5, 6, 8, 1, 1, 0, 1),    # 1x1: the reduction is the channels alone
}
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def _case(shape, dtype, seed=0):
    stride, padding, groups = shape[6:]
    x, weight, bias = random_conv(shape, seed)
    expected = F.conv2d(x.double(), weight.double(), bias.double(), stride, padding, 1, groups)
    inputs = [t.to(DEVICE, dtype) for t in (x, weight, bias)]
    return inputs, expected, (stride, padding, groups)


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("name", SHAPES)
def test_matches_conv2d_relu(name, dtype):
    (x, weight, bias), expected, (stride, padding, groups) = _case(SHAPES[name], dtype)
    y = OP(x, weight, bias, stride, padding, groups, True)
    assert y.shape == expected.shape and y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    expected = F.relu(expected)
    error = ((y.double().cpu() - expected).abs().max() / expected.abs().max()).item()
    assert error < TOLERANCE[dtype], error


def test_without_relu_or_bias_and_from_channels_last():
    (x, weight, bias), expected, (stride, padding, groups) = _case(SHAPES["conv2"],
                                                                   torch.float32, seed=1)
    plain = OP(x.contiguous(memory_format=torch.channels_last), weight, None, stride, padding,
               groups, False)
    without_bias = expected - bias.double().cpu().view(1, -1, 1, 1)
    assert (plain.double().cpu() - without_bias).abs().max() < 1e-5 * without_bias.abs().max()
    assert bool((plain < 0).any())  # no ReLU: the check above can see one applied


def test_errors_name_the_arguments():
    (x, weight, bias), _, _ = _case(SHAPES["conv3"], torch.float32)
    with pytest.raises(ValueError, match="groups=4 does not fit"):
        OP(x, weight, bias, 1, 1, 4, True)
    with pytest.raises(TypeError, match="x and weight must share one of"):
        OP(x, weight.double(), bias, 1, 1, 1, True)
    with pytest.raises(ValueError, match=r"bias must be \[36\]"):
        OP(x, weight, bias[:5], 1, 1, 1, True)
    with pytest.raises(ValueError, match="does not fit a 7x7 input"):
        OP(x, torch.zeros((4, 10, 9, 9), device=x.device), None, 1, 0, 1, True)
