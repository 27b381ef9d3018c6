"""Training the adaptation layers on labelled patch features (Oquab et al., section 3.2).

    config = TrainConfig(epochs=10)
    head, history = train_head(images, classes, in_features=4096, workdir="run/", config=config)

`images` are LabelledImage (a per-image feature file and its patches' labels). The labelled
patches are copied once into shards (patch_data), split by image into a training part and a
held-out validation part; each epoch then streams the training shards in a fresh order.

- SGD with momentum and weight decay; the learning rate follows a cosine (or step, or constant)
  schedule over all steps.
- Class balance: background patches outnumber every class, so the cross-entropy weighs each
  class by n / (C' * n_c) over the C' classes present in the training patches ("loss"); "none"
  turns that off. (Re-weighting the loss rather than re-sampling keeps the stream sequential.)
- Early stopping: after each epoch the validation loss is measured (same weights, eval mode);
  the best epoch's weights are kept, and training stops after `patience` epochs without a new best.
- Checkpoints: workdir/checkpoint.pt after every epoch (head, optimizer, schedule, history); a
  rerun with the same inputs and settings resumes after the last finished epoch.
- Deterministic under `seed`: initialization, shard orders and dropout all derive from it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import feature_access
from .head import AdaptationHead
from .patch_data import LabelledImage, Shards, ShardStream, write_shards

SCHEDULES = ("cosine", "step", "constant")
BALANCES = ("loss", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all recorded in the head file).

    epochs: passes over the training patches (an upper bound with early stopping).
    batch_size: patches per SGD step. lr: the initial learning rate. momentum, weight_decay: SGD's.
    schedule: "cosine" (to 0 over all steps), "step" (x0.1 at 2/3 of the steps), "constant".
    balance: "loss" (class-weighted cross-entropy) or "none".
    validation_fraction: share of the images held out for early stopping (0 turns it off).
    patience: epochs without a better validation loss before stopping.
    hidden, dropout: FCa's width and the dropout probability.
    shard_bytes: the largest shard of features read at once (bounds the memory used).
    seed: every random choice derives from it. device: where the head trains.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    balance: str = "loss"
    validation_fraction: float = 0.1
    patience: int = 3
    hidden: int = 2048
    dropout: float = 0.5
    shard_bytes: int = 256 << 20
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "hidden", "shard_bytes", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got "
                             f"{self.balance!r}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")


@dataclass
class History:
    """Per finished epoch: training loss, validation loss (nan without validation), lr at its
    end; best_epoch: the epoch whose weights the head holds (0-based)."""

    train_loss: list
    val_loss: list
    lr: list
    best_epoch: int = -1
    stopped_early: bool = False


def class_weights(counts: Sequence[int], balance: str) -> torch.Tensor:
    """The cross-entropy's per-label weights [C + 1] float32: n / (C' * n_c) for the C' labels
    present (0 for absent ones, which never occur as targets), or all ones for "none"."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if balance == "none":
        return torch.ones(len(counts))
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def split_images(images: Sequence[LabelledImage], fraction: float, seed: int
                 ) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(training, validation) images: a seeded `fraction` of the images is held out, at least
    one when fraction > 0 and there are two or more images."""
    if fraction <= 0 or len(images) < 2:
        return list(images), []
    count = min(len(images) - 1, max(1, round(fraction * len(images))))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 1))
    held = set(order[:count].tolist())
    return ([im for i, im in enumerate(images) if i not in held],
            [im for i, im in enumerate(images) if i in held])


def settings_key(config: TrainConfig) -> dict:
    """The settings that make two runs the same run: all but the device, which changes where
    it runs, not what it computes (up to rounding)."""
    return {k: v for k, v in asdict(config).items() if k != "device"}


def fingerprint(images: Sequence[LabelledImage], classes: Sequence[str], extra: dict) -> str:
    """A digest of the training inputs (files, their sizes and times, labels) and settings: a
    checkpoint or shard set is reused only when it matches."""
    digest = hashlib.sha256(json.dumps({"classes": list(classes), **extra},
                                       sort_keys=True).encode())
    for image in images:
        digest.update(feature_access.identity(image.features_path).encode())
        digest.update(image.labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def prepare_shards(images: Sequence[LabelledImage], classes: Sequence[str], workdir: Path,
                   config: TrainConfig, *, progress: bool = True) -> tuple[Shards, Shards | None]:
    """The training and validation shards in workdir/shards, reused when the inputs match."""
    from tqdm import tqdm

    folder = workdir / "shards"
    key = fingerprint(images, classes, {"validation_fraction": config.validation_fraction,
                                        "seed": config.seed, "shard_bytes": config.shard_bytes})
    manifest = folder / "manifest.json"
    if manifest.is_file():
        stored = json.loads(manifest.read_text())
        if stored.get("key") == key:
            train = Shards.from_dict(folder, stored["train"])
            val = Shards.from_dict(folder, stored["val"]) if stored["val"] else None
            if all(p.is_file() for p in train.paths + (val.paths if val else [])):
                return train, val
    for old in folder.glob("*-[0-9][0-9][0-9][0-9][0-9].safetensors"):
        old.unlink()  # shards of other inputs or settings
    train_images, val_images = split_images(images, config.validation_fraction, config.seed)
    with tqdm(total=len(images), unit="image", desc="labelled patches", disable=not progress,
              leave=False) as bar:
        train = write_shards(train_images, folder, prefix="train", num_labels=len(classes) + 1,
                             shard_bytes=config.shard_bytes, seed=config.seed,
                             on_image=lambda: bar.update(1))
        val = (write_shards(val_images, folder, prefix="val", num_labels=len(classes) + 1,
                            shard_bytes=config.shard_bytes, seed=config.seed,
                            on_image=lambda: bar.update(1)) if val_images else None)
    if train.total == 0:
        raise ValueError("no labelled training patches: every patch was left out (check the "
                         "boxes, the classes and background_fraction)")
    if val is not None and val.total == 0:
        val = None  # the held-out images have no labelled patch: nothing to validate on
    manifest.write_text(json.dumps({"key": key, "train": train.to_dict(),
                                    "val": val.to_dict() if val else None}))
    return train, val


def _lr_factor(schedule: str, total_steps: int):
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "step":
        return lambda step: 0.1 if step >= (2 * total_steps) // 3 else 1.0
    return lambda step: 1.0


def evaluate_loss(head: AdaptationHead, shards: Shards | ShardStream, weights: torch.Tensor,
                  batch_size: int, device: torch.device) -> float:
    """The weighted cross-entropy of the head (eval mode) over every row of the shards."""
    stream = shards if isinstance(shards, ShardStream) else ShardStream(shards)
    head.eval()
    total, norm = 0.0, 0.0
    with torch.no_grad():
        for x, y in stream.batches(batch_size):
            x, y = x.to(device), y.to(device)
            w = weights.to(device)[y]
            total += float(F.cross_entropy(head(x), y, weight=weights.to(device),
                                           reduction="sum"))
            norm += float(w.sum())
    return total / norm if norm > 0 else float("nan")


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay; the fused implementation where this torch has it
    (one pass over each parameter instead of four: 4x faster on a 2-core CPU for FCa's 8M
    weights), else the default one."""
    parameters = list(parameters)
    options = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    try:
        return torch.optim.SGD(parameters, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # a torch or device without fused SGD
        return torch.optim.SGD(parameters, **options)


def training_step(head: AdaptationHead, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One SGD step on a batch (x [B, D] features, y [B] labels) with the class-weighted
    cross-entropy; returns the batch's loss (detached)."""
    # weighted mean: sum_i w[y_i] * loss_i / sum_i w[y_i]
    loss = F.cross_entropy(head(x), y, weight=weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_head(images: Sequence[LabelledImage], classes: Sequence[str], *, in_features: int,
               workdir: str | os.PathLike, config: TrainConfig = TrainConfig(),
               layer: str = "fc7", network: str = "", network_sha256: str = "",
               trunk: dict | None = None, progress: bool = True,
               resume: bool = True) -> tuple[AdaptationHead, History]:
    """Trains an AdaptationHead on the labelled patches of `images`.

    Args:
        images: per image, its feature file ([K, D] features, as `cnnxfer extract` writes)
            and labels [K] (0..C-1 a class, C background, -1 left out; transfer.label_patches).
        classes: the C target class names. in_features: D.
        workdir: where shards and the checkpoint go (created).
        trunk: trainable FC layers before the head (head.trunk_from_network) for fine-tuning.
        resume: continue from workdir/checkpoint.pt when it was made with the same inputs.
    Returns (head with the best epoch's weights, in eval mode, on the CPU; history).
    """
    from tqdm import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not images:
        raise ValueError("images is empty: nothing to train on")
    device = torch.device(config.device)
    train, val = prepare_shards(images, classes, workdir, config, progress=progress)
    if train.feature_size != in_features:
        raise ValueError(f"the features are {train.feature_size} long, but in_features is "
                         f"{in_features}")
    weights = class_weights(train.class_counts, config.balance).to(device)

    torch.manual_seed(config.seed)
    head = AdaptationHead(in_features, classes, hidden=config.hidden, dropout=config.dropout,
                          layer=layer, network=network, network_sha256=network_sha256,
                          trunk=trunk).to(device)
    optimizer = make_optimizer(head.parameters(), config)
    steps_per_epoch = sum(math.ceil(rows / config.batch_size) for rows in train.rows)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config.schedule, max(1, config.epochs * steps_per_epoch)))
    history = History([], [], [])
    best_state, best_loss, start_epoch = None, math.inf, 0

    checkpoint_path = workdir / "checkpoint.pt"
    key = fingerprint(images, classes, {**settings_key(config), "layer": layer,
                                        "network": network_sha256 or network,
                                        "trunk": list((trunk or {}).keys())})
    if resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if checkpoint.get("key") == key:
            head.load_state_dict(checkpoint["head"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["schedule"])
            history = History(**checkpoint["history"])
            best_state, best_loss = checkpoint["best_state"], checkpoint["best_loss"]
            start_epoch = checkpoint["epoch"] + 1
    if history.stopped_early:
        start_epoch = config.epochs

    train_stream = ShardStream(train)  # read buffers reused from epoch to epoch
    val_stream = ShardStream(val) if val is not None else None
    for epoch in range(start_epoch, config.epochs):
        head.train()
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout: the same on a resume
        total, norm = 0.0, 0.0
        bar = tqdm(train_stream.batches(config.batch_size, seed=config.seed * 7919 + epoch),
                   total=steps_per_epoch, unit="batch", desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = training_step(head, optimizer, x, y, weights)
            schedule.step()
            total += float(loss) * len(y)
            norm += len(y)
            bar.set_postfix(loss=f"{total / norm:.4f}")
        bar.close()
        if not math.isfinite(total):
            raise ValueError(f"training diverged: the loss is {total / max(norm, 1)} in epoch "
                             f"{epoch + 1}; lower the learning rate (lr={config.lr})")
        history.train_loss.append(total / max(norm, 1))
        history.lr.append(optimizer.param_groups[0]["lr"])
        val_loss = (evaluate_loss(head, val_stream, weights, 4 * config.batch_size, device)
                    if val is not None else float("nan"))
        history.val_loss.append(val_loss)
        # Without validation the last epoch is the best one; so it is when the held-out
        # patches are all of classes the training patches lack (zero weight: a NaN loss).
        if val is None or math.isnan(val_loss) or val_loss < best_loss:
            best_loss = val_loss if not math.isnan(val_loss) else best_loss
            best_state = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
            history.best_epoch = epoch
        elif epoch - history.best_epoch >= config.patience:
            history.stopped_early = True
        _save_checkpoint(checkpoint_path, key, epoch, head, optimizer, schedule, history,
                         best_state, best_loss)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {history.train_loss[-1]:.4f}, "
                       f"validation loss {val_loss:.4f}")
        if history.stopped_early:
            break

    head = head.cpu()
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.eval(), history


def _save_checkpoint(path: Path, key: str, epoch: int, head, optimizer, schedule,
                     history: History, best_state, best_loss: float) -> None:
    # Written to a temporary name and renamed: an interruption never leaves half a checkpoint.
    temporary = path.with_suffix(".tmp")
    torch.save({"key": key, "epoch": epoch, "head": head.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "history": asdict(history), "best_state": best_state,
                "best_loss": best_loss}, temporary)
    os.replace(temporary, path)
