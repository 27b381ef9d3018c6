"""relu_lrn_maxpool on AlexNet's C1 and C2 outputs: cnnxfer against plain PyTorch.

Providers, timed in the same run on the same input:
  cnnxfer  ops.relu_lrn_maxpool (the fused kernel)
  eager    cnnxfer.ops.reference.relu_lrn_maxpool (F.relu, F.local_response_norm, F.max_pool2d);
           for bf16 on the CPU eager has no LRN kernel, so it runs in fp32 and casts back
  compile  torch.compile of that same reference, in the case's dtype
  copy     a copy of x into a preallocated tensor: the memory floor (the table scales it to
           the op's bytes read + written)
"""
from __future__ import annotations

import pytest
import torch

from cnnxfer import ops
from cnnxfer.ops import reference

SHAPES = {"C1": (32, 96, 55, 55), "C2": (32, 256, 27, 27)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "channels_last")
PROVIDERS = ("cnnxfer", "eager", "compile", "copy")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _input(shape, dtype, layout):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).to(DEVICE)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def _eager(x):
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return reference.relu_lrn_maxpool(x.float()).to(x.dtype)
    return reference.relu_lrn_maxpool(x)


_compiled_reference = torch.compile(reference.relu_lrn_maxpool, dynamic=False)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_relu_lrn_maxpool(benchmark, record, shape, dtype, layout, provider):
    x = _input(SHAPES[shape], DTYPES[dtype], layout)
    floor_buffer = torch.empty_like(x)
    fn = {
        "cnnxfer": lambda: ops.relu_lrn_maxpool(x),
        "eager": lambda: _eager(x),
        "compile": lambda: _compiled_reference(x),
        "copy": lambda: floor_buffer.copy_(x),
    }[provider]

    def timed():
        fn()
        _sync()

    case = f"relu_lrn_maxpool {shape} {dtype} {layout} {DEVICE}"
    out = ops.relu_lrn_maxpool(x)
    record(case, provider, benchmark, timed,
           bytes_in=x.numel() * x.element_size(), bytes_out=out.numel() * out.element_size())
