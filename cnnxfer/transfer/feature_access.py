"""One image's stored features, wherever they are: a per-image file (`cnnxfer extract -o
FOLDER`, a Path) or an image of a feature store (`cnnxfer extract --store DIR`, a StoredImage).
Training and scoring go through these functions only, so both kinds work alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.store import StoreReader
from ..features import files as feature_files
from ..features.extractor import ImageFeatures


@dataclass(frozen=True, eq=False)
class StoredImage:
    """The features of image `id` in the store `reader`."""

    reader: StoreReader
    id: str

    def __str__(self) -> str:
        return f"{self.reader.folder}[{self.id}]"


FeatureHandle = Path | StoredImage


def load(handle: FeatureHandle) -> ImageFeatures:
    """The image's features [K, D] and boxes [K, 4]."""
    if isinstance(handle, StoredImage):
        features, boxes = handle.reader[handle.id]
        return ImageFeatures(handle.id, features, boxes)
    (result,), _ = feature_files.load_features(handle)
    return result


def boxes(handle: FeatureHandle) -> torch.Tensor:
    """The image's boxes [K, 4] int64, without its features where the format allows."""
    if isinstance(handle, StoredImage):
        return handle.reader[handle.id][1]
    (result,) = feature_files.load_boxes(handle)
    return result


def header(handle: FeatureHandle) -> dict:
    """What the features were made with: at least "layer", "weights_sha256", "weights"."""
    if isinstance(handle, StoredImage):
        return handle.reader.settings
    return feature_files.read_header(handle)


def feature_size(handle: FeatureHandle) -> int:
    if isinstance(handle, StoredImage):
        return handle.reader.feature_size
    return feature_files.feature_size(handle)


def identity(handle: FeatureHandle) -> str:
    """A string that changes when the stored features may have: the file's path, size and
    time; for a store image, the checksum of its shard (from the manifest) and its id."""
    if isinstance(handle, StoredImage):
        return f"{handle}|{handle.reader.shard_record(handle.id)['sha256']}"
    stat = handle.stat()
    return f"{handle}|{stat.st_size}|{stat.st_mtime_ns}"


def where(handle: FeatureHandle) -> str:
    """The folder the features are in, for messages."""
    return str(handle.reader.folder if isinstance(handle, StoredImage) else handle.parent)
