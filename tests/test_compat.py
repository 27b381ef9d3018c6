"""cnnxfer.ops.compat: every private torch API cnnxfer uses is still there, and each fallback
computes the same thing as the private path."""
from __future__ import annotations

import os

import pytest
import torch

from cnnxfer import ops
from cnnxfer.nets import engine
from cnnxfer.ops import compat


@pytest.mark.parametrize("name", sorted(compat.PRIVATE_APIS))
def test_private_torch_api_is_still_there(name):
    # When this fails after a torch upgrade, cnnxfer still runs through the fallback in
    # cnnxfer/ops/compat.py, slower or more conservatively: port it to the new API.
    assert compat.available(name), (
        f"torch {torch.__version__} no longer has {name}; cnnxfer falls back to a public path "
        f"(see cnnxfer/ops/compat.py): port the fast path")


def test_an_api_that_is_gone_reads_as_unavailable(monkeypatch):
    monkeypatch.setitem(compat.PRIVATE_APIS, "torch.ops.mkldnn._gone",
                        lambda: torch.ops.mkldnn._no_such_op_here)
    assert not compat.available("torch.ops.mkldnn._gone")


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="no /proc/cpuinfo (not Linux)")
def test_cpu_flags_fallback_agrees_with_the_private_probe():
    assert compat.cpu_flags_say_bf16() == compat.cpu_has_bf16_dot_product()


def test_cpu_flags_fallback_reads_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert compat.cpu_flags_say_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not compat.cpu_flags_say_bf16(str(info))
    assert not compat.cpu_flags_say_bf16(str(tmp_path / "missing"))


@pytest.mark.skipif(not compat.packed_linear_available(), reason="no oneDNN packed linear")
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_packed_linear_matches_its_public_fallback(relu, batch):
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 96, generator=generator)
    weight, bias = torch.randn(40, 96, generator=generator), torch.randn(40, generator=generator)
    packed = compat.packed_linear(x, compat.pack_linear_weight(weight, 32), bias, relu)
    public = torch.addmm(bias, x, weight.t())
    torch.testing.assert_close(packed, public.relu() if relu else public)
    assert engine.uses_packed_linear(torch.float32, torch.device("cpu"))
    assert not engine.uses_packed_linear(torch.bfloat16, torch.device("cpu"))


def test_op_has_kernel_sees_the_cpu_kernel():
    ops.load_library()
    overload = torch.ops.cnnxfer.relu_lrn_maxpool.default
    assert compat.op_has_kernel(overload, "CPU")
    assert not compat.op_has_kernel(overload, "XLA")
