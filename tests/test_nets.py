"""cnnxfer.nets: the engine against the reference backend, and both against torch.nn layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnxfer import nets
from cnnxfer.nets import AlexNet, Architecture, architecture, engine
from cnnxfer.ops import compat

from devices import needs_gpu_engine

NAMES = ("alexnet", "caffenet", "torchvision")
WIDTH = 0.25  # 24-64-96-96-64 filters, 1024-wide FC: fast, and every code path the same


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() /
            expected.double().abs().max().clamp_min(1e-12)).item()


def _input(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, size, size), generator=generator) * 60


@pytest.mark.parametrize("input_size", [224, 227])
@pytest.mark.parametrize("name", NAMES)
def test_engine_matches_reference_at_every_layer(name, input_size):
    net = nets.alexnet(name, width=WIDTH, input_size=input_size, seed=1)
    x = _input(input_size)
    for layer in net.layers:
        expected = net(x.double(), layer, backend="reference")
        actual = net(x, layer)
        assert actual.shape == (2, *net.arch.output_shape(layer)), layer
        assert actual.dtype == torch.float32
        assert _relative_error(actual, expected) < 1e-4, layer


@pytest.mark.parametrize("packed_linear", [
    pytest.param(True, marks=pytest.mark.skipif(not compat.packed_linear_available(),
                                                reason="this torch has no oneDNN packed linear")),
    False])
def test_fc_layers_with_and_without_prepacked_weights(packed_linear):
    net = nets.alexnet("alexnet", width=WIDTH, seed=8)
    for batch in (1, 5):
        x = _input(227, batch=batch, seed=batch)
        for layer in ("fc6", "fc7", "fc8"):
            expected = net(x.double(), layer, backend="reference")
            actual = engine.run(net, x, layer, packed_linear=packed_linear)
            assert _relative_error(actual, expected) < 1e-4, (batch, layer)


def test_conv_outputs_keep_the_input_layout():
    net = nets.alexnet("alexnet", width=WIDTH, seed=9)
    x = _input(227)
    assert net(x, "conv3").is_contiguous()
    channels_last = net(x.contiguous(memory_format=torch.channels_last), "conv3")
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", NAMES)
def test_engine_channels_last_and_bf16(name):
    net = nets.alexnet(name, width=WIDTH, seed=2)
    x = _input(net.arch.input_size, batch=3)
    expected = net(x.double(), "fc7", backend="reference")
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert _relative_error(net(channels_last, "fc7"), expected) < 1e-4
    bf16 = net(channels_last.bfloat16(), "fc7")
    assert bf16.dtype == torch.bfloat16
    assert ((bf16.double() - expected).norm() / expected.norm()).item() < 2e-2
    conv = net(x.bfloat16(), "conv2")
    assert conv.dtype == torch.bfloat16
    assert _relative_error(conv, net(x.double(), "conv2", backend="reference")) < 2e-2


def _torch_nn_alexnet(net: AlexNet) -> nn.Sequential:
    """The same network written with torch.nn layers only: an independent statement of the spec
    for the LRN layouts (nn.LocalResponseNorm, nn.MaxPool2d in ceil mode)."""
    layers: list[nn.Module] = []
    for name, block in zip(nets.CONV_LAYERS, net.arch.convs):
        layers += [getattr(net, name), nn.ReLU()]
        steps = []
        if block.lrn is not None:
            steps.append(nn.LocalResponseNorm(block.lrn.size, block.lrn.alpha, block.lrn.beta,
                                              block.lrn.k))
        if block.pool is not None:
            steps.append(nn.MaxPool2d(block.pool.kernel_size, block.pool.stride,
                                      ceil_mode=block.pool.ceil_mode))
        layers += steps[::-1] if block.order == "pool_lrn" else steps
    layers += [nn.Flatten(), net.fc6, nn.ReLU(), net.fc7, nn.ReLU(), net.fc8]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("input_size", [224, 227])
@pytest.mark.parametrize("name", ["alexnet", "caffenet"])
def test_matches_torch_nn_layers(name, input_size):
    net = nets.alexnet(name, width=WIDTH, input_size=input_size, seed=3)
    x = _input(input_size)
    with torch.no_grad():
        expected = _torch_nn_alexnet(net)(x)
    assert _relative_error(net(x), expected) < 1e-4
    assert _relative_error(net(x, backend="reference"), expected) < 1e-5


def test_layouts_differ_so_the_checks_can_fail():
    # the same weights in the alexnet and caffenet layouts (LRN before or after the pool) give
    # different features: a comparison of the wrong layout fails
    alexnet = nets.alexnet("alexnet", width=WIDTH, seed=4)
    caffenet = nets.alexnet("caffenet", width=WIDTH)
    caffenet.load_state_dict(alexnet.state_dict())
    x = _input(227)
    assert _relative_error(caffenet(x, "conv2"), alexnet(x, "conv2")) > 1e-3


def test_architecture_shapes():
    bvlc = architecture("alexnet")
    assert [c.out_channels for c in bvlc.convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in bvlc.convs] == [1, 2, 1, 2, 2]
    assert [out for _, out in bvlc.conv_shapes()] == [
        (96, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13), (256, 6, 6)]
    assert bvlc.conv_shapes()[0][0] == (96, 55, 55)
    # at 224 Caffe's round-up pooling keeps 27 -> 13 -> 6
    assert architecture("alexnet", input_size=224).conv5_shape() == (256, 6, 6)
    tv = architecture("torchvision")
    assert [c.out_channels for c in tv.convs] == [64, 192, 384, 256, 256]
    assert tv.conv5_shape() == (256, 6, 6) and tv.fc == (4096, 4096)
    assert architecture("torchvision", width=0.5).convs[0].out_channels == 32
    # grouped layers keep an even channel count at any width
    assert all(c.out_channels % 2 == 0 for c in architecture("alexnet", width=0.3).convs)
    assert Architecture.from_dict(bvlc.to_dict()) == bvlc
    assert architecture("alexnet", num_classes=None).layers()[-1] == "fc7"


def test_full_size_parameter_count():
    # the BVLC AlexNet has 60,965,224 parameters
    net = AlexNet(architecture("alexnet"))
    assert sum(p.numel() for p in net.parameters()) == 60_965_224


def test_weights_cache_follows_parameter_changes():
    net = nets.alexnet("alexnet", width=WIDTH, seed=5)
    x = _input(227)
    before = net(x, "fc6")
    with torch.no_grad():
        net.fc6.bias.add_(1.0)
    after = net(x, "fc6")
    assert _relative_error(after, net(x, "fc6", backend="reference")) < 1e-4
    assert not torch.allclose(before, after)


def test_always_eval_and_no_grad_needed():
    net = nets.alexnet("alexnet", width=WIDTH, seed=6)
    assert net.train().training is False
    x = _input(227)
    assert net(x).shape == (2, 1000)


def test_errors_name_the_argument():
    net = nets.alexnet("alexnet", width=WIDTH, seed=7)
    with pytest.raises(ValueError, match=r"layer must be one of conv1, .*'fc9'"):
        net(_input(227), "fc9")
    with pytest.raises(ValueError, match="backend must be one of engine, reference, got 'fast'"):
        net(_input(227), backend="fast")
    with pytest.raises(ValueError, match=r"x must be \[N, 3, 227, 227\] for layer 'fc7'"):
        net(_input(200), "fc7")
    assert net(_input(200), "conv3").shape[1] == net.arch.convs[2].out_channels
    with pytest.raises(ValueError, match="x must be floating point"):
        net(torch.zeros((1, 3, 227, 227), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"x must be a \[N, 3, H, W\] tensor, got \(3, 227, 227\)"):
        net(torch.zeros((3, 227, 227)))
    with pytest.raises(ValueError, match="name must be one of alexnet, caffenet, .* got 'vgg'"):
        architecture("vgg")
    with pytest.raises(ValueError, match="width must be a number > 0, got 0"):
        architecture("alexnet", width=0)
    with pytest.raises(ValueError, match="input_size=50 is too small"):
        architecture("alexnet", input_size=50)
    with pytest.raises(ValueError, match="num_classes must be a positive int or None"):
        architecture("alexnet", num_classes=0)


def test_compute_dtype_policy():
    cpu = torch.device("cpu")
    assert nets.compute_dtype(torch.float32, cpu) == torch.float32
    assert nets.compute_dtype(torch.float16, cpu) == torch.float32
    expected = torch.bfloat16 if nets.cpu_has_native_bf16() else torch.float32
    assert nets.compute_dtype(torch.bfloat16, cpu) == expected
    assert nets.compute_dtype(torch.bfloat16, torch.device("cuda")) == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES + ("vgg11", "overfeat_accurate"))  # and deeper chains
@needs_gpu_engine
def test_engine_on_gpu_matches_the_cpu_reference(name, dtype):
    net = nets.alexnet(name, width=WIDTH, seed=10)
    x = _input(net.arch.input_size, batch=4)
    expected = net(x.double(), "fc7", backend="reference")
    actual = net.to("cuda")(x.to("cuda", dtype).contiguous(memory_format=torch.channels_last),
                            "fc7")
    assert actual.dtype == dtype and actual.device.type == "cuda"
    tolerance = 1e-3 if dtype == torch.float32 else 2e-2  # TF32 convolutions may be on
    error = ((actual.double().cpu() - expected).norm() / expected.norm()).item()
    assert error < tolerance


def test_cache_follows_to_load_state_dict_and_clear_cache():
    import copy
    import pickle

    net = nets.alexnet("alexnet", width=WIDTH, seed=11)
    x = _input(227)
    net(x, "fc7")  # fills the cache (prepacked FC weights on CPUs with oneDNN)
    clone = copy.deepcopy(net)  # packed oneDNN tensors cannot be copied: the cache is not
    assert torch.equal(clone(x, "fc7"), net(x, "fc7"))
    assert pickle.loads(pickle.dumps(net))(x, "fc8").shape == (2, 1000)
    other = nets.alexnet("alexnet", width=WIDTH, seed=12)
    net.load_state_dict(other.state_dict())
    assert torch.equal(net(x, "fc7"), other(x, "fc7"))
    with torch.no_grad():
        net.fc7.weight.data.zero_()  # .data edits bump no version counter: clear_cache() is needed
    net.clear_cache()
    assert torch.equal(net(x, "fc7"), net(x, "fc7", backend="reference"))
    bias_only = torch.relu(net.fc7.bias.detach()).expand(2, -1)
    assert torch.allclose(net(x, "fc7"), bias_only)
    net.double()
    assert net(x.double(), "fc6").dtype == torch.float64


def test_outputs_never_require_grad():
    net = nets.alexnet("alexnet", width=WIDTH, seed=13)
    x = _input(227).requires_grad_()
    for backend in nets.BACKENDS:
        assert not net(x, "fc7", backend=backend).requires_grad


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager_engine():
    # under torch.compile the engine skips its weight cache and prepacked FC weights (opaque
    # oneDNN tensors cannot be traced) and the fused op runs through its fake kernel
    net = nets.alexnet("alexnet", width=0.125, seed=14)
    x = _input(227)
    compiled = torch.compile(net, fullgraph=True)
    assert _relative_error(compiled(x, "fc7"), net(x.double(), "fc7", backend="reference")) < 1e-4
