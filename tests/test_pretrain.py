"""Pretraining a source network with cnnxfer's own ops (cnnxfer.transfer.pretrain and
`cnnxfer pretrain`): it learns, it is cached and reused, and it loads as weights."""
from __future__ import annotations

import pytest
import torch

from cnnxfer.cli import main
from cnnxfer.data import toyvoc
from cnnxfer.nets import weights
from cnnxfer.transfer.pretrain import PretrainConfig, _augment, cache_folder, pretrain


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    world = toyvoc.generate(tmp_path_factory.mktemp("world"), seed=1, images=4,
                            size=(64, 48), source_images=800, source_size=64)
    return world.source


@pytest.mark.slow
def test_pretraining_learns_is_cached_and_loads(source, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = PretrainConfig(width=0.25, epochs=15, batch_size=32, lr=0.01)
    net, summary = pretrain(source, config, progress=False)
    assert not summary["cached"]
    assert summary["path"].startswith(str(cache_folder()))
    # ten classes: chance is 0.1; a short schedule on 720 images reached 0.35 here (the demo's
    # 3600 images and 12 epochs: 0.65 on training images, 0.57 held out)
    assert summary["train_accuracy"] > 0.15, summary
    again, cached = pretrain(source, config, progress=False)
    assert cached["cached"] and cached["path"] == summary["path"]
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    loaded = weights.load(summary["path"])
    assert loaded.arch.input_size == 64 and loaded.arch.num_classes == 10
    assert loaded.preprocessing.channel_order == "RGB"


def test_command_line_and_augmentation(source, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "net.safetensors"
    assert main(["pretrain", str(source), "--epochs", "1", "--width", "0.125", "--out",
                 str(out), "--quiet"]) == 0
    assert "trained in" in capsys.readouterr().out and out.is_file()
    assert main(["pretrain", str(source), "--epochs", "1", "--width", "0.125", "--out",
                 str(out), "--quiet"]) == 0
    assert "reused" in capsys.readouterr().out
    images = torch.rand(5, 3, 64, 64) * 255
    augmented = _augment(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and 0 <= augmented.min() <= augmented.max() <= 255
    assert not torch.equal(augmented, images)
    assert main(["pretrain", str(tmp_path / "missing.safetensors"), "--quiet"]) == 2
