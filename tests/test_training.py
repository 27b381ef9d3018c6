"""The adaptation head, the sharded patch stream and the training loop (cnnxfer.transfer)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnxfer import nets
from cnnxfer.data import average_precision
from cnnxfer.features import ImageFeatures, save_features
from cnnxfer.transfer import (
    AdaptationHead,
    LabelledImage,
    TrainConfig,
    image_scores,
    train_head,
    trunk_from_network,
)
from cnnxfer.transfer import training as training_module
from cnnxfer.transfer.head import load_with_header
from cnnxfer.transfer.patch_data import ShardStream, batches, read_shard, write_shards
from cnnxfer.transfer.training import class_weights, split_images

CLASSES = ["a", "b", "c"]


def _planted(folder: Path, images: int, *, dim: int = 32, patches: int = 40, seed: int = 0,
             noise: float = 1.5):
    """Feature files with a planted signal: each image holds one class (or none); its object
    patches are that class's mean vector plus noise, the rest background noise. Returns
    (LabelledImage per image, the image's class or -1)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(len(CLASSES) + 1, dim, generator=torch.Generator().manual_seed(99)) * 2
    out, truth = [], []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        cls = int(torch.randint(-1, len(CLASSES), (1,), generator=g))
        labels = torch.full((patches,), len(CLASSES))
        if cls >= 0:
            labels[: patches // 4] = cls
        x = means[labels] + noise * torch.randn(patches, dim, generator=g)
        path = folder / f"{i:04d}.safetensors"
        save_features(path, [ImageFeatures(f"{i}.jpg", x, torch.zeros(patches, 4,
                                                                        dtype=torch.int64))])
        labels[-3:] = -1  # some patches left out of training, as the labelling rule does
        out.append(LabelledImage(path, labels))
        truth.append(cls)
    return out, truth


# ---------------------------------------------------------------------------- the head

def test_head_shapes_probabilities_and_eval_mode():
    torch.manual_seed(0)
    head = AdaptationHead(16, CLASSES, hidden=8)
    x = torch.randn(5, 16)
    assert head(x).shape == (5, 4)
    head.train()
    p = head.probabilities(x)
    assert p.shape == (5, 4) and p.dtype == torch.float32
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    torch.testing.assert_close(p, head.probabilities(x))  # no dropout: deterministic
    assert head.training  # probabilities() restores the mode it found
    assert head.probabilities(torch.empty(0, 16)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"x must be \[N, 16\]"):
        head(torch.randn(5, 15))


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": []}, "classes must be a non-empty"),
    ({"classes": ["a", "a"]}, "classes must be distinct"),
    ({"hidden": 0}, "hidden must be a positive int"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
])
def test_head_rejects_bad_arguments(kwargs, message):
    args = {"classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        AdaptationHead(16, args.pop("classes"), **args)


def test_head_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    net = nets.alexnet("alexnet", width=0.0625, seed=0, num_classes=None)
    trunk = trunk_from_network(net, "fc6")
    head = AdaptationHead(net.arch.fc[0], CLASSES, hidden=8, layer="fc6", network="w.st",
                          trunk=trunk)
    path = tmp_path / "head.safetensors"
    head.save(path, training={"epochs": 3})
    again, header = load_with_header(path)
    assert again.classes == tuple(CLASSES) and again.layer == "fc6" and again.network == "w.st"
    assert again.trunk_layers == ("fc7",) and header["training"] == {"epochs": 3}
    x = torch.randn(4, net.arch.fc[0])
    torch.testing.assert_close(again.probabilities(x), head.probabilities(x))
    # the trunk starts as the network's own fc7 (+ ReLU), here in eval mode
    fc7 = torch.relu(torch.nn.functional.linear(x, net.fc7.weight, net.fc7.bias))
    torch.testing.assert_close(again.eval().trunk(x), fc7)


def test_head_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="head file not found"):
        AdaptationHead.load(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="is not a cnnxfer head"):
        AdaptationHead.load(other)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        AdaptationHead.load(garbage)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        AdaptationHead(4, CLASSES).save(tmp_path / "head.pt")


def test_trunk_needs_conv5_or_fc6_features():
    net = nets.alexnet("alexnet", width=0.0625, seed=0, num_classes=None)
    assert trunk_from_network(net, "fc7") == {}
    assert list(trunk_from_network(net, "conv5")) == ["fc6", "fc7"]
    with pytest.raises(ValueError, match="needs features of layer conv5 or fc6"):
        trunk_from_network(net, "conv3")


# ---------------------------------------------------------------------------- patch stream

def test_class_weights_balance_present_classes():
    w = class_weights([0, 10, 30, 60], "loss")
    assert w[0] == 0  # an absent class never occurs as a target
    # n / (C' * n_c): each present class weighs the same in total
    torch.testing.assert_close(w[1:] * torch.tensor([10.0, 30.0, 60.0]),
                               torch.full((3,), 100 / 3))
    assert torch.equal(class_weights([0, 10], "none"), torch.ones(2))


def test_split_images_is_seeded_and_disjoint(tmp_path):
    images = [LabelledImage(tmp_path / f"{i}", torch.zeros(1)) for i in range(20)]
    train, val = split_images(images, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert {im.features_path for im in train}.isdisjoint({im.features_path for im in val})
    assert split_images(images, 0.25, seed=3)[1] == val
    assert split_images(images, 0.0, seed=3) == (images, [])
    assert split_images(images[:1], 0.5, seed=3) == (images[:1], [])


def test_shards_hold_every_labelled_patch_once_within_the_byte_budget(tmp_path):
    images, _ = _planted(tmp_path, 12, dim=8, patches=10)
    budget = 8 * 4 * 25  # about 25 rows of fp32 features per shard
    shards = write_shards(images, tmp_path / "shards", prefix="train", num_labels=4,
                          shard_bytes=budget, seed=0)
    labelled = sum(int((im.labels >= 0).sum()) for im in images)
    assert shards.total == labelled and len(shards.paths) > 1
    for path, rows in zip(shards.paths, shards.rows):
        x, y, _ = read_shard(path)
        # a shard closes at the first image that takes it over the budget
        assert x.shape == (rows, 8) and x.numel() * 4 < budget + 10 * 8 * 4
        reference = load_file(str(path))  # our reader against safetensors' own
        assert torch.equal(x, reference["features"]) and torch.equal(y, reference["labels"])
    expected = torch.stack([torch.bincount(im.labels[im.labels >= 0], minlength=4)
                            for im in images]).sum(0)
    assert shards.class_counts == expected.tolist()
    # every row exactly once, in file order without a seed and shuffled (reproducibly) with one
    plain = torch.cat([x for x, _ in batches(shards, 7)])
    shuffled = torch.cat([x for x, _ in batches(shards, 7, seed=5)])
    again = torch.cat([x for x, _ in batches(shards, 7, seed=5)])
    assert plain.shape[0] == labelled and torch.equal(shuffled, again)
    assert not torch.equal(plain, shuffled)
    key = lambda t: sorted(map(tuple, t.tolist()))
    assert key(plain) == key(shuffled)
    # a stream reuses its read buffers from pass to pass; batches handed out are copies, so
    # batches kept from one pass are not overwritten by the next
    stream = ShardStream(shards)
    first = [x for x, _ in stream.batches(7, seed=5)]
    second = [x for x, _ in stream.batches(7)]
    assert torch.equal(torch.cat(first), shuffled) and torch.equal(torch.cat(second), plain)


def test_shards_refuse_mismatched_labels(tmp_path):
    images, _ = _planted(tmp_path, 1, dim=8, patches=10)
    bad = [LabelledImage(images[0].features_path, images[0].labels[:5])]
    with pytest.raises(ValueError, match="holds 10 patches but 5 labels"):
        write_shards(bad, tmp_path / "s", prefix="t", num_labels=4)


# ---------------------------------------------------------------------------- training

def _config(**overrides):
    return TrainConfig(**{"epochs": 4, "hidden": 16, "batch_size": 32, "lr": 0.02,
                          "validation_fraction": 0.2, **overrides})


def test_training_learns_a_planted_signal(tmp_path):
    train, _ = _planted(tmp_path / "train", 60)
    test, truth = _planted(tmp_path / "test", 40, seed=1)
    head, history = train_head(train, CLASSES, in_features=32, workdir=tmp_path / "w",
                               config=_config(), progress=False)
    assert len(history.train_loss) == 4 and history.train_loss[-1] < history.train_loss[0]
    assert all(math.isfinite(v) for v in history.val_loss)
    scores = torch.stack([
        image_scores(head.probabilities(load_file(str(im.features_path))["features/0"])
                     [:, :3], k=5) for im in test])
    truth = torch.tensor(truth)
    for c in range(3):
        labels = torch.where(truth == c, 1, -1)
        ap = average_precision(scores[:, c], labels)
        chance = float((labels == 1).float().mean())
        print(f"class {c}: AP {ap:.3f}, chance {chance:.3f}")
        assert ap > 0.9 > chance + 0.4


def test_training_is_deterministic_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    images, _ = _planted(tmp_path / "f", 20)
    config = _config(epochs=3)
    whole, history = train_head(images, CLASSES, in_features=32, workdir=tmp_path / "a",
                                config=config, progress=False)
    twin, _ = train_head(images, CLASSES, in_features=32, workdir=tmp_path / "b",
                         config=config, progress=False)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key

    save = training_module._save_checkpoint
    calls = []

    def interrupt_after_first_epoch(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_module, "_save_checkpoint", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_head(images, CLASSES, in_features=32, workdir=tmp_path / "c", config=config,
                   progress=False)
    resumed, resumed_history = train_head(images, CLASSES, in_features=32,
                                          workdir=tmp_path / "c", config=config,
                                          progress=False)
    assert len(calls) == 3  # epoch 1, then only epochs 2 and 3 after the resume
    assert resumed_history.train_loss == history.train_loss
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_training_stops_early_and_keeps_the_best_epoch(tmp_path):
    # labels that the features cannot predict: the head overfits the training patches and the
    # validation loss soon stops improving
    images, _ = _planted(tmp_path / "f", 20)
    g = torch.Generator().manual_seed(0)
    noise = [LabelledImage(im.features_path, torch.randint(0, 4, im.labels.shape, generator=g))
             for im in images]
    config = _config(epochs=12, lr=0.3, patience=2, schedule="constant", hidden=64,
                     validation_fraction=0.3)
    head, history = train_head(noise, CLASSES, in_features=32, workdir=tmp_path / "w",
                               config=config, progress=False)
    assert history.stopped_early and len(history.val_loss) < 12
    best = min(range(len(history.val_loss)), key=lambda e: history.val_loss[e])
    assert history.best_epoch == best
    assert len(history.val_loss) - 1 - best == config.patience
    # the head holds the best epoch's weights: its validation loss is the best one
    checkpoint = torch.load(tmp_path / "w" / "checkpoint.pt", weights_only=True)
    for key, value in head.state_dict().items():
        assert torch.equal(value, checkpoint["best_state"][key])


def test_training_reports_divergence(tmp_path):
    images, _ = _planted(tmp_path / "f", 10)
    with pytest.raises(ValueError, match="training diverged.*lower the learning rate"):
        train_head(images, CLASSES, in_features=32, workdir=tmp_path / "w",
                   config=_config(lr=1e6, schedule="constant"), progress=False)


def test_training_errors(tmp_path):
    images, _ = _planted(tmp_path / "f", 4)
    with pytest.raises(ValueError, match="features are 32 long, but in_features is 16"):
        train_head(images, CLASSES, in_features=16, workdir=tmp_path / "w", config=_config(),
                   progress=False)
    dropped = [LabelledImage(im.features_path, torch.full_like(im.labels, -1))
               for im in images]
    with pytest.raises(ValueError, match="no labelled training patches"):
        train_head(dropped, CLASSES, in_features=32, workdir=tmp_path / "x", config=_config(),
                   progress=False)
    with pytest.raises(ValueError, match="images is empty"):
        train_head([], CLASSES, in_features=32, workdir=tmp_path / "y", progress=False)
    for field, value, message in [("epochs", 0, "epochs must be a positive int"),
                                  ("schedule", "linear", "schedule must be one of"),
                                  ("balance", "sampling", "balance must be one of"),
                                  ("lr", float("nan"), "lr must be a finite number"),
                                  ("validation_fraction", 1.0, "validation_fraction must be")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**{field: value})


@pytest.mark.gpu
def test_training_on_the_gpu_learns_the_same_signal(tmp_path):
    train, _ = _planted(tmp_path / "train", 60)
    test, truth = _planted(tmp_path / "test", 40, seed=1)
    head, _ = train_head(train, CLASSES, in_features=32, workdir=tmp_path / "w",
                         config=_config(device="cuda"), progress=False)
    assert next(head.parameters()).device.type == "cpu"  # handed back on the CPU
    features = [load_file(str(im.features_path))["features/0"] for im in test]
    scores = torch.stack([image_scores(head.probabilities(x)[:, :3], k=5) for x in features])
    for c in range(3):
        labels = torch.where(torch.tensor(truth) == c, 1, -1)
        assert average_precision(scores[:, c], labels) > 0.9


def test_dropout_keeps_half_scaled_by_two_and_passes_gradients():
    from cnnxfer.transfer.head import Dropout

    drop = Dropout(0.5).train()
    x = torch.rand(64, 1024) + 1.0  # never 0: a 0 in the output is a dropped element
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01
    torch.testing.assert_close(y[kept], 2 * x[kept])
    # the draws are not the same pattern repeated: rows and byte groups differ
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[0, :8], kept[0, 8:16])
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # seeded by torch's generator, as nn.Dropout is
    x.requires_grad_(True)
    drop(x).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(drop.eval()(x), x)
    odd = torch.rand(3, 5) + 1.0  # not a multiple of 8: torch's dropout, the same contract
    out = drop.train()(odd)
    assert torch.all((out == 0) | torch.isclose(out, 2 * odd))


def test_held_out_images_without_labelled_patches_mean_no_validation(tmp_path):
    """Validation images whose patches are all left out (or of classes absent from training)
    give no validation loss: training runs every epoch and keeps the last one."""
    images, _ = _planted(tmp_path / "f", 10)
    held = set(im.features_path for im in split_images(images, 0.3, seed=0)[1])
    unlabelled = [LabelledImage(im.features_path, torch.full_like(im.labels, -1))
                  if im.features_path in held else im for im in images]
    head, history = train_head(unlabelled, CLASSES, in_features=32, workdir=tmp_path / "w",
                               config=_config(epochs=4, validation_fraction=0.3, patience=1),
                               progress=False)
    assert not history.stopped_early and history.best_epoch == 3
    assert all(math.isnan(v) for v in history.val_loss)
