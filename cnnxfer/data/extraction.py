"""Dataset-scale extraction into a feature store (cnnxfer.data.store): decoding in background
workers, failures recorded while the run goes on, resume after a crash, many processes.

    extractor = PatchFeatureExtractor(net, layer="fc7")
    summary = extract_to_store(paths, "feats", extractor, weights="alexnet.safetensors")

The image list is cut into chunks of `images_per_shard` consecutive entries; each chunk becomes
one shard, run through the extractor on its own (so its patches are batched the same way in
every run, and a resumed or parallel run gives the same bits as an uninterrupted one). Under
torchrun each process takes a contiguous, unpadded block of the chunks; once every process is
done (a barrier), process 0 writes failures.jsonl and the manifest.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..features import images as image_io
from ..features.extractor import PatchFeatureExtractor
from ..nets import weights as weight_files
from . import store

SHARD_BYTES = 256 << 20     # a shard's size when images_per_shard is not given
BARRIER_TIMEOUT = datetime.timedelta(days=7)
PATCHES_PER_IMAGE = 500     # what the paper's grid gives a VOC-sized image, to size shards


def read_list(path: str | os.PathLike) -> list[str]:
    """The image paths of a list file: one per line, blank lines skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise OSError(f"cannot read the image list {str(path)!r}: {error}") from None
    return [line.strip() for line in lines if line.strip()]


def check_images(images: Sequence[str]) -> list[str]:
    """The list as strings, refusing an empty list and repeated paths (an image's id is its
    path, and ids must be unique)."""
    images = [str(image) for image in images]
    if not images:
        raise ValueError("images: expected at least one image path, got none")
    first: dict[str, int] = {}
    for position, image in enumerate(images):
        if image in first:
            raise ValueError(f"images: {image!r} is listed twice (entries {first[image]} and "
                             f"{position}); each image must appear once")
        first[image] = position
    return images


def default_images_per_shard(feature_size: int, dtype: torch.dtype) -> int:
    """About SHARD_BYTES of features per shard for VOC-sized images: big enough to read at
    the disk's speed, small enough to hold while it is written."""
    per_image = PATCHES_PER_IMAGE * feature_size * torch.empty((), dtype=dtype).element_size()
    return max(1, SHARD_BYTES // per_image)


def store_settings(extractor: PatchFeatureExtractor, images: Sequence[str], *, weights: str,
                   weights_sha256: str, grid: dict, images_per_shard: int,
                   min_image_side: int, max_image_pixels: int | None) -> dict:
    """What a store's features depend on; a resume must match it (except `weights`, the path
    the network was given as)."""
    listing = hashlib.sha256("\n".join(images).encode()).hexdigest()
    return {"format": store.FORMAT, "version": store.VERSION, "weights": str(weights),
            "cwd": os.getcwd(),
            "weights_sha256": weights_sha256, "network": extractor.net.arch.name,
            "layer": extractor.layer, "dtype": str(extractor.dtype).removeprefix("torch."),
            "conv_pooling": extractor.conv_pooling, "mode": extractor.mode, "grid": grid,
            "preprocessing": extractor.net.preprocessing.to_dict(),
            "feature_size": extractor.feature_size(), "images": len(images),
            "images_sha256": listing, "images_per_shard": images_per_shard,
            "min_image_side": min_image_side, "max_image_pixels": max_image_pixels}


class _Decode(torch.utils.data.Dataset):
    """Item i: (position in the list, path, uint8 [3, H, W] or None, failure reason or None).
    Runs in the DataLoader's workers: decoding never waits for the network."""

    def __init__(self, images: Sequence[str], positions: Sequence[int], min_image_side: int):
        self.images, self.positions, self.min_side = images, positions, min_image_side

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int):
        position = self.positions[item]
        path = self.images[position]
        try:
            pixels = image_io.load_image(path)
        except Exception as error:  # noqa: BLE001 - any failure to decode one file is that
            # file's failure (Pillow raises many kinds on corrupt data); it is recorded and
            # the run goes on
            reason = str(error) if isinstance(error, (OSError, ValueError)) else (
                f"cannot decode image {path!r}: {type(error).__name__}: {error}")
            return position, path, None, reason
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if min(height, width) < self.min_side:
            return position, path, None, (f"image is {width}x{height}: smaller than the grid "
                                          f"allows (short side < {self.min_side} px)")
        return position, path, pixels, None


def _same(item):
    return item


def _limit_pixels(max_image_pixels: int | None, _worker: int = 0) -> None:
    """Pillow's decompression-bomb limit, in each decoding process (a worker started by spawn
    or forkserver does not inherit the parent's setting)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_image_pixels


def decoded_images(images: Sequence[str], positions: Sequence[int], *, workers: int,
                   in_flight: int, min_image_side: int, max_image_pixels: int | None):
    """An iterator over (position, path, pixels or None, reason or None) in `positions`'
    order, decoded by `workers` background processes with at most about `in_flight` images
    decoded ahead (0 workers: decoded here, one at a time)."""
    dataset = _Decode(images, positions, min_image_side)
    init = functools.partial(_limit_pixels, max_image_pixels)
    if workers == 0:
        init()
        return (dataset[item] for item in range(len(dataset)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_same,
        prefetch_factor=max(1, -(-in_flight // workers)), worker_init_fn=init,
        persistent_workers=False)
    return iter(loader)


@contextlib.contextmanager
def process_group(device: str):
    """(rank, world size, local rank) of this process: under torchrun (WORLD_SIZE > 1) a
    process group is set up for the run (gloo on CPUs, NCCL on GPUs) and torn down after."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1, 0
        return
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
    # Blocks of chunks are fixed, so on a resume one process may wait at the final barrier for
    # another's whole remaining block: far longer than torch's default 10-30 minutes.
    dist.init_process_group("nccl" if cuda else "gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield rank, world, local
    finally:
        dist.destroy_process_group()


def _barrier(world: int, device: str) -> None:
    if world > 1:
        import torch.distributed as dist

        if str(device).startswith("cuda"):
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def my_chunks(chunks: int, rank: int, world: int) -> range:
    """This process's contiguous block of chunks: the first `chunks % world` processes take
    one more; no chunk is given twice or left out, none is padded."""
    base, extra = divmod(chunks, world)
    begin = rank * base + min(rank, extra)
    return range(begin, begin + base + (1 if rank < extra else 0))


def extract_to_store(images: Sequence[str], folder: str | os.PathLike,
                     extractor: PatchFeatureExtractor, *, weights: str | os.PathLike,
                     grid: dict, images_per_shard: int | None = None, workers: int = 2,
                     in_flight: int = 8, min_image_side: int = 16,
                     max_image_pixels: int | None = None, rank: int = 0, world: int = 1,
                     progress: bool = True,
                     on_failure: Callable[[dict], None] | None = None) -> dict:
    """Extracts the features of `images` (paths; their ids in the store) into the store
    `folder`, resuming whatever an earlier run of the same settings finished.

    Args:
        grid: a description of `extractor.grid` for the settings (e.g. {"name": "paper",
            "scales": [...], "overlap": 0.65}): part of what a resume must match.
        images_per_shard: images per shard (default: about 256 MiB of features each).
        workers, in_flight: decoding processes and images decoded ahead (memory: about
            in_flight decoded images, plus one shard's features, plus the extractor's batch).
        min_image_side: images whose short side is below this many pixels are failures.
        max_image_pixels: Pillow's decompression-bomb limit (None: Pillow's own).
        rank, world: this process among `world` (see process_group).
        on_failure: called with {"index", "id", "reason"} as each failure happens.
    Returns:
        {"images", "patches", "failures" (this process's, this run), "resumed" (images in
        chunks an earlier run finished), "seconds", "manifest" (process 0: the manifest)}.
    """
    from PIL import Image
    from tqdm import tqdm

    images = check_images(images)
    folder = Path(folder)
    for name, value, least in (("workers", workers, 0), ("in_flight", in_flight, 1),
                               ("min_image_side", min_image_side, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    per_shard = images_per_shard or default_images_per_shard(extractor.feature_size(),
                                                             extractor.dtype)
    if not isinstance(per_shard, int) or per_shard < 1:
        raise ValueError(f"images_per_shard must be a positive int, got {images_per_shard!r}")
    pillow_limit = Image.MAX_IMAGE_PIXELS  # set for decoding, put back when done
    limit = max_image_pixels if max_image_pixels is not None else pillow_limit
    settings = store_settings(extractor, images, weights=str(weights),
                              weights_sha256=weight_files.fingerprint(weights), grid=grid,
                              images_per_shard=per_shard, min_image_side=min_image_side,
                              max_image_pixels=limit)
    # process 0 alone creates the store (and clears a dead run's unfinished files, while no
    # process writes); the others check it once it is there
    if rank == 0:
        store.check_settings(folder, settings)
        store.remove_incoming(folder)
    _barrier(world, str(extractor.device))
    if rank != 0:
        store.check_settings(folder, settings)
    chunks = store.chunk_count(len(images), per_shard)
    done = store.finished_chunks(folder)
    mine = my_chunks(chunks, rank, world)
    todo = [chunk for chunk in mine if chunk not in done]
    resumed = sum(done[chunk]["images"] + done[chunk]["failures"] for chunk in mine
                  if chunk in done)

    def span(chunk: int) -> range:
        return range(chunk * per_shard, min(len(images), (chunk + 1) * per_shard))

    positions = [position for chunk in todo for position in span(chunk)]
    stream = decoded_images(images, positions, workers=workers, in_flight=in_flight,
                            min_image_side=min_image_side, max_image_pixels=limit)
    start = time.perf_counter()
    count, patches, failed = 0, 0, []
    bar = tqdm(total=len(positions), unit="image", disable=not progress or rank != 0,
               desc=f"extract ({world} processes)" if world > 1 else "extract")
    live = folder / store.FAILURES
    incoming = store.incoming_folder(folder)

    def fail(position: int, reason: str, chunk_failures: list) -> None:
        record = {"index": position, "id": images[position], "reason": reason}
        chunk_failures.append(record)
        failed.append(record)
        # one write(2) per line on an O_APPEND file: lines of several processes never mix
        handle = os.open(live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(handle, (json.dumps(record) + "\n").encode())
        finally:
            os.close(handle)
        if on_failure is not None:
            on_failure(record)
        bar.update(1)

    try:
        for chunk in todo:
            chunk_failures, results = [], []
            where = {images[position]: position for position in span(chunk)}

            def decoded(chunk=chunk, chunk_failures=chunk_failures):
                for _ in span(chunk):
                    position, path, pixels, reason = next(stream)
                    if reason is not None:
                        fail(position, reason, chunk_failures)
                    else:
                        yield image_io.Decoded(path, pixels)

            def refused(name: str, error: Exception, chunk_failures=chunk_failures,
                        where=where) -> None:
                fail(where[name], str(error), chunk_failures)

            for result in extractor.extract(decoded(), on_error=refused):
                # off the GPU as it comes: a chunk waits for its shard in host memory
                result = result._replace(features=result.features.cpu())
                results.append((where[result.source], result))
                patches += len(result.boxes)
                count += 1
                bar.update(1)
                bar.set_postfix_str(
                    f"{patches / max(time.perf_counter() - start, 1e-9):.0f} patches/s",
                    refresh=False)
            chunk_failures.sort(key=lambda record: record["index"])
            store.write_shard(folder, chunk, results, chunk_failures,
                              feature_size=extractor.feature_size(), dtype=extractor.dtype,
                              incoming=incoming)
    finally:
        bar.close()
        Image.MAX_IMAGE_PIXELS = pillow_limit
        shutil.rmtree(incoming, ignore_errors=True)
    seconds = time.perf_counter() - start
    _barrier(world, str(extractor.device))
    manifest = store.finish(folder, settings, chunks) if rank == 0 else None
    # nobody leaves before the manifest is written: torchrun stops every process as soon as
    # one exits, and must not stop process 0 in the middle of it
    _barrier(world, str(extractor.device))
    return {"images": count, "patches": patches, "failures": failed, "resumed": resumed,
            "seconds": seconds, "manifest": manifest}
