"""Training the adaptation layers: is it bound by its inputs, not by Python?

Cases, each timed in the same run as its floor:
  head fwd+bwd   the head's forward and backward alone (what the speed target is about).
  head step      one SGD step of cnnxfer's training loop (transfer.training.training_step:
                 FCa 4096->2048 + ReLU + dropout, FCb 2048->21, class-weighted cross-entropy,
                 backward, fused SGD with momentum and weight decay) on a batch of fp32 FC7
                 features.
                 floor: the step's two big GEMMs alone (FCa's forward [B,4096]x[4096,2048] and
                 its weight gradient [2048,B]x[B,4096]) on preallocated outputs: the machine's
                 GEMM rate for those shapes. eager / compile: the same head as a plain
                 nn.Sequential with torch.optim.SGD's default implementation, eager and under
                 torch.compile.
  shard read     one epoch's reading of the training shards (transfer.patch_data.ShardStream, its
                 buffers kept from the warm-up round as training keeps them between epochs) from
                 a cold page cache (the files are evicted with posix_fadvise before each round).
                 floor: a sequential read of the same files, evicted the same way, into one
                 reused buffer: the disk's sequential read speed in the same run.
  feature files  the per-image feature files read cold the way the shards are made from them
                 (features.load_features), against the same sequential read.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cold_read import HAS_FADVISE, evict, sequential_read
from torch import nn

from cnnxfer.transfer import AdaptationHead, TrainConfig
from cnnxfer.transfer.patch_data import Shards, ShardStream
from cnnxfer.transfer.training import class_weights, make_optimizer, training_step

D, HIDDEN, CLASSES = 4096, 2048, 20
BATCHES = (256, 1024)


def _features(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(batch, D, generator=g))  # FC7 activations are post-ReLU
    y = torch.randint(0, CLASSES + 1, (batch,), generator=g)
    return x, y


def _gemm_floor(x, batch):
    """FCa's forward GEMM and its weight gradient alone, on preallocated outputs."""
    w = torch.randn(HIDDEN, D) * 0.01
    g = torch.randn(batch, HIDDEN)
    h, grad = torch.empty(batch, HIDDEN), torch.empty(HIDDEN, D)

    def fn():
        torch.mm(x, w.t(), out=h)
        torch.mm(g.t(), x, out=grad)
    return fn


@pytest.mark.parametrize("provider", ("cnnxfer", "floor"))
@pytest.mark.parametrize("batch", BATCHES)
def test_head_forward_backward(benchmark, record, batch, provider):
    """The head's forward and backward alone (the optimizer step is the next case's)."""
    x, y = _features(batch)
    weights = class_weights(torch.bincount(y, minlength=CLASSES + 1).tolist(), "loss")
    case = f"head fwd+bwd fp32 B={batch} {D}->{HIDDEN}->{CLASSES + 1}"
    if provider == "floor":
        record(case, provider, benchmark, _gemm_floor(x, batch))
        return
    torch.manual_seed(0)
    head = AdaptationHead(D, [f"c{i}" for i in range(CLASSES)], hidden=HIDDEN).train()

    def fn():
        head.zero_grad(set_to_none=True)
        F.cross_entropy(head(x), y, weight=weights).backward()
    record(case, provider, benchmark, fn)


@pytest.mark.parametrize("provider", ("cnnxfer", "floor", "eager", "compile"))
@pytest.mark.parametrize("batch", BATCHES)
def test_head_step(benchmark, record, note, batch, provider):
    x, y = _features(batch)
    weights = class_weights(torch.bincount(y, minlength=CLASSES + 1).tolist(), "loss")
    case = f"head step fp32 B={batch} {D}->{HIDDEN}->{CLASSES + 1}"
    if provider == "cnnxfer":
        torch.manual_seed(0)
        head = AdaptationHead(D, [f"c{i}" for i in range(CLASSES)], hidden=HIDDEN)
        head.train()
        optimizer = make_optimizer(head.parameters(), TrainConfig())
        fn = lambda: training_step(head, optimizer, x, y, weights)
        flops = 2 * 2 * batch * D * HIDDEN  # the two big GEMMs
        record(case, provider, benchmark, fn)
        note(f"{case}: {flops / benchmark.stats.stats.median / 1e9:.1f} GFLOP/s in its GEMMs")
        return
    if provider == "floor":
        record(case, provider, benchmark, _gemm_floor(x, batch))
        return
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, HIDDEN), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(HIDDEN, CLASSES + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    forward = torch.compile(model) if provider == "compile" else model

    def fn():
        loss = F.cross_entropy(forward(x), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    record(case, provider, benchmark, fn)


@pytest.fixture(scope="module")
def shard_files():
    """Three shards of 8192 fp32 FC7 rows (128 MiB each) in a temporary folder."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(dir=os.environ.get("CNNXFER_BENCH_DIR")) as folder:
        paths = []
        for index in range(3):
            x, y = _features(8192, seed=index)
            path = Path(folder) / f"train-{index:05d}.safetensors"
            save_file({"features": x, "labels": y}, str(path))
            paths.append(path)
        os.sync()  # dirty pages cannot be evicted: write them back first
        yield Shards(paths, [8192] * 3, D, [0] * (CLASSES + 1))


@pytest.fixture(scope="module")
def image_files():
    """48 per-image feature files of 496 fp32 FC7 rows (8 MiB each), as `cnnxfer extract`
    writes them."""
    from cnnxfer.features import ImageFeatures, save_features

    with tempfile.TemporaryDirectory(dir=os.environ.get("CNNXFER_BENCH_DIR")) as folder:
        paths = []
        for index in range(48):
            x, _ = _features(496, seed=index)
            path = Path(folder) / f"{index:06d}.safetensors"
            save_features(path, [ImageFeatures(path.stem, x, torch.zeros(496, 4,
                                                                          dtype=torch.int64))])
            paths.append(path)
        os.sync()
        yield paths


@pytest.mark.skipif(not HAS_FADVISE, reason="needs posix_fadvise")
@pytest.mark.parametrize("provider", ("cnnxfer", "floor"))
def test_shard_read_cold(benchmark, record, note, shard_files, provider):
    case = "shard read, cold page cache, 3 x 128 MiB"
    size = sum(p.stat().st_size for p in shard_files.paths)
    if provider == "cnnxfer":
        stream = ShardStream(shard_files)  # as training keeps it from epoch to epoch

        def fn():
            evict(shard_files.paths)
            rows = 0
            for x, _ in stream.batches(256, seed=0):
                rows += x.shape[0]
            assert rows == shard_files.total
    else:
        fn = sequential_read(shard_files.paths)
    record(case, provider, benchmark, fn)
    note(f"{case} ({provider}): {size / benchmark.stats.stats.median / 1e9:.2f} GB/s")


@pytest.mark.skipif(not HAS_FADVISE, reason="needs posix_fadvise")
@pytest.mark.parametrize("provider", ("cnnxfer", "floor"))
def test_feature_files_read_cold(benchmark, record, note, image_files, provider):
    """How write_shards reads the per-image files (features.load_features), cold."""
    from cnnxfer.features import load_features

    case = "feature files read, cold page cache, 48 x 8 MiB"
    size = sum(p.stat().st_size for p in image_files)
    if provider == "cnnxfer":
        def fn():
            evict(image_files)
            for path in image_files:
                load_features(path)
    else:
        fn = sequential_read(image_files)
    record(case, provider, benchmark, fn)
    note(f"{case} ({provider}): {size / benchmark.stats.stats.median / 1e9:.2f} GB/s")
