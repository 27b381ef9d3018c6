"""The feature store at dataset scale: does extraction keep the engine busy, and does reading
the store back run at the disk's speed?

Cases, each timed in the same run as its floor:
  store extraction  `cnnxfer extract --store`'s path (data.extraction.extract_to_store): JPEG
                    files decoded by a background worker, patches, AlexNet FC7 (bf16 where the
                    CPU has AVX-512 BF16, else fp32), shards written and fsynced, manifest.
                    floor: the engine alone on the same images, already decoded in memory
                    (PatchFeatureExtractor.extract on uint8 tensors, nothing written): the
                    target is floor frac >= 0.85 (decoding and writing hidden behind compute).
  store read        every image's features of a store read from a cold page cache (shards
                    evicted with posix_fadvise before each round) and copied into a reused
                    buffer, as training copies its rows: StoreReader iteration (memory-mapped).
                    floor: a sequential read() of the same files, evicted the same way: the
                    disk's sequential speed in the same run. Target: floor frac >= 0.80.
The network of the extraction case is AlexNet's layout at full width with random weights (the
speed does not depend on the values); CNNXFER_BENCH_DIR puts the files on another disk.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cold_read import HAS_FADVISE, evict, sequential_read
from PIL import Image

from cnnxfer import PatchFeatureExtractor
from cnnxfer.data import extraction, store
from cnnxfer.features.extractor import ImageFeatures
from cnnxfer.features.grids import DEFAULT_OVERLAP, PAPER_SCALES
from cnnxfer.features.images import load_image
from cnnxfer.nets import alexnet, weights
from cnnxfer.ops import compute_dtype

IMAGES = 6          # 500x375 JPEGs, ~496 patches each
D = 4096


def _bf16_native() -> bool:
    return compute_dtype(torch.bfloat16, torch.device("cpu")) == torch.bfloat16


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(dir=os.environ.get("CNNXFER_BENCH_DIR")) as name:
        yield Path(name)


@pytest.fixture(scope="module")
def jpegs(folder):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(IMAGES):
        coarse = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # smooth, like a photo
        path = folder / f"photo{index:03d}.jpg"
        Image.fromarray(coarse).resize((500, 375), Image.BILINEAR).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def network(folder):
    path = folder / "alexnet.safetensors"
    weights.save(alexnet("alexnet", seed=0), path)
    return path


@pytest.mark.parametrize("provider", ("cnnxfer", "floor"))
def test_store_extraction(benchmark, record, note, jpegs, network, folder, provider):
    dtype = torch.bfloat16 if _bf16_native() else torch.float32
    extractor = PatchFeatureExtractor(weights.load(network), layer="fc7", dtype=dtype)
    case = (f"store extraction, {IMAGES} JPEGs 500x375, AlexNet fc7 "
            f"{'bf16' if dtype == torch.bfloat16 else 'fp32'}")
    if provider == "cnnxfer":
        target = folder / "store"

        def fn():
            shutil.rmtree(target, ignore_errors=True)
            extraction.extract_to_store(
                jpegs, target, extractor, weights=network,
                grid={"name": "paper", "scales": list(PAPER_SCALES),
                      "overlap": DEFAULT_OVERLAP}, workers=1, in_flight=4, progress=False)
    else:
        decoded = [load_image(path) for path in jpegs]

        def fn():
            for _ in extractor.extract(decoded):
                pass
    record(case, provider, benchmark, fn)
    patches = IMAGES * 496
    note(f"{case} ({provider}): {patches / benchmark.stats.stats.median:.0f} patches/s")


@pytest.fixture(scope="module")
def stored(folder):
    """A finished store of 3 shards x 16 images x 496 fp32 rows of 4096 (124 MiB a shard),
    written through the store's own writer."""
    target = folder / "read-store"
    settings = {"format": store.FORMAT, "version": store.VERSION, "feature_size": D,
                "layer": "fc7", "dtype": "float32"}
    store.check_settings(target, settings)
    g = torch.Generator().manual_seed(0)
    for chunk in range(3):
        images = [(chunk * 16 + i, ImageFeatures(
            f"img{chunk * 16 + i:04d}.jpg", torch.relu(torch.randn(496, D, generator=g)),
            torch.zeros(496, 4, dtype=torch.int64))) for i in range(16)]
        store.write_shard(target, chunk, images, [], feature_size=D, dtype=torch.float32)
    store.finish(target, settings, 3)
    os.sync()  # dirty pages cannot be evicted: write them back first
    return target


@pytest.mark.skipif(not HAS_FADVISE, reason="needs posix_fadvise")
@pytest.mark.parametrize("provider", ("cnnxfer", "floor"))
def test_store_read_cold(benchmark, record, note, stored, provider):
    paths = sorted((stored / store.SHARDS).glob("*.safetensors"))
    size = sum(p.stat().st_size for p in paths)
    case = f"store read, cold page cache, 3 x {paths[0].stat().st_size >> 20} MiB"
    if provider == "cnnxfer":
        buffer = torch.empty(496, D)

        def fn():
            evict(paths)
            rows = 0
            for image in store.open(stored):
                buffer[:len(image.features)].copy_(image.features)
                rows += len(image.features)
            assert rows == 3 * 16 * 496
    else:
        fn = sequential_read(paths)
    record(case, provider, benchmark, fn)
    note(f"{case} ({provider}): {size / benchmark.stats.stats.median / 1e9:.2f} GB/s")
