"""Patch features of a dataset's images, one file per image in a folder, computed only where
missing: the fast path of training (the network runs once per image, not once per epoch).

The folder is the one `cnnxfer extract IMAGES... -o FOLDER` writes (`<stem>.safetensors` per
image, with its boxes and a header naming the layer, weights and dtype), so features extracted
beforehand are picked up; a file made with other settings is computed again. It may also be a
feature store (`cnnxfer extract --store DIR`, cnnxfer.data.store): then its features are read
from the store, which must hold every image, made with the asked settings.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import store as feature_store
from ..features import PatchFeatureExtractor
from ..features import files as feature_files
from ..features.grids import PAPER_SCALES
from ..features.shared import network_grid
from ..nets.weights import fingerprint
from .feature_access import FeatureHandle, StoredImage

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed: the layer (fc7, or conv5/fc6 to fine-tune FC6 and FC7), the
    dtype and device of the network, and the grid's scales (the paper's nine by default)."""

    layer: str = "fc7"
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    scales: tuple[float, ...] = PAPER_SCALES
    mode: str = "per_patch"  # or "shared" (features.shared): PatchFeatureExtractor's mode
    grid: str = "paper"  # or "aligned": steps of whole cells (features.grids.aligned_grid)

    def header(self, weights_sha256: str) -> dict:
        """The header fields a stored file must match to be reused, as `cnnxfer extract`
        writes them: the network by its contents (nets.weights.fingerprint), and the grid only
        when it is not the paper's, which extract always uses."""
        header = {"layer": self.layer, "weights_sha256": weights_sha256,
                  "dtype": DTYPE_NAMES[self.dtype], "conv_pooling": "flatten"}
        if tuple(self.scales) != PAPER_SCALES:
            header["grid"] = list(self.scales)
        if self.mode != "per_patch":
            header["mode"] = self.mode
        if self.grid != "paper":
            header["grid_name"] = self.grid
        return header


@dataclass
class FeatureFiles:
    """Where each image's features are (by image path), the images that could not be read
    (path -> error), and, for the ones computed here, how many images and patches and the
    time it took."""

    paths: dict[str, FeatureHandle]
    skipped: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    patches: int = 0
    seconds: float = 0.0


def ensure_features(images: Sequence[str | os.PathLike], folder: str | os.PathLike, *,
                    settings: FeatureSettings = FeatureSettings(), net=None,
                    weights: str | None = None, progress: bool = True) -> FeatureFiles:
    """The features file of every image in `folder`, computing those that are missing.

    Args:
        images: image paths; each one's file is folder/<stem>.safetensors (features.files.
            per_image_paths).
        settings: layer, dtype, device and grid of the features.
        net, weights: the network (cnnxfer.nets.AlexNet) and its weights file. A file is reused
            when its header matches settings.header(fingerprint of the weights). Without a
            network, existing files of the right layer are used as they are (callers check the
            network they came from against a head's), and a missing one is an error.
    Returns FeatureFiles; an image that cannot be decoded is reported on stderr, listed in
    `skipped` and left out of `paths` (the others go on).
    """
    from tqdm import tqdm

    folder = Path(folder)
    sources = [str(image) for image in images]
    if (folder / feature_store.SETTINGS).is_file() or (folder / feature_store.MANIFEST).is_file():
        return _from_store(sources, folder, settings, weights if net is not None else None)
    folder.mkdir(parents=True, exist_ok=True)
    paths = feature_files.per_image_paths(sources, folder)
    if net is not None:
        same = settings.header(fingerprint(weights))
        header = dict(same, weights=str(weights))
    else:
        same = header = {"layer": settings.layer}
    missing = [s for s in sources if not feature_files.already_written(paths[s], s, same)]
    result = FeatureFiles({s: paths[s] for s in sources if s not in set(missing)})
    if not missing:
        return result
    if net is None:
        raise FileNotFoundError(
            f"features of layer {settings.layer} are missing in {str(folder)!r} for "
            f"{len(missing)} of {len(sources)} images (first: {missing[0]!r}); give the "
            f"network's weights (--weights) to compute them")
    grid = network_grid(net, settings.grid, scales=settings.scales)
    extractor = PatchFeatureExtractor(net, layer=settings.layer, grid=grid,
                                      device=settings.device, dtype=settings.dtype,
                                      mode=settings.mode)
    bar = tqdm(total=len(missing), unit="image", desc="features", disable=not progress)

    def report(source: str, error: Exception) -> None:
        result.skipped[source] = str(error)
        bar.update(1)
        tqdm.write(f"cnnxfer: skipped {source}: {error}", file=sys.stderr)

    start = time.perf_counter()
    try:
        for features in extractor.extract(missing, on_error=report):
            feature_files.save_features(paths[features.source], [features], **header)
            result.paths[features.source] = paths[features.source]
            result.computed += 1
            result.patches += len(features.boxes)
            bar.update(1)
    finally:
        bar.close()
        result.seconds = time.perf_counter() - start
    # back in the callers' order
    result.paths = {s: result.paths[s] for s in sources if s in result.paths}
    return result


def _from_store(sources: list[str], folder: Path, settings: FeatureSettings,
                weights: str | None) -> FeatureFiles:
    """The images' features in the store `folder`: checked against the settings (and the
    network, when its weights are given); its failures are the skipped images; an image the
    store never saw is an error (a store is not extended: extract another)."""
    reader = feature_store.open(folder)
    stored = reader.settings
    wanted = {"layer": settings.layer, "dtype": DTYPE_NAMES[settings.dtype],
              "conv_pooling": "flatten", "scales": list(settings.scales),
              "mode": settings.mode, "grid": settings.grid}
    have = {"layer": stored.get("layer"), "dtype": stored.get("dtype"),
            "conv_pooling": stored.get("conv_pooling"),
            "scales": list(stored.get("grid", {}).get("scales", [])),
            "mode": stored.get("mode", "per_patch"),
            "grid": stored.get("grid", {}).get("name", "paper")}
    if weights is not None:
        wanted["weights_sha256"] = fingerprint(weights)
        have["weights_sha256"] = stored.get("weights_sha256")
    differ = [key for key in wanted if wanted[key] != have[key]]
    if differ:
        raise ValueError(f"the feature store {str(folder)!r} was made with other settings: "
                         + "; ".join(f"{key}: store has {have[key]!r}, asked {wanted[key]!r}"
                                     for key in differ))
    # ids are the paths as the extraction was given them: match them as given, else resolved
    # (relative ids from the folder the extraction ran in)
    base = stored.get("cwd", os.getcwd())

    def real(path: str) -> str:
        return os.path.realpath(os.path.join(base, path))

    known = {image_id: image_id for image_id in reader.ids()}
    resolved = {real(image_id): image_id for image_id in known}
    failed = {real(f["id"]): f["reason"] for f in reader.failures()}
    result, missing = FeatureFiles({}), []
    for source in sources:
        image_id = known.get(source) or resolved.get(os.path.realpath(source))
        if image_id is not None:
            result.paths[source] = StoredImage(reader, image_id)
        elif os.path.realpath(source) in failed:
            result.skipped[source] = failed[os.path.realpath(source)]
        else:
            missing.append(source)
    if missing:
        raise FileNotFoundError(
            f"the feature store {str(folder)!r} has no features for {len(missing)} of "
            f"{len(sources)} images (first: {missing[0]!r}); extract them into a store that "
            f"holds them all (cnnxfer extract --list FILE --store DIR)")
    return result
