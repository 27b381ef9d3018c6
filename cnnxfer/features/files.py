"""Feature files: the patch features of a set of images in one file, safetensors or .npz.

A folder of per-image files (`per_image_paths`) suits datasets: each image is written as soon
as it is done, and a rerun skips the images whose file is already there.

Layout (the same keys in both formats), for the i-th image written (0, 1, ...):
    features/{i}   [K_i, D] features (safetensors keeps bf16; .npz stores float32, as NumPy has
                   no bfloat16)
    boxes/{i}      [K_i, 4] int64 (x0, y0, x1, y1) in pixels of the upright decoded image
and a JSON header: {"sources": [name of image i, ...], "skipped": [{"source", "error"}, ...],
plus whatever the writer adds (layer, weights, dtype)}; in safetensors metadata under
"cnnxfer.features", in .npz as the array "header" (a JSON string).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .extractor import ImageFeatures

_HEADER_KEY = "cnnxfer.features"
SUFFIXES = (".safetensors", ".npz")


def check_path(path: str | os.PathLike) -> Path:
    """The output path, checked before any work is done: a known suffix, an existing folder."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"output must end in .safetensors or .npz, got {str(path)!r}")
    if not path.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {str(path.parent)!r}")
    return path


def save_features(path: str | os.PathLike, results: list[ImageFeatures], *,
                  skipped: list[dict] | None = None, **header) -> None:
    """Writes results (and the skipped images' reports) to `path` (.safetensors or .npz)."""
    path = check_path(path)
    header = {**header, "sources": [r.source for r in results], "skipped": skipped or []}
    tensors = {}
    for index, result in enumerate(results):
        tensors[f"features/{index}"] = result.features.detach().cpu().contiguous()
        tensors[f"boxes/{index}"] = result.boxes.detach().cpu().to(torch.int64).contiguous()
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path), metadata={_HEADER_KEY: json.dumps(header)})
    else:
        arrays = {k: (v.float() if v.dtype in (torch.bfloat16, torch.float16) else v).numpy()
                  for k, v in tensors.items()}
        with open(path, "wb") as handle:  # np.savez would append .npz to other names
            np.savez(handle, header=np.array(json.dumps(header)), **arrays)


def load_features(path: str | os.PathLike) -> tuple[list[ImageFeatures], dict]:
    """Reads a file written by save_features: (results in order, header)."""
    path = check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {str(path)!r}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = (handle.metadata() or {}).get(_HEADER_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    else:
        with np.load(path) as archive:
            header = str(archive["header"]) if "header" in archive.files else None
            tensors = {k: torch.from_numpy(archive[k]) for k in archive.files if k != "header"}
    if header is None:
        raise ValueError(f"{str(path)!r} is not a cnnxfer features file (no header); expected "
                         f"a file written by `cnnxfer extract` or cnnxfer.features.save_features")
    header = json.loads(header)
    results = [ImageFeatures(source, tensors[f"features/{i}"], tensors[f"boxes/{i}"])
               for i, source in enumerate(header["sources"])]
    return results, header


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a features file, without reading its tensors (safetensors only;
    .npz files are read whole)."""
    path = check_path(path)
    if path.suffix.lower() != ".safetensors":
        return load_features(path)[1]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        header = (handle.metadata() or {}).get(_HEADER_KEY)
    if header is None:
        raise ValueError(f"{str(path)!r} is not a cnnxfer features file (no header)")
    return json.loads(header)


def load_boxes(path: str | os.PathLike) -> list[torch.Tensor]:
    """The boxes [K_i, 4] int64 of every image in a features file, without its features."""
    path = check_path(path)
    if path.suffix.lower() != ".safetensors":
        return [r.boxes for r in load_features(path)[0]]
    from safetensors import safe_open

    header = read_header(path)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return [handle.get_tensor(f"boxes/{i}") for i in range(len(header["sources"]))]


def feature_size(path: str | os.PathLike) -> int:
    """D, the length of the feature vectors in a features file, without reading them."""
    path = check_path(path)
    if path.suffix.lower() != ".safetensors":
        return int(load_features(path)[0][0].features.shape[1])
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return int(handle.get_slice("features/0").get_shape()[1])


def per_image_paths(sources: list[str], folder: str | os.PathLike) -> dict[str, Path]:
    """One `<stem>.safetensors` in `folder` per source (`<stem>-1`, `-2`, ... where stems
    repeat), the same for the same list every time, so a rerun finds what an earlier one wrote."""
    folder, taken, paths = Path(folder), set(), {}
    for source in sources:
        if source in paths:
            continue
        stem, name, count = Path(source).stem or "image", None, 0
        while name is None or name in taken:
            name = f"{stem}-{count}" if count else stem
            count += 1
        taken.add(name)
        paths[source] = folder / f"{name}.safetensors"
    return paths


def already_written(path: Path, source: str, header: dict) -> bool:
    """Whether `path` holds this source's features made with the same settings (layer, weights,
    dtype, conv_pooling): then a rerun can skip it."""
    if not path.is_file():
        return False
    try:
        # The header alone (safetensors checks that the file holds every byte it declares, so
        # a half-written file fails here): a dataset's features are not read just to skip them.
        stored = read_header(path)
    except Exception:  # a half-written or foreign file: extract again and overwrite it
        return False
    return (stored.get("sources") == [source]
            and all(stored.get(key) == value for key, value in header.items()))
