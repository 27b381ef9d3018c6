"""The feature store: a dataset's patch features on disk, crash-safe, read back memory-mapped.

    store = cnnxfer.store.open("feats")          # a folder written by `cnnxfer extract --store`
    len(store), store.ids()[:3]                  # images, their ids (the paths as given) in order
    features, boxes = store["photos/001.jpg"]    # [K, D] (the store's dtype), [K, 4] int64
    for image in store:                          # ImageFeatures(source, features, boxes), in order
        ...

Layout of a store folder:
    settings.json      what the features were made with (network fingerprint, layer, dtype, grid,
                       preprocessing, the image list's fingerprint, images per shard); written
                       first, so that a resumed or parallel run can be checked against it
    shards/shard-NNNNNN.safetensors
                       the images of chunk NNNNNN of the list (images_per_shard consecutive
                       entries, failures left out): tensors "features" [P, D], "boxes" [P, 4]
                       int64, "offsets" [n + 1] int64 (image i's rows are offsets[i]:offsets[i+1]),
                       "index" [n] int64 (positions in the image list); metadata
                       "cnnxfer.store" = {"chunk", "ids", "failures": [{"index", "id", "reason"}]}
    shards/shard-NNNNNN.json
                       the shard's record (images, patches, failures, bytes, sha256), written
                       after the shard: a shard without its record is not finished
    failures.jsonl     one {"index", "id", "reason"} per image that could not be used
    manifest.json      settings, counts and every shard's record; written last, by one process:
                       a store without it is unfinished and is not read

Every file is written under a temporary name, flushed, fsynced and renamed (then the folder is
fsynced), so a crash at any moment leaves either the old state or the new one, never a partial
file under a real name. Chunks are fixed by the image list, not by who computes them: the same
list gives the same shards, whether in one run, a resumed one, or many processes.

Why safetensors: a documented, well-kept format whose header is JSON and whose tensors are raw
little-endian arrays at known offsets, so a reader can memory-map them without a copy (and read
them from any language). An image's rows are found through `offsets` without parsing anything
else.
"""
from __future__ import annotations

import builtins
import collections
import hashlib
import json
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..features.extractor import ImageFeatures

FORMAT, VERSION = "cnnxfer-store", 1
SETTINGS, MANIFEST, FAILURES, SHARDS = "settings.json", "manifest.json", "failures.jsonl", "shards"
# in-progress files, one folder per writing process: a dead run's are removed by the next run
INCOMING = ".incoming"
_METADATA_KEY = "cnnxfer.store"
# settings that describe a run but do not change its features: not compared on a resume
# ("cwd": where relative image paths were read from, to find them again)
INFORMATIONAL = ("weights", "cwd")
_DTYPES = {"F32": (np.float32, None), "F16": (np.float16, None),
           "BF16": (np.uint16, torch.bfloat16), "F64": (np.float64, None),
           "I64": (np.int64, None)}


class StoreError(ValueError):
    """A store folder that cannot be used as asked; the message names the folder and what is
    wrong."""


def shard_name(chunk: int) -> str:
    return f"shard-{chunk:06d}.safetensors"


def record_name(chunk: int) -> str:
    return f"shard-{chunk:06d}.json"


def chunk_count(images: int, images_per_shard: int) -> int:
    return -(-images // images_per_shard)


# ---------------------------------------------------------------------------------------- writing

def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def incoming_folder(folder: str | os.PathLike) -> Path:
    """This process's folder for files being written (unique across hosts and restarts): a
    file appears under its real name only by a rename out of it."""
    import socket
    import uuid

    return Path(folder) / INCOMING / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_incoming(folder: str | os.PathLike) -> None:
    """Deletes every writing process's leftovers (call only when no process is writing)."""
    import shutil

    shutil.rmtree(Path(folder) / INCOMING, ignore_errors=True)


def _temporary(path: Path) -> Path:
    # hidden, and unique per process: two processes never write the same temporary file
    import socket
    import uuid

    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-"
                          f"{uuid.uuid4().hex[:8]}")


def commit(temporary: Path, path: Path) -> None:
    """Makes a fully written temporary file visible under its real name, durably: its bytes
    reach the disk before the rename, and the rename before this returns."""
    with builtins.open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` so that `path` never holds a part of it."""
    temporary = _temporary(path)
    with builtins.open(temporary, "wb") as handle:
        handle.write(data)
    commit(temporary, path)


def write_json(path: Path, value) -> None:
    write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


def file_sha256(path: Path, block: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with builtins.open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_shard(folder: Path, chunk: int, images: Sequence[tuple[int, ImageFeatures]],
                failures: Sequence[dict], *, feature_size: int, dtype: torch.dtype,
                incoming: Path | None = None) -> dict:
    """Writes chunk `chunk`'s shard and then its record; returns the record.

    images: (position in the image list, its features) in list order; failures: {"index",
    "id", "reason"} of the chunk's images that could not be used. incoming: the folder the
    shard is written in before its rename (default: a new incoming_folder)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    shards = Path(folder) / SHARDS
    counts = [int(result.boxes.shape[0]) for _, result in images]
    offsets = torch.zeros(len(images) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0) if counts else offsets[1:]
    features = (torch.cat([r.features.detach().to("cpu", dtype) for _, r in images])
                if images else torch.empty((0, feature_size), dtype=dtype))
    boxes = (torch.cat([r.boxes.to("cpu", torch.int64) for _, r in images])
             if images else torch.empty((0, 4), dtype=torch.int64))
    tensors = {"features": features.contiguous(), "boxes": boxes.contiguous(),
               "offsets": offsets,
               "index": torch.tensor([index for index, _ in images], dtype=torch.int64)}
    metadata = {"chunk": chunk, "ids": [result.source for _, result in images],
                "failures": list(failures)}
    path = shards / shard_name(chunk)
    incoming = incoming or incoming_folder(folder)
    incoming.mkdir(parents=True, exist_ok=True)
    # safetensors writes a temporary of its own beside the target: both stay in `incoming`
    temporary = incoming / path.name
    try:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: json.dumps(metadata)})
    except SafetensorError as error:  # disk full, no permission: an OSError to the caller
        raise OSError(f"cannot write shard {str(temporary)!r}: {error}") from error
    record = {"file": path.name, "chunk": chunk, "images": len(images),
              "patches": int(offsets[-1]), "failures": len(failures),
              "bytes": temporary.stat().st_size, "sha256": file_sha256(temporary)}
    commit(temporary, path)
    write_json(shards / record_name(chunk), {**record, "failed": list(failures)})
    return record


def finished_chunks(folder: str | os.PathLike) -> dict[int, dict]:
    """chunk -> record of every shard that was finished: its record is there and its file has
    the size the record says (checksums are `verify`'s job, not a resume's)."""
    shards, done = Path(folder) / SHARDS, {}
    if not shards.is_dir():
        return done
    for path in shards.glob("shard-*.json"):
        try:
            record = json.loads(path.read_text())
            size = (shards / record["file"]).stat().st_size
        except (OSError, ValueError, KeyError):
            continue  # unreadable or its shard is gone: the chunk is done again
        if size == record["bytes"]:
            done[int(record["chunk"])] = record
    return done


def check_settings(folder: str | os.PathLike, settings: dict) -> None:
    """Records `settings` in a new store folder, or checks them against the folder's: a store
    is only ever extended with features made alike. Raises StoreError naming what differs."""
    folder = Path(folder)
    path = folder / SETTINGS
    settings = json.loads(json.dumps(settings))  # as stored: tuples become lists
    if path.is_file():
        stored = json.loads(path.read_text())
        differ = sorted(key for key in set(stored) | set(settings)
                        if key not in INFORMATIONAL and stored.get(key) != settings.get(key))
        if differ:
            details = "; ".join(f"{key}: store has {stored.get(key)!r}, this run "
                                f"{settings.get(key)!r}" for key in differ)
            raise StoreError(f"store {str(folder)!r} was made with other settings ({details}); "
                             f"use another folder, or the store's settings")
        return
    if folder.exists() and any(p.name not in (SHARDS,) for p in folder.iterdir()
                               if not p.name.startswith(".")):
        raise StoreError(f"store folder {str(folder)!r} is not empty and holds no "
                         f"{SETTINGS}: not a cnnxfer store")
    (folder / SHARDS).mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def finish(folder: str | os.PathLike, settings: dict, chunks: int) -> dict:
    """Writes failures.jsonl and then manifest.json once every chunk's shard is finished;
    returns the manifest. Raises StoreError listing the chunks still missing."""
    folder = Path(folder)
    done = finished_chunks(folder)
    missing = [chunk for chunk in range(chunks) if chunk not in done]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise StoreError(f"store {str(folder)!r} is not finished: {len(missing)} of {chunks} "
                         f"shards missing (chunks {shown}); run the same command again")
    records = [done[chunk] for chunk in range(chunks)]
    failed = [failure for record in records for failure in record.get("failed", [])]
    shards = [{key: value for key, value in record.items() if key != "failed"}
              for record in records]
    manifest = json.loads(json.dumps(
        {"format": FORMAT, "version": VERSION, "settings": settings,
         "images": sum(s["images"] for s in shards), "patches": sum(s["patches"] for s in shards),
         "failures": len(failed), "shards": shards}))
    path = folder / MANIFEST
    if path.is_file() and json.loads(path.read_text()) == manifest:
        return manifest  # finished before: left as it was (its time says when it was made)
    write_atomic(folder / FAILURES, "".join(json.dumps(f) + "\n" for f in failed).encode())
    write_json(path, manifest)
    return manifest


# ---------------------------------------------------------------------------------------- reading

def _read_header(path: Path) -> tuple[dict, int]:
    """(the safetensors JSON header, the offset of its data) without reading the tensors."""
    with builtins.open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise StoreError(f"shard {str(path)!r} is truncated (no header)")
        (size,) = struct.unpack("<Q", head)
        if size > 1 << 30:
            raise StoreError(f"shard {str(path)!r} has a corrupt header (size {size})")
        text = handle.read(size)
    if len(text) != size:
        raise StoreError(f"shard {str(path)!r} is truncated (header)")
    try:
        return json.loads(text), 8 + size
    except ValueError as error:
        raise StoreError(f"shard {str(path)!r} has a corrupt header: {error}") from None


class Shard:
    """One shard's tensors, memory-mapped (copy-on-write: nothing is read until used, and a
    caller that writes into a tensor changes its own copy, never the file)."""

    def __init__(self, path: Path):
        self.path = path
        header, start = _read_header(path)
        metadata = json.loads((header.pop("__metadata__", {}) or {}).get(_METADATA_KEY, "{}"))
        self.ids: list[str] = metadata.get("ids", [])
        self.failures: list[dict] = metadata.get("failures", [])
        size = path.stat().st_size
        # one copy-on-write mapping of the whole file (one descriptor), viewed per tensor
        raw = np.memmap(path, dtype=np.uint8, mode="c") if size else np.empty(0, np.uint8)
        self.tensors = {}
        for name in ("features", "boxes", "offsets", "index"):
            if name not in header:
                raise StoreError(f"shard {str(path)!r} has no {name!r} tensor")
            entry = header[name]
            begin, end = entry["data_offsets"]
            if start + end > size:
                raise StoreError(f"shard {str(path)!r} is truncated ({size} bytes, its header "
                                 f"needs {start + end})")
            self.tensors[name] = _view(path, raw, entry, start + begin, start + end)
        offsets = self.tensors["offsets"]
        if len(offsets) != len(self.ids) + 1 or int(offsets[-1]) != len(self.tensors["boxes"]):
            raise StoreError(f"shard {str(path)!r} is inconsistent: {len(self.ids)} ids, "
                             f"{len(offsets)} offsets, {len(self.tensors['boxes'])} boxes")

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, row: int) -> ImageFeatures:
        begin, end = (int(v) for v in self.tensors["offsets"][row:row + 2])
        return ImageFeatures(self.ids[row], self.tensors["features"][begin:end],
                             self.tensors["boxes"][begin:end])


def _view(path: Path, raw: np.ndarray, entry: dict, begin: int, end: int) -> torch.Tensor:
    if entry["dtype"] not in _DTYPES:
        raise StoreError(f"shard {str(path)!r}: unsupported dtype {entry['dtype']}")
    numpy_dtype, view = _DTYPES[entry["dtype"]]
    shape = tuple(entry["shape"])
    if begin == end:
        array = np.empty(shape, dtype=numpy_dtype)
    else:
        array = raw[begin:end].view(numpy_dtype).reshape(shape)
    tensor = torch.from_numpy(array)
    return tensor.view(view) if view is not None else tensor


class StoreReader:
    """A finished store, read lazily: the manifest when opened, each shard's header when its
    images are first asked for, the features only when touched (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            hint = (" (an extraction was interrupted or is running: run the same command "
                    "again to finish it)" if (self.folder / SETTINGS).is_file() else "")
            raise StoreError(f"{str(self.folder)!r} is not a finished cnnxfer store: no "
                             f"{MANIFEST}{hint}")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise StoreError(f"{str(path)!r} is not a {FORMAT} version {VERSION} manifest")
        self.settings: dict = self.manifest["settings"]
        self._starts = np.cumsum([0] + [s["images"] for s in self.manifest["shards"]])
        self._open: collections.OrderedDict[int, Shard] = collections.OrderedDict()
        self._where: dict[str, tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return (f"StoreReader({str(self.folder)!r}: {len(self)} images, "
                f"{self.manifest['patches']} patches, layer {self.settings.get('layer')}, "
                f"{self.settings.get('dtype')})")

    def __len__(self) -> int:
        return int(self.manifest["images"])

    @property
    def feature_size(self) -> int:
        return int(self.settings["feature_size"])

    def _shard(self, number: int) -> Shard:
        """Shard `number`, kept among the last few opened (each holds one mapping)."""
        if number in self._open:
            self._open.move_to_end(number)
            return self._open[number]
        shard = Shard(self.folder / SHARDS / self.manifest["shards"][number]["file"])
        self._open[number] = shard
        if len(self._open) > 4:
            self._open.popitem(last=False)
        return shard

    def ids(self) -> list[str]:
        """The images' ids (the paths as given to the extraction) in list order."""
        return [image_id for number in range(len(self.manifest["shards"]))
                for image_id in self._shard(number).ids]

    def failures(self) -> list[dict]:
        """{"index", "id", "reason"} of every image that could not be used."""
        path = self.folder / FAILURES
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def __iter__(self) -> Iterator[ImageFeatures]:
        for number in range(len(self.manifest["shards"])):
            shard = Shard(self.folder / SHARDS / self.manifest["shards"][number]["file"])
            for row in range(len(shard)):
                yield shard.image(row)

    def __getitem__(self, key: str | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [K, D], boxes [K, 4]) of an image, by id (a path as given to the
        extraction) or by position in the store."""
        if isinstance(key, os.PathLike):
            key = os.fspath(key)
        if isinstance(key, (int, np.integer)):
            position = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"store position {key} out of range for {len(self)} images")
            number = int(np.searchsorted(self._starts, position, side="right")) - 1
            row = position - int(self._starts[number])
        else:
            if self._where is None:
                self._where = {image_id: (number, row)
                               for number in range(len(self.manifest["shards"]))
                               for row, image_id in enumerate(self._shard(number).ids)}
            if key not in self._where:
                raise KeyError(f"image {key!r} is not in store {str(self.folder)!r}")
            number, row = self._where[key]
        result = self._shard(number).image(row)
        return result.features, result.boxes

    def shard_record(self, key: str) -> dict:
        """The manifest's record (file, sha256, counts) of the shard holding image `key`."""
        self[key]  # builds the index; KeyError for an unknown id
        return self.manifest["shards"][self._where[os.fspath(key)][0]]

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except (KeyError, IndexError):
            return False
        return True


def open(folder: str | os.PathLike) -> StoreReader:
    """A reader of a finished store folder (see the module's docstring). The name shadows the
    builtin inside this module on purpose (cnnxfer.store.open, as io.open): the module itself
    calls builtins.open."""
    return StoreReader(folder)


# ------------------------------------------------------------------------------------ verification

def verify(folder: str | os.PathLike) -> list[str]:
    """Every problem found in a store: missing, truncated or altered shards (checksums against
    the manifest), headers that disagree with the manifest, duplicate ids, stray files. An
    empty list means the store is sound."""
    folder = Path(folder)
    try:
        manifest = StoreReader(folder).manifest
    except (StoreError, OSError, ValueError) as error:
        return [str(error)]
    problems, seen, images, patches = [], {}, 0, 0
    listed = set()
    try:
        records = list(manifest["shards"])
        feature_size = int(manifest["settings"]["feature_size"])
        expected = (int(manifest["images"]), int(manifest["patches"]))
    except (KeyError, TypeError, ValueError) as error:
        return [f"{MANIFEST} is malformed: {type(error).__name__}: {error}"]
    for number, record in enumerate(records):
        try:
            problem = _verify_record(folder, record, feature_size, seen)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problem = [f"shard entry {number} of {MANIFEST} is malformed: "
                       f"{type(error).__name__}: {error}"]
        if isinstance(problem, list):
            problems += problem
            continue
        listed.add(record["file"])
        images += problem[0]
        patches += problem[1]
    if not problems and (images, patches) != expected:
        problems.append(f"the shards hold {images} images / {patches} patches, the manifest "
                        f"says {expected[0]} / {expected[1]}")
    listed |= {r.get("file") for r in records if isinstance(r, dict)}
    for path in sorted((folder / SHARDS).glob("shard-*.safetensors")):
        if path.name not in listed:
            problems.append(f"{path.name}: a shard that the manifest does not list")
    return problems


def _verify_record(folder: Path, record: dict, feature_size: int,
                   seen: dict) -> list[str] | tuple[int, int]:
    """The problems of one shard, or (images, patches) when there are none."""
    path = folder / SHARDS / record["file"]
    problems: list[str] = []
    if not path.is_file():
        return [f"{record['file']}: missing"]
    size = path.stat().st_size
    if size != record["bytes"]:
        return [f"{record['file']}: {size} bytes, the manifest says {record['bytes']} "
                f"(truncated or replaced)"]
    if file_sha256(path) != record["sha256"]:
        return [f"{record['file']}: checksum mismatch (the file was altered after it was "
                f"written)"]
    try:
        shard = Shard(path)
    except (StoreError, OSError, ValueError, KeyError) as error:
        return [f"{record['file']}: {error}"]
    rows = len(shard.tensors["boxes"])
    if len(shard) != record["images"] or rows != record["patches"]:
        problems.append(f"{record['file']}: holds {len(shard)} images / {rows} patches, the "
                        f"manifest says {record['images']} / {record['patches']}")
    if shard.tensors["features"].shape[1:] != (feature_size,):
        problems.append(f"{record['file']}: features of shape "
                        f"{tuple(shard.tensors['features'].shape)}, the store's size is "
                        f"{feature_size}")
    for image_id in shard.ids:
        if image_id in seen:
            problems.append(f"image {image_id!r} is in both {seen[image_id]} and "
                            f"{record['file']}")
        seen[image_id] = record["file"]
    return problems or (len(shard), rows)


# 0.1's `cnnxfer.store` was the feature files module (now cnnxfer.features.files): its
# functions are still found here, with a warning, until 0.3
_FILES_NAMES = ("save_features", "load_features", "read_header", "load_boxes", "feature_size",
                "per_image_paths", "already_written", "check_path", "SUFFIXES")


def __getattr__(name: str):
    if name in _FILES_NAMES:
        import warnings

        from ..features import files

        warnings.warn(f"cnnxfer.store.{name} moved to cnnxfer.features.files.{name}; the old "
                      f"name goes in cnnxfer 0.3", DeprecationWarning, stacklevel=2)
        return getattr(files, name)
    raise AttributeError(f"module 'cnnxfer.data.store' has no attribute {name!r}")
