"""cnnxfer.nets.weights: torchvision state_dicts, cnnxfer safetensors, conversion and the checks."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnxfer import nets, weights
from cnnxfer.nets import WeightsError
from cnnxfer.nets.preprocessing import CAFFE, TORCHVISION, Preprocessing


def _torchvision_alexnet(c=(16, 48, 96, 64, 64), fc=256, classes=10) -> nn.Module:
    """torchvision.models.AlexNet's module structure (its __init__ transcribed, with the widths
    as parameters): the state_dict names and the forward are the ones torchvision's files have.
    (torchvision itself is not a dependency: its wheels here are built for CUDA torch.)"""
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, c[0], kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2))
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(p=0.5), nn.Linear(c[4] * 6 * 6, fc), nn.ReLU(inplace=True),
        nn.Dropout(p=0.5), nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Linear(fc, classes))

    def forward(x):
        return model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))

    model.forward = forward
    torch.manual_seed(0)
    for module in model.modules():  # non-zero biases, so a swapped bias shows
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(module.bias, -0.1, 0.1)
    return model.eval()


@pytest.fixture
def torchvision_file(tmp_path):
    model = _torchvision_alexnet()
    path = tmp_path / "alexnet.pth"
    torch.save(model.state_dict(), path)
    return model, path


def _close(a, b, tolerance=1e-4):
    return ((a - b).abs().max() / b.abs().max()).item() < tolerance


@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_torchvision_state_dict_gives_torchvision_outputs(torchvision_file, backend):
    model, path = torchvision_file
    net = weights.load(path, backend=backend)
    assert net.arch.name == "torchvision" and net.preprocessing == TORCHVISION
    assert [c.out_channels for c in net.arch.convs] == [16, 48, 96, 64, 64]
    x = torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        expected = model(x)
        assert _close(net(x), expected)
        # the check can fail: perturbed conv3 weights change the output (a whole filter, so no
        # dead ReLU downstream can hide it)
        net.conv3.weight[:, 0] += 0.5
        assert not _close(net(x), expected)


def test_checkpoint_wrapper_and_width_inference(tmp_path):
    model = _torchvision_alexnet(c=(8, 24, 48, 32, 32), fc=64, classes=5)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    net = weights.load(path)
    assert net.arch.fc == (64, 64) and net.arch.num_classes == 5
    x = torch.randn((1, 3, 224, 224))
    with torch.no_grad():
        assert _close(net(x), model(x))


def test_safetensors_round_trip_keeps_architecture_and_preprocessing(tmp_path):
    net = nets.alexnet("caffenet", width=0.25, input_size=224, num_classes=7, seed=1)
    path = tmp_path / "caffenet.safetensors"
    weights.save(net, path)
    loaded = weights.load(path)
    assert loaded.arch == net.arch
    assert loaded.preprocessing == net.preprocessing == Preprocessing(
        mean=CAFFE.mean, std=CAFFE.std, channel_order="BGR", input_size=224)
    x = torch.randn((2, 3, 224, 224))
    assert torch.equal(loaded(x), net(x))
    custom = Preprocessing(mean=(1, 2, 3), std=(4, 5, 6))
    assert weights.load(path, preprocessing=custom).preprocessing == custom
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == weights.FORMAT
    assert json.loads(metadata["cnnxfer.architecture"])["name"] == "caffenet"


def test_convert_torchvision_to_safetensors(torchvision_file, tmp_path):
    model, path = torchvision_file
    out = tmp_path / "converted.safetensors"
    weights.convert(path, out)
    net = weights.load(out)
    assert net.arch.name == "torchvision" and net.preprocessing == TORCHVISION
    x = torch.randn((1, 3, 224, 224))
    with torch.no_grad():
        assert _close(net(x), model(x))
    with pytest.raises(ValueError, match=r"destination must end in \.safetensors"):
        weights.convert(path, tmp_path / "out.pth")


def test_bare_cnnxfer_names_need_the_architecture(tmp_path):
    net = nets.alexnet("alexnet", width=0.25, seed=2)
    path = tmp_path / "bare.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(WeightsError, match="pass name= one of alexnet, caffenet, torchvision"):
        weights.load(path)
    loaded = weights.load(path, name="alexnet")
    x = torch.randn((1, 3, 227, 227))
    assert torch.equal(loaded(x), net(x))


def test_every_bad_tensor_is_listed_with_both_shapes(torchvision_file, tmp_path):
    model, _ = torchvision_file
    state = model.state_dict()
    state["classifier.1.weight"] = torch.zeros(256, 100)
    del state["features.3.bias"]
    state["features.20.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError) as caught:
        weights.from_state_dict(state, source="my.pth")
    message = str(caught.value)
    assert "my.pth does not fit torchvision (3 problems)" in message
    assert "missing conv2.bias (features.3.bias): expected shape [48]" in message
    assert ("mis-shaped fc6.weight (classifier.1.weight): expected [256, 2304], got [256, 100]"
            in message)
    assert "unexpected features.20.weight: shape [3, 3]" in message


def test_non_finite_weights_are_refused(torchvision_file):
    model, _ = torchvision_file
    state = model.state_dict()
    state["features.0.weight"][0, 0, 0, 0] = float("nan")
    state["classifier.6.bias"][1] = float("inf")
    with pytest.raises(WeightsError, match=r"conv1.weight \(features.0.weight\), "
                                           r"fc8.bias \(classifier.6.bias\) hold NaN or inf"):
        weights.from_state_dict(state)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*missing.pth"):
        weights.load(tmp_path / "missing.pth")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"must end in \.safetensors, \.pth, \.pt or \.onnx"):
        weights.load(other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="garbage.pth.*weights_only=True"):
        weights.load(garbage)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        weights.load(bad_safetensors)
    code = tmp_path / "code.pth"
    torch.save({"conv1.weight": torch.zeros(1), "object": Preprocessing()}, code)
    with pytest.raises(WeightsError, match="weights_only=True"):
        weights.load(code)  # an arbitrary object is refused, never unpickled
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(WeightsError, match="holds a Tensor, expected a state_dict"):
        weights.load(tensor_only)


def test_preprocessing_validation():
    with pytest.raises(ValueError, match="channel_order must be 'RGB' or 'BGR', got 'RGBA'"):
        Preprocessing(channel_order="RGBA")
    with pytest.raises(ValueError, match="std finite and > 0"):
        Preprocessing(std=(1, 0, 1))
    with pytest.raises(ValueError, match="3 values"):
        Preprocessing(mean=(1, 2))
    assert Preprocessing.from_dict(CAFFE.to_dict()) == CAFFE
