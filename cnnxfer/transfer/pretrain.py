"""Training a source network with cnnxfer itself: the stand-in for ImageNet pretraining.

    net, summary = pretrain("world/source.safetensors", PretrainConfig(epochs=12))

The network is an AlexNet-family layout at a width multiplier and the source images' size,
trained through the engine's fused ops and their gradients (nets.trainable) with SGD (momentum,
weight decay, cosine schedule), augmentation (random crops of the image padded by an eighth of
its side, horizontal flips, brightness and contrast jitter), a progress bar and a checkpoint per
epoch. The result is saved as cnnxfer weights (architecture and preprocessing included) in the
user's cache folder ($XDG_CACHE_HOME/cnnxfer/pretrained, else ~/.cache/...), under a name made of
the source file's fingerprint and the settings: a second call with the same inputs loads it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.toyvoc import load_source
from ..nets import Preprocessing, alexnet, trainable
from ..nets import weights as weight_files


@dataclass(frozen=True)
class PretrainConfig:
    """arch, width: the layout and its width multiplier; epochs, batch_size, lr, momentum,
    weight_decay: SGD's (a linear warm-up over warmup_epochs, then a cosine to 0); dropout:
    after FC6 and FC7 (0: a net this small and a schedule this short learn faster without);
    validation_fraction: source images held out to report accuracy; seed: every random
    choice; device: where it trains."""

    arch: str = "alexnet"
    width: float = 0.25
    epochs: int = 24
    batch_size: int = 128
    lr: float = 0.02
    warmup_epochs: float = 1.0
    dropout: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "cpu"

    def key(self, source_fingerprint: str) -> str:
        """The cache name of this training on that source."""
        settings = {k: v for k, v in asdict(self).items() if k != "device"}
        blob = json.dumps({"source": source_fingerprint, **settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_folder() -> Path:
    """$XDG_CACHE_HOME/cnnxfer/pretrained (~/.cache/cnnxfer/pretrained by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnxfer" / "pretrained"


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random padded crops, flips and brightness/contrast jitter of float [N, 3, S, S] pixels
    (0..255), batched."""
    n, _, side, _ = images.shape
    pad = max(1, side // 8)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(side)[None, :])  # [n, side]
    cols = (dx[:, None] + torch.arange(side)[None, :])
    batch = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    gain = 1 + 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    shift = 40 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * gain + mean + shift).clamp(0, 255)


def _normalize(images: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    return (images - mean) / std


def _accuracy(net, images, labels, prep, device, batch_size=512) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            x = _normalize(images[start:start + batch_size].float(), prep).to(device)
            logits = trainable.forward(net, x, training=False)
            correct += int((logits.argmax(1).cpu() == labels[start:start + batch_size]).sum())
    return correct / max(1, len(labels))


def pretrain(source: str | os.PathLike, config: PretrainConfig = PretrainConfig(), *,
             out: str | os.PathLike | None = None, cache: bool = True,
             progress: bool = True) -> tuple:
    """(net, summary): a network trained on the source task at `source` (toyvoc's
    source.safetensors), loaded from the cache when it was trained before with these settings.

    out: where to write the weights (default: the cache folder, <key>.safetensors).
    summary: {"path", "cached", "seconds", "train_accuracy", "val_accuracy", "epochs",
    "classes"}.
    """
    from tqdm import tqdm

    source = Path(source)
    images, labels, classes = load_source(source)
    key = config.key(weight_files.fingerprint(source))
    path = Path(out) if out else cache_folder() / f"{key}.safetensors"
    summary_path = path.with_suffix(".json")
    if cache and path.is_file() and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("key") == key:
            return weight_files.load(path), {**summary, "cached": True, "path": str(path)}

    start = time.perf_counter()
    side = int(images.shape[-1])
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(labels), generator=generator)
    held = max(1, round(config.validation_fraction * len(labels))) \
        if config.validation_fraction > 0 else 0
    val_index, train_index = order[:held], order[held:]
    # the source images' own statistics, as ImageNet's mean and std are ImageNet's
    pixels = images[train_index].float()
    prep = Preprocessing(mean=tuple(pixels.mean(dim=(0, 2, 3)).tolist()),
                         std=tuple(pixels.std(dim=(0, 2, 3)).tolist()), channel_order="RGB",
                         input_size=side)
    net = alexnet(config.arch, width=config.width, input_size=side, num_classes=len(classes),
                  preprocessing=prep)
    trainable.initialize(net, seed=config.seed)
    net = net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_index) / config.batch_size)
    # a linear warm-up, then a cosine to 0: without the warm-up the first steps of SGD with
    # momentum push the freshly initialized network onto the uniform-prediction plateau
    warmup = max(1, round(config.warmup_epochs * steps / config.epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup)
        * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    checkpoint = path.with_suffix(".checkpoint.pt")
    first_epoch = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            first_epoch = state["epoch"] + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(first_epoch, config.epochs):
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout
        permutation = train_index[torch.randperm(len(train_index), generator=generator)]
        bar = tqdm(range(0, len(permutation), config.batch_size), unit="batch", leave=False,
                   desc=f"pretrain {epoch + 1}/{config.epochs}", disable=not progress)
        total = 0.0
        for begin in bar:
            batch = permutation[begin:begin + config.batch_size]
            x = _normalize(_augment(images[batch].float(), generator), prep).to(device)
            loss = F.cross_entropy(trainable.forward(net, x, dropout=config.dropout,
                                                     training=True),
                                   labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        bar.close()
        if not math.isfinite(total):
            raise ValueError(f"pretraining diverged in epoch {epoch + 1}; lower the learning "
                             f"rate (lr={config.lr})")
        temporary = checkpoint.with_suffix(".tmp")
        torch.save({"key": key, "epoch": epoch, "net": net.state_dict(),
                    "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "generator": generator.get_state()}, temporary)
        os.replace(temporary, checkpoint)
        if progress:
            tqdm.write(f"pretrain epoch {epoch + 1}: loss {total / len(permutation):.3f}")
    net = net.cpu()
    summary = {"key": key, "classes": list(classes), "epochs": config.epochs,
               "config": asdict(config), "seconds": time.perf_counter() - start,
               "train_accuracy": _accuracy(net, images[train_index[:2000]],
                                           labels[train_index[:2000]], prep, "cpu"),
               "val_accuracy": _accuracy(net, images[val_index], labels[val_index], prep,
                                         "cpu") if held else None}
    weight_files.save(net, path)
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)
    return net, {**summary, "cached": False, "path": str(path)}
