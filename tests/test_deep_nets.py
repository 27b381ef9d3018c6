"""Networks of any depth: ZFNet, VGG-11/13/16/19 and OverFeat described, built, run on the
engine and held to the reference and to torch.nn layers exactly as AlexNet is (test_nets.py);
torchvision VGG state_dicts (plain and batch-norm); the shared mode on a VGG."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnxfer import nets, weights
from cnnxfer.features import PatchFeatureExtractor
from cnnxfer.features.grids import paper_grid
from cnnxfer.features.shared import conv5_map, multiply_adds, receptive_field, total_stride
from cnnxfer.nets import Architecture, ConvBlock, ConvNet, WeightsError, architecture, trainable
from cnnxfer.ops.layers import MaxPool

DEEP = ("zfnet", "vgg11", "vgg16", "overfeat_fast", "overfeat_accurate")
WIDTH = 1 / 16  # VGG: 4..32 filters, 256-wide FC; every code path the same as at full width


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() /
            expected.double().abs().max().clamp_min(1e-12)).item()


def _input(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, size, size), generator=generator) * 60


def _parameter_count(arch: Architecture) -> int:
    with torch.device("meta"):  # shapes only: VGG-19 would be 575 MB of float32
        return sum(p.numel() for p in ConvNet(arch).parameters())


def test_named_architectures_match_their_papers():
    # torchvision's published parameter counts for VGG
    counts = {"vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544,
              "vgg19": 143_667_240}
    last = {"vgg11": "conv5_2", "vgg13": "conv5_2", "vgg16": "conv5_3", "vgg19": "conv5_4"}
    for name, count in counts.items():
        arch = architecture(name)
        assert _parameter_count(arch) == count, name
        assert arch.fc_input_shape() == (512, 7, 7) and arch.last_conv == last[name]
    vgg16 = architecture("vgg16")
    assert vgg16.layers()[:3] == ("conv1_1", "conv1_2", "conv2_1")
    assert vgg16.layers()[-4:] == ("conv5_3", "fc6", "fc7", "fc8")
    assert architecture("vgg11").conv_names() == ("conv1_1", "conv2_1", "conv3_1", "conv3_2",
                                                  "conv4_1", "conv4_2", "conv5_1", "conv5_2")
    # ZFNet, figure 3: 224 -> 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6
    zf = architecture("zfnet")
    assert [conv[1:] for conv, _ in zf.conv_shapes()] == [(110, 110), (26, 26), (13, 13),
                                                          (13, 13), (13, 13)]
    assert [out[1:] for _, out in zf.conv_shapes()][:2] == [(55, 55), (13, 13)]
    assert zf.fc_input_shape() == (256, 6, 6)
    # OverFeat, tables 1 and 3: the maps' sizes and about 145 M / 144 M parameters
    fast, accurate = architecture("overfeat_fast"), architecture("overfeat_accurate")
    assert [out[1] for _, out in fast.conv_shapes()] == [28, 12, 12, 12, 6]
    assert [out[1] for _, out in accurate.conv_shapes()] == [36, 15, 15, 15, 15, 5]
    assert accurate.layers()[-4:] == ("conv6", "fc7", "fc8", "fc9")
    assert round(_parameter_count(fast) / 1e6) == 146  # 145.9 M
    assert round(_parameter_count(accurate) / 1e6) == 145  # 144.7 M
    # total strides: what the shared mode's windows are aligned to
    assert [total_stride(ConvNet(architecture(n, width=WIDTH))) for n in DEEP] == [
        32, 32, 32, 32, 36]


def _torch_nn(net: ConvNet) -> nn.Sequential:
    """The same network written with torch.nn layers only, walking its modules in order: an
    independent statement of the spec (nn.LocalResponseNorm, nn.MaxPool2d,
    nn.AdaptiveAvgPool2d)."""
    arch, layers = net.arch, []
    for name, block in zip(arch.conv_names(), arch.convs):
        layers += [getattr(net, name), nn.ReLU()]
        steps = []
        if block.lrn is not None:
            steps.append(nn.LocalResponseNorm(block.lrn.size, block.lrn.alpha, block.lrn.beta,
                                              block.lrn.k))
        if block.pool is not None:
            assert block.pool.padding == 0
            steps.append(nn.MaxPool2d(block.pool.kernel_size, block.pool.stride,
                                      ceil_mode=block.pool.ceil_mode))
        layers += steps[::-1] if block.order == "pool_lrn" else steps
    if arch.adaptive_pool is not None:
        layers.append(nn.AdaptiveAvgPool2d(arch.adaptive_pool))
    layers.append(nn.Flatten())
    for index, name in enumerate(arch.fc_names()):
        layers.append(getattr(net, name))
        if index < len(arch.fc):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("name", DEEP)
def test_engine_matches_reference_and_torch_nn_at_every_layer(name):
    net = nets.network(name, width=WIDTH, seed=1)
    x = _input(net.arch.input_size)
    for layer in net.layers:
        expected = net(x.double(), layer, backend="reference")
        actual = net(x, layer)
        assert actual.shape == (2, *net.arch.output_shape(layer)), layer
        assert _relative_error(actual, expected) < 1e-4, (name, layer)
    with torch.no_grad():
        independent = _torch_nn(net)(x)
    assert _relative_error(net(x), independent) < 1e-4
    bf16 = net(x.contiguous(memory_format=torch.channels_last).bfloat16(), net.layers[-2])
    expected = net(x.double(), net.layers[-2], backend="reference")
    assert ((bf16.double() - expected).norm() / expected.norm()).item() < 3e-2


def test_a_wrong_layout_does_not_match():
    # the same weights with the pools in other places give other features: the checks above
    # can fail
    net = nets.network("vgg11", width=WIDTH, seed=2)
    moved = list(net.arch.convs)
    moved[2], moved[3] = (ConvBlock(moved[2].out_channels, 3, 1, 1, pool=MaxPool(2, 2, 0)),
                          ConvBlock(moved[3].out_channels, 3, 1, 1))
    other = ConvNet(Architecture("moved", tuple(moved), fc=net.arch.fc,
                                 adaptive_pool=7, naming="sequential"))
    other.load_state_dict(dict(zip(other.state_dict(), net.state_dict().values())))
    x = _input(224, batch=1)
    assert _relative_error(other(x, "conv8"), net(x, "conv5_2")) > 1e-2


def test_trainable_gradients_match_the_reference_on_a_vgg():
    net = nets.network("vgg11", width=WIDTH, num_classes=5, input_size=64, seed=3)
    x, y = _input(64, batch=3, seed=4) / 60, torch.tensor([0, 3, 4])
    grads = {}
    for backend in ("engine", "reference"):
        net.zero_grad()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            logits = trainable.forward(net, x, backend=backend, training=False)
        F.cross_entropy(logits, y).backward()
        grads[backend] = {k: p.grad.clone() for k, p in net.named_parameters()}
    for key, expected in grads["reference"].items():
        assert _relative_error(grads["engine"][key], expected) < 1e-3, key


def test_architecture_errors_and_round_trip():
    with pytest.raises(ValueError, match="convs must hold at least one ConvBlock"):
        Architecture("empty", ())
    with pytest.raises(ValueError, match="naming must be one of sequential, stages"):
        Architecture("x", (ConvBlock(8, 3),), naming="caffe")
    with pytest.raises(ValueError, match="at least one FC layer"):
        Architecture("x", (ConvBlock(8, 3),), fc=(), num_classes=None)
    with pytest.raises(ValueError, match="input_size=16 is too small"):
        architecture("vgg16", input_size=16)
    with pytest.raises(ValueError, match="arch_options apply to named networks"):
        nets.network(architecture("vgg11"), width=0.5)
    for name in nets.NAMES:
        arch = architecture(name, width=WIDTH, num_classes=None)
        assert Architecture.from_dict(arch.to_dict()) == arch
    # a file of 0.2 holds no naming: sequential
    old = architecture("alexnet").to_dict()
    del old["naming"]
    assert Architecture.from_dict(old).naming == "sequential"
    # one FC layer only (the class layer): the chain runs and names it after the convs
    tiny = nets.network(Architecture("tiny", (ConvBlock(8, 3, pool=MaxPool(2, 2)),), fc=(),
                                     num_classes=4, input_size=9), seed=0)
    assert tiny.layers == ("conv1", "fc2")
    assert tiny(_input(9), "fc2").shape == (2, 4)


def test_weights_round_trip_for_a_deep_network(tmp_path):
    net = nets.network("overfeat_accurate", width=WIDTH, seed=5)
    weights.save(net, tmp_path / "overfeat.safetensors")
    loaded = weights.load(tmp_path / "overfeat.safetensors")
    assert loaded.arch == net.arch and loaded.layers[-1] == "fc9"
    x = _input(221, batch=1)
    assert torch.equal(loaded(x), net(x))
    # a bare cnnxfer-named state_dict of another width loads with name=
    torch.save(net.state_dict(), tmp_path / "bare.pth")
    bare = weights.load(tmp_path / "bare.pth", name="overfeat_accurate")
    assert bare.arch.convs == net.arch.convs and torch.equal(bare(x), net(x))


# ----------------------------------------------------------------- torchvision VGG files

_VGG_CONFIGS = {  # torchvision.models.vgg's cfgs "A" and "D" (widths divided below)
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512,
              512, "M"],
}


def _torchvision_vgg(name: str, batch_norm: bool, divide: int = 16, classes: int = 10
                     ) -> nn.Module:
    """torchvision.models.VGG's module structure (make_layers and VGG.__init__ transcribed,
    widths divided by `divide`): the state_dict names and the forward of torchvision's files.
    (torchvision itself is not a dependency: its wheels here are built for CUDA torch.)"""
    layers, channels = [], 3
    for value in _VGG_CONFIGS[name]:
        if value == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        conv = nn.Conv2d(channels, value // divide, kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(value // divide), nn.ReLU(True)] if batch_norm else [
            conv, nn.ReLU(True)]
        channels = value // divide
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    fc = 4096 // divide
    model.classifier = nn.Sequential(
        nn.Linear(channels * 7 * 7, fc), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(fc, fc),
        nn.ReLU(True), nn.Dropout(0.5), nn.Linear(fc, classes))
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):  # statistics a trained network could have
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name, batch_norm", [("vgg11", False), ("vgg16", True)])
def test_torchvision_vgg_state_dict_gives_torchvision_outputs(tmp_path, name, batch_norm):
    model = _torchvision_vgg(name, batch_norm)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    net = weights.load(path)
    assert net.arch.name == name and net.arch.naming == "stages"
    assert net.preprocessing.channel_order == "RGB" and net.arch.num_classes == 10
    assert net.arch.convs[0].out_channels == 64 // 16
    x = _input(224, batch=2) / 60
    with torch.no_grad():
        expected = model.forward(x)
    for backend in ("engine", "reference"):
        assert _relative_error(net(x, backend=backend), expected) < 1e-4, backend


def test_torchvision_vgg_errors_name_the_tensors(tmp_path):
    state = _torchvision_vgg("vgg11", False).state_dict()
    broken = dict(state)
    del broken["features.3.bias"]
    with pytest.raises(WeightsError, match=r"missing conv2_1.bias \(features.3.bias\)"):
        weights.from_state_dict(broken)
    seven = {k: v for k, v in state.items() if not k.startswith("features.18.")}
    with pytest.raises(WeightsError, match="found 7 convs, the first 3x3"):
        weights.from_state_dict(seven)
    # eight convs whose pools are elsewhere (indices shifted): not VGG-11's layout
    shifted = {(f"features.{int(k.split('.')[1]) + 1}.{k.split('.')[2]}"
                if k.startswith("features.") and int(k.split(".")[1]) >= 3 else k): v
               for k, v in state.items()}
    with pytest.raises(WeightsError, match="do not have vgg11's pools"):
        weights.from_state_dict(shifted)


# ----------------------------------------------------------------- shared mode on deep chains

@pytest.mark.parametrize("name, crop", [("alexnet", 227), ("vgg11", 320),
                                        ("overfeat_accurate", 293)])
def test_shared_map_cells_equal_the_patch_cells_whose_field_lies_inside_it(name, crop):
    """The border effect, exactly: for a patch at whole-cell offsets, every cell of its
    last-conv map whose receptive field lies inside the patch equals the whole image's cell
    (the per-patch network never pads there); the cells nearer the border differ, because the
    patch's convs pad with zeros where the whole image has pixels."""
    net = nets.network(name, width=WIDTH, seed=8)
    size, offset, stride = receptive_field(net)
    x = _input(crop + 3 * stride, batch=1, seed=9)[:, :, :, :crop + 2 * stride]
    whole, _ = conv5_map(net, x)
    for column, row in ((1, 2), (2, 0)):
        top, left = row * stride, column * stride
        patch = net(x[:, :, top:top + crop, left:left + crop], net.arch.last_conv)[0]
        n = patch.shape[1]
        window = whole[:, row:row + n, column:column + n]
        inside = torch.tensor([c for c in range(n)
                               if c * stride - offset >= 0 and c * stride - offset + size <= crop])
        assert len(inside) >= 1
        assert _relative_error(window[:, inside][:, :, inside],
                               patch[:, inside][:, :, inside]) < 1e-4
        assert _relative_error(window, patch) > 1e-3  # the border cells: the check can fail


def test_shared_mode_runs_a_vgg_and_counts_its_savings():
    net = nets.network("vgg11", width=WIDTH, num_classes=None, seed=6)
    image = torch.randint(0, 256, (3, 150, 200), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(7))
    a, boxes = PatchFeatureExtractor(net, layer="fc7")(image)
    b, shared_boxes = PatchFeatureExtractor(net, layer="fc7", mode="shared")(image)
    assert torch.equal(boxes, shared_boxes) and a.shape == b.shape == (len(boxes), 256)
    with pytest.raises(ValueError, match="gives features of conv5_2 or a later layer"):
        PatchFeatureExtractor(net, layer="conv4_2", mode="shared")
    conv = PatchFeatureExtractor(net, layer="conv5_2", mode="shared", conv_pooling="max")
    assert conv(image)[0].shape == (len(boxes), net.arch.convs[-1].out_channels)
    # multiply-adds on the paper's grid for the full VGG-16: arithmetic on the shapes only
    with torch.device("meta"):
        vgg16 = ConvNet(architecture("vgg16", num_classes=None))
    boxes = paper_grid(500, 375)
    per, sharing = multiply_adds(vgg16, 500, 375, boxes)
    assert per / sharing > 5.5, per / sharing  # 5.8x: VGG's convs weigh more than AlexNet's
    assert math.isclose(per, len(boxes) * _vgg16_macs(), rel_tol=1e-9)


def _vgg16_macs() -> int:
    """VGG-16's multiply-adds for one 224x224 image up to fc7: 15.4 G for the convs (Simonyan
    & Zisserman's 15.5 G counts fc8 too), from the configuration alone."""
    total, side, channels = 0, 224, 3
    for value in _VGG_CONFIGS["vgg16"]:
        if value == "M":
            side //= 2
            continue
        total += side * side * value * channels * 9
        channels = value
    return total + 512 * 7 * 7 * 4096 + 4096 * 4096


def test_info_shows_a_torchvision_vgg(tmp_path, capsys):
    from cnnxfer.cli import main

    path = tmp_path / "vgg16.pth"
    torch.save(_torchvision_vgg("vgg16", batch_norm=True).state_dict(), path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vgg16" in out and "RGB" in out and "13 conv, 3 FC" in out
    assert "conv1_1 " in out and "conv5_3 " in out and "32x7x7" in out
    assert "fc6     256 " in out and "fc8     10 " in out
