"""Labelled patch features, streamed from disk in bounded memory.

Training reads the features that `cnnxfer extract -o FOLDER` writes, one file per image. Only the
labelled patches are used (label >= 0: about one in eight of the paper's grid, most background
patches being dropped by the labelling rule), so they are first copied, once, into shards: files
of at most `shard_bytes` of features each, in a shuffled image order. An epoch then reads each
shard once, in a fresh order, and shuffles its rows; memory holds one image's features while the
shards are written and two shards while training (one in use, the next being read), whatever
the dataset's size (VOC2007 trainval:
5011 images, ~2.5M patches, 40 GB of fp32 FC7; its labelled patches fit in ~5 GB of shards).

Shard layout (safetensors): "features" [n, D] in the dtype the features were extracted in,
"labels" [n] int64 (0..C-1 a class, C the background).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import feature_access
from .feature_access import FeatureHandle


@dataclass(frozen=True)
class LabelledImage:
    """One image's stored features (a per-image file's Path, or an image of a feature store:
    feature_access) and the labels of its patches, in the stored patch order (-1: left out of
    training)."""

    features_path: FeatureHandle
    labels: torch.Tensor


@dataclass
class Shards:
    """Shard files and what training needs to know about them without opening them."""

    paths: list[Path]
    rows: list[int]
    feature_size: int
    class_counts: list[int]  # per label value 0..C (C: the background)

    @property
    def total(self) -> int:
        return sum(self.rows)

    def to_dict(self) -> dict:
        return {"paths": [p.name for p in self.paths], "rows": self.rows,
                "feature_size": self.feature_size, "class_counts": self.class_counts}

    @classmethod
    def from_dict(cls, folder: Path, data: dict) -> Shards:
        return cls([folder / name for name in data["paths"]], data["rows"],
                   data["feature_size"], data["class_counts"])


def write_shards(images: Sequence[LabelledImage], folder: str | os.PathLike, *, prefix: str,
                 num_labels: int, shard_bytes: int = 256 << 20, seed: int = 0,
                 on_image: Callable[[], None] | None = None) -> Shards:
    """Copies the labelled patches of `images` into shards `folder/{prefix}-00000.safetensors`...

    Images are taken in an order shuffled by `seed` so that each shard mixes many images.
    num_labels: C + 1 (the labels' range). on_image: called after each image (progress bars).
    Returns the shards' description (also written as folder/{prefix}.json).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    paths, rows, counts = [], [], torch.zeros(num_labels, dtype=torch.int64)
    pending_x, pending_y, pending_bytes, feature_size = [], [], 0, None

    def flush() -> None:
        nonlocal pending_x, pending_y, pending_bytes
        if not pending_x:
            return
        path = folder / f"{prefix}-{len(paths):05d}.safetensors"
        x, y = torch.cat(pending_x), torch.cat(pending_y)
        save_file({"features": x.contiguous(), "labels": y.contiguous()}, str(path))
        paths.append(path)
        rows.append(int(y.numel()))
        pending_x, pending_y, pending_bytes = [], [], 0

    for index in order:
        image = images[index]
        keep = image.labels >= 0
        if bool(keep.any()):
            result = feature_access.load(image.features_path)
            features = result.features
            if features.shape[0] != image.labels.shape[0]:
                raise ValueError(f"{str(image.features_path)!r} holds {features.shape[0]} "
                                 f"patches but {image.labels.shape[0]} labels were given")
            if feature_size is None:
                feature_size = int(features.shape[1])
            elif features.shape[1] != feature_size:
                raise ValueError(f"{str(image.features_path)!r} holds {features.shape[1]}-long "
                                 f"features, the files before it {feature_size}-long")
            labels = image.labels[keep].to(torch.int64)
            if int(labels.max()) >= num_labels:
                raise ValueError(f"labels of {str(image.features_path)!r} go up to "
                                 f"{int(labels.max())}, expected < {num_labels}")
            pending_x.append(features[keep].clone())
            pending_y.append(labels)
            counts += torch.bincount(labels, minlength=num_labels)
            pending_bytes += pending_x[-1].numel() * pending_x[-1].element_size()
            if pending_bytes >= shard_bytes:
                flush()
        if on_image is not None:
            on_image()
    flush()
    shards = Shards(paths, rows, feature_size or 0, counts.tolist())
    (folder / f"{prefix}.json").write_text(json.dumps(shards.to_dict()))
    return shards


# safetensors dtype names of the tensors a shard holds
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                       "I64": torch.int64}


def read_shard(path: Path, buffer: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features [n, D], labels [n] int64, the buffer they view) of one shard.

    The file is read with one sequential read into one uint8 buffer (`buffer` when it is large
    enough, else a new one), and the tensors are views of it. safetensors' own loader maps the
    file and faults it in page by page, which on a cold page cache reads at a third of the
    disk's sequential speed, and its load-from-bytes copies every tensor once more; a fresh
    buffer costs as much again in page faults as the read itself, hence the reuse
    (benches/bench_transfer.py measures all three). The format is the documented safetensors
    layout: an 8-byte little-endian header length, a JSON header {name: {"dtype", "shape",
    "data_offsets": [begin, end]}} and the data, offsets counted from the end of the header;
    shards are written by safetensors itself (write_shards)."""
    size = path.stat().st_size
    if buffer is None or buffer.numel() < size:
        buffer = torch.empty(size, dtype=torch.uint8)
    view = memoryview(buffer.numpy())[:size]
    with open(path, "rb", buffering=0) as handle:
        done = 0
        while done < size:
            count = handle.readinto(view[done:])
            if not count:
                raise ValueError(f"{str(path)!r} ended after {done} of {size} bytes")
            done += count
    header_length = int.from_bytes(view[:8], "little")
    header = json.loads(bytes(view[8:8 + header_length]))
    start = 8 + header_length
    tensors = {}
    for name in ("features", "labels"):
        entry = header.get(name)
        if entry is None or entry["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{str(path)!r} is not a cnnxfer shard (no {name!r} tensor of a "
                             f"known dtype)")
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        begin, end = (start + offset for offset in entry["data_offsets"])
        raw = buffer[begin:end]
        if begin % torch.empty((), dtype=dtype).element_size():
            raw = raw.clone()  # a view of another dtype must start on its alignment
        tensors[name] = raw.view(dtype).reshape(entry["shape"])
    return tensors["features"], tensors["labels"], buffer


class ShardStream:
    """Batches of a set of shards, one pass per call of batches(); the read buffers are kept
    between passes (epochs), so that only the first pass pays for fresh memory."""

    def __init__(self, shards: Shards):
        self.shards = shards
        self._buffers: list[torch.Tensor | None] = [None, None]

    def batches(self, batch_size: int, *, seed: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features [B, D], labels [B]) over every row of the shards once. With a seed, the
        shard order and the rows within each shard are shuffled (the same seed, the same
        order); without, rows come in file order (evaluation). The last batch of each shard
        may be smaller. Batches are copies: they stay valid after the pass moves on."""
        from concurrent.futures import ThreadPoolExecutor

        paths = self.shards.paths
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        order = (torch.randperm(len(paths), generator=generator).tolist()
                 if generator is not None else list(range(len(paths))))
        if not order:
            return
        slots = self._buffers

        def read(position: int):
            slot = position % 2
            x, y, slots[slot] = read_shard(paths[order[position]], slots[slot])
            return x, y

        # The next shard is read in a thread (I/O releases the GIL) into the other buffer
        # while this one's batches are used: reading overlaps training. The other buffer held
        # the shard before this one, whose batches were all handed out as copies.
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(read, 0)
            for position in range(len(order)):
                x, y = pending.result()
                if position + 1 < len(order):
                    pending = reader.submit(read, position + 1)
                perm = (torch.randperm(y.numel(), generator=generator)
                        if generator is not None else None)
                for start in range(0, y.numel(), batch_size):
                    if perm is None:
                        yield (x[start:start + batch_size].clone(),
                               y[start:start + batch_size].clone())
                    else:
                        rows = perm[start:start + batch_size]
                        yield x[rows], y[rows]


def batches(shards: Shards, batch_size: int, *, seed: int | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over the shards' rows (ShardStream(shards).batches, without buffer reuse)."""
    return ShardStream(shards).batches(batch_size, seed=seed)
