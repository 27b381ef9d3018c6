"""The rows the paper compares its method with, on a VOC-format split:

- scratch: the same network layout trained from scratch on the target's training patches only
  (labelled by the same rule, background included), then scored as the method is: image score =
  mean over the image's patches of y^k. No source task.
- whole image: the pretrained network's FC7 of the whole image (one feature per image, resized
  to the network's input), standardized, with the same adaptation layers trained on the image
  labels (multi-label: a sigmoid per class). No patches.
- chance: random scores, for scale.

Each returns scores [N, C] of the test split's images, to be evaluated like the method's.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.voc import VOCSplit
from ..features.grids import PAPER_SCALES, paper_grid
from ..features.images import load_image
from ..nets import AlexNet, trainable
from ..nets import weights as weight_files
from ..ops import extract_patches
from .head import Dropout
from .samples import main_labels
from .scores import PAPER_K, image_scores


def _patches(net, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """float32 [K, 3, S, S] network inputs of the boxes of one uint8 image."""
    prep = net.preprocessing
    return extract_patches(image, boxes, size=net.arch.input_size, mean=prep.mean, std=prep.std,
                           out_dtype=torch.float32, reverse_channels=prep.reverse_channels)


def _scratch_key(train: VOCSplit, like, settings: dict) -> str:
    """What makes two scratch trainings the same: the training images (files and objects),
    the layout, the preprocessing and the settings."""
    digest = hashlib.sha256(json.dumps({"classes": list(train.classes),
                                        "arch": like.arch.to_dict(),
                                        "prep": like.preprocessing.to_dict(), **settings},
                                       sort_keys=True).encode())
    for image in train.images:
        stat = image.path.stat()
        digest.update(f"{image.path}|{stat.st_size}|{stat.st_mtime_ns}|{image.objects}".encode())
    return digest.hexdigest()[:16]


def scratch_scores(train: VOCSplit, test: VOCSplit, *, like, scales=PAPER_SCALES,
                   epochs: int = 12, batch_size: int = 64, lr: float = 0.01,
                   background_fraction: float = 0.1, seed: int = 0, k: float = PAPER_K,
                   cache: str | Path | None = None,
                   progress: bool = True) -> tuple[torch.Tensor, dict]:
    """(scores [N_test, C], summary): a network of `like`'s layout, width and input size (its
    preprocessing too), trained from scratch on the labelled patches of `train`. With `cache`
    (a .safetensors path), the trained network is kept there and reused by a later call with
    the same training images and settings."""

    grid = functools.partial(paper_grid, scales=tuple(scales))
    classes = train.classes
    key = _scratch_key(train, like, {"scales": list(scales), "epochs": epochs,
                                     "batch_size": batch_size, "lr": lr, "seed": seed,
                                     "background_fraction": background_fraction})
    cache = Path(cache) if cache else None
    if cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
        stored = json.loads(cache.with_suffix(".json").read_text())
        if stored.get("key") == key:
            net = weight_files.load(cache)
            return _score(net, test, grid, len(classes), k, progress), {**stored,
                                                                        "cached": True}
    summary = _train_scratch(train, like, grid, epochs=epochs, batch_size=batch_size, lr=lr,
                             background_fraction=background_fraction, seed=seed,
                             progress=progress)
    net = summary.pop("net")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        weight_files.save(net, cache)
        cache.with_suffix(".json").write_text(json.dumps({**summary, "key": key}))
    return _score(net, test, grid, len(classes), k, progress), {**summary, "cached": False}


def _train_scratch(train: VOCSplit, like, grid, *, epochs: int, batch_size: int, lr: float,
                   background_fraction: float, seed: int, progress: bool) -> dict:
    """{"net": the trained network, "patches": labelled patches, "epochs": epochs}."""
    from tqdm import tqdm

    classes = train.classes
    inputs, targets = [], []
    for image in tqdm(train.images, desc="scratch: patches", unit="image", leave=False,
                      disable=not progress):
        pixels = load_image(image.path)
        boxes = grid(pixels.shape[2], pixels.shape[1])
        labels = main_labels(image, boxes, classes, background_fraction=background_fraction,
                             seed=seed)
        keep = labels >= 0
        if bool(keep.any()):
            inputs.append(_patches(like, pixels, boxes[keep]))
            targets.append(labels[keep])
    x, y = torch.cat(inputs), torch.cat(targets)
    # as the source network: its layout at its width, with the target's classes + background
    net = AlexNet(replace(like.arch, num_classes=len(classes) + 1), like.preprocessing)
    trainable.initialize(net, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(y) / batch_size)
    warmup = max(1, steps // epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    counts = torch.bincount(y, minlength=len(classes) + 1).double()
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()),
                          0).float()
    for epoch in range(epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(y), generator=generator)
        for begin in tqdm(range(0, len(y), batch_size), desc=f"scratch {epoch + 1}/{epochs}",
                          unit="batch", leave=False, disable=not progress):
            rows = order[begin:begin + batch_size]
            batch = x[rows]
            flip = torch.rand(len(rows), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            loss = F.cross_entropy(trainable.forward(net, batch, dropout=0.0), y[rows],
                                   weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return {"net": net, "patches": int(len(y)), "epochs": epochs}


def _score(net, test: VOCSplit, grid, classes: int, k: float, progress: bool) -> torch.Tensor:
    """scores [N, C]: image_scores of the network's class probabilities over each test
    image's patches (its frozen forward: the engine, no gradients)."""
    from tqdm import tqdm

    scores = torch.zeros(len(test.images), classes)
    for row, image in enumerate(tqdm(test.images, desc="scratch: scoring", unit="image",
                                     leave=False, disable=not progress)):
        pixels = load_image(image.path)
        patches = _patches(net, pixels, grid(pixels.shape[2], pixels.shape[1]))
        probs = torch.softmax(net(patches), dim=1)
        scores[row] = image_scores(probs[:, :classes], k)
    return scores


def whole_image_scores(train: VOCSplit, test: VOCSplit, net, *, layer: str = "fc7",
                       epochs: int = 60, lr: float = 0.01, hidden: int = 2048, seed: int = 0,
                       progress: bool = True) -> torch.Tensor:
    """scores [N_test, C]: the adaptation layers on one `layer` feature per image (the whole
    image resized to the network's input), trained on the image labels of `train` (a sigmoid
    per class; labels 0, 'difficult only', are left out of the loss)."""
    from tqdm import tqdm

    def features(split: VOCSplit) -> torch.Tensor:
        rows = []
        for image in tqdm(split.images, desc="whole images", unit="image", leave=False,
                          disable=not progress):
            pixels = load_image(image.path)
            box = torch.tensor([[0, 0, pixels.shape[2], pixels.shape[1]]])
            rows.append(net(_patches(net, pixels, box), layer))
        return torch.cat(rows)

    x_train, x_test = features(train), features(test)
    # standardized with the training images' statistics: on raw FC7 (mostly zeros, a few large
    # units) the head did not even fit its own training images (docs/demo-notes.md)
    mean, std = x_train.mean(dim=0), x_train.std(dim=0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    labels = train.labels().float()
    target, mask = (labels > 0).float(), (labels != 0).float()
    torch.manual_seed(seed)
    # the adaptation layers' shape (FCa + ReLU + dropout, FCb), one sigmoid per class: an image
    # may hold several classes, and there is no background class for whole images
    head = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], hidden), torch.nn.ReLU(),
                               Dropout(0.5), torch.nn.Linear(hidden, len(train.classes)))
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    head.train()
    for _ in range(epochs):  # the whole training set is one batch: a few dozen images
        loss = (F.binary_cross_entropy_with_logits(head(x_train), target, reduction="none")
                * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        return torch.sigmoid(head(x_test))


def chance_scores(test: VOCSplit, *, seed: int = 0) -> torch.Tensor:
    """scores [N_test, C]: uniform random numbers."""
    return torch.rand(len(test.images), len(test.classes),
                      generator=torch.Generator().manual_seed(seed))
