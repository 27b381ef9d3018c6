"""cnnxfer.ops.compat: every private torch API cnnxfer uses is still there, and each fallback
computes the same thing as the private path."""
from __future__ import annotations

import os

import pytest
import torch

from cnnxfer import nets
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


def _remove(monkeypatch, name):
    """Makes compat see torch without the private API `name`, as after an upgrade."""
    monkeypatch.setitem(compat.PRIVATE_APIS, name, lambda: torch.ops.mkldnn._no_such_op_here)
    assert not compat.available(name)


def test_without_the_private_probes_the_cpu_flags_decide(monkeypatch):
    _remove(monkeypatch, "torch.cpu._is_avx512_bf16_supported")
    assert compat.cpu_has_bf16_dot_product() == compat.cpu_flags_say_bf16()


def test_without_packed_linear_the_engine_uses_addmm(monkeypatch):
    _remove(monkeypatch, "torch.ops.mkldnn._linear_pointwise")
    assert not compat.packed_linear_available()
    assert not engine.uses_packed_linear(torch.float32, torch.device("cpu"))
    net = nets.alexnet("alexnet", width=0.125, seed=3)
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(0)) * 50
    expected = net(x.double(), "fc7", backend="reference")
    torch.testing.assert_close(net(x, "fc7").double(), expected, rtol=1e-4, atol=1e-4)


def test_without_version_counters_the_engine_caches_nothing(monkeypatch):
    _remove(monkeypatch, "torch.Tensor._version")
    assert compat.tensor_version(torch.zeros(1)) is None
    net = nets.alexnet("alexnet", width=0.125, seed=4)
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 50
    before = net(x, "fc6")
    with torch.no_grad():
        net.fc6.bias.add_(1.0)  # an in-place edit, which only the version counter would show
    after = net(x, "fc6")
    assert net._cast_cache == {}
    assert not torch.allclose(before, after)
    expected = net(x.double(), "fc6", backend="reference")
    torch.testing.assert_close(after.double(), expected, rtol=1e-4, atol=1e-4)
