"""conv_block on AlexNet's conv1 and conv2: cnnxfer against plain PyTorch, fp32 and bf16.

Where bf16 pays off depends on the CPU: conv_block computes in ops.compute_dtype (bf16 only on
CPUs with bf16 dot-product units, AVX-512-BF16 or AMX; fp32 elsewhere, storing bf16), so the bf16
rows show what a user gets on this machine, and the summary's "bf16 vs cnnxfer fp32" lines say
whether bf16 is faster here.

Providers, timed in the same run on the same channels_last input:
  cnnxfer  ops.conv_block (the framework's convolution + the fused ReLU + LRN + max-pool)
  eager    cnnxfer.ops.reference.conv_block in the case's dtype (F.conv2d, F.relu,
           F.local_response_norm, F.max_pool2d; the bf16 LRN in fp32 on CPUs, as eager has none)
  compile  torch.compile of that reference, in the case's dtype
  floor    the convolution alone (F.conv2d, channels_last input, the same weight) in the dtype
           conv_block computes in
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnxfer import LRN, MaxPool, ops
from cnnxfer.ops import reference

BATCH = 32
# name -> (input [C, H, W], weight [C_out, C_in / groups, K, K], stride, padding, groups)
BLOCKS = {
    "conv1": ((3, 227, 227), (96, 3, 11, 11), 4, 0, 1),
    "conv2": ((96, 27, 27), (256, 48, 5, 5), 1, 2, 2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROVIDERS = ("cnnxfer", "eager", "compile", "floor")
LAYERS = dict(lrn=LRN(), pool=MaxPool(3, 2, 0, ceil_mode=True))

_compiled_reference = torch.compile(reference.conv_block, dynamic=False)


def _tensors(block, dtype):
    generator = torch.Generator().manual_seed(0)
    shape, weight_shape = BLOCKS[block][:2]
    x = torch.randn((BATCH, *shape), generator=generator).to(dtype)
    weight = (torch.randn(weight_shape, generator=generator) * 0.05).to(dtype)
    bias = torch.randn(weight_shape[0], generator=generator).to(dtype)
    return x.contiguous(memory_format=torch.channels_last), weight, bias


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", BLOCKS)
def test_conv_block(benchmark, record, note, block, dtype, provider):
    x, weight, bias = _tensors(block, DTYPES[dtype])
    _, _, stride, padding, groups = BLOCKS[block]
    conv = dict(stride=stride, padding=padding, groups=groups)
    compute = ops.compute_dtype(x.dtype, x.device)
    floor_args = (x.to(compute), weight.to(compute), bias.to(compute))
    fn = {
        "cnnxfer": lambda: ops.conv_block(x, weight, bias, **conv, **LAYERS),
        "eager": lambda: reference.conv_block(x, weight, bias, **conv, **LAYERS),
        "compile": lambda: _compiled_reference(x, weight, bias, **conv, **LAYERS),
        "floor": lambda: F.conv2d(*floor_args, stride, padding, 1, groups),
    }[provider]
    if provider == "cnnxfer":
        expected = reference.conv_block(x.double(), weight.double(), bias.double(), **conv,
                                        **LAYERS)
        error = ((fn().double() - expected).norm() / expected.norm()).item()
        note(f"conv_block {block} {dtype}: relative error {error:.2e} against float64, "
             f"computed in {compute}")
    with torch.inference_mode():
        record(f"conv_block {block} {dtype} channels_last", provider, benchmark, fn)
