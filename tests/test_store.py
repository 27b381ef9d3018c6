"""The feature store (cnnxfer.data.store) and dataset extraction into it
(cnnxfer.data.extraction, `cnnxfer extract --store`, `cnnxfer store`): reading back, settings
checks, verification, images as they come, crash safety under SIGKILL, torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnxfer import PatchFeatureExtractor
from cnnxfer.cli import main
from cnnxfer.data import extraction, store
from cnnxfer.features.grids import paper_grid
from cnnxfer.features.images import load_image
from cnnxfer.nets import alexnet, weights

from devices import needs_gpu_engine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("net") / "net.safetensors"
    weights.save(alexnet("alexnet", width=0.125, input_size=64, seed=0), path)
    return path


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random RGB image, uint8 [H, W, 3] (JPEG-friendly)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def _images(folder: Path, count: int, *, bad: tuple[int, ...] = ()) -> list[str]:
    """`count` JPEGs of varied sizes (the ones at positions `bad` are not images)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index:02d}.jpg"
        if index in bad:
            path.write_bytes(b"not an image at all")
        else:
            Image.fromarray(_photo(72 + 8 * (index % 4), 64 + 4 * (index % 3), index)).save(path)
        paths.append(str(path))
    return paths


def _extract(network: Path, images: list[str], folder: Path, *extra: str) -> int:
    return main(["extract", "--weights", str(network), *images, "--store", str(folder),
                 "--quiet", *extra])


def _same_store(a: Path, b: Path) -> None:
    """Two finished stores hold the same images in the same order with the same bits."""
    first, second = store.open(a), store.open(b)
    assert first.ids() == second.ids()
    for one, other in zip(first, second):
        assert one.source == other.source
        assert torch.equal(one.features, other.features) and torch.equal(one.boxes, other.boxes)
    assert first.manifest["shards"] == second.manifest["shards"]  # byte for byte (sha256)
    assert first.failures() == second.failures()


# ------------------------------------------------------------------------------ reading back

def test_store_reads_back_what_the_extractor_computes(network, tmp_path):
    images = _images(tmp_path / "images", 5, bad=(2,))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(images[3:]) + "\n\n")  # --list, blank lines skipped
    folder = tmp_path / "store"
    assert _extract(network, images[:3], folder, "--list", str(listing),
                    "--images-per-shard", "2", "--workers", "2") == 1  # one image failed
    reader = store.open(folder)
    good = [image for index, image in enumerate(images) if index != 2]
    assert len(reader) == 4 and reader.ids() == good
    assert [f["id"] for f in reader.failures()] == [images[2]]
    assert reader.settings["layer"] == "fc7" and reader.feature_size == 512
    assert len(reader.manifest["shards"]) == 3  # chunks of 2 list entries: [0 1] [2 3] [4]
    extractor = PatchFeatureExtractor(weights.load(network))
    for position, image in enumerate(good):
        features, boxes = reader[image]
        expected, expected_boxes = extractor(image)
        assert features.dtype == torch.float32 and features.shape == expected.shape
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(boxes, expected_boxes)
        assert torch.equal(reader[position][0], features) and image in reader
    assert [r.source for r in reader] == good
    assert torch.equal(reader[-1][1], reader[good[-1]][1])
    with pytest.raises(KeyError, match="is not in store"):
        reader["nowhere.jpg"]
    with pytest.raises(IndexError, match="out of range for 4 images"):
        reader[4]
    # the tensors map the file copy-on-write: writing into one never changes the store
    reader[good[0]][0].zero_()
    torch.testing.assert_close(store.open(folder)[good[0]][0], extractor(good[0])[0],
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_store_and_a_conv_layer(network, tmp_path):
    images = _images(tmp_path / "images", 2)
    folder = tmp_path / "store"
    assert _extract(network, images, folder, "--dtype", "bfloat16", "--layer", "conv5",
                    "--conv-pooling", "max", "--workers", "0") == 0
    reader = store.open(folder)
    features, _ = reader[images[1]]
    assert features.dtype == torch.bfloat16 and features.shape[1] == reader.feature_size
    assert store.verify(folder) == []


def test_unfinished_store_and_bad_arguments_are_explained(network, tmp_path, capsys):
    with pytest.raises(store.StoreError, match="not a finished cnnxfer store"):
        store.open(tmp_path)
    images = _images(tmp_path / "images", 2)
    assert main(["extract", "--weights", str(network), "--store", str(tmp_path / "s")]) == 2
    assert "no images" in capsys.readouterr().err
    assert _extract(network, [images[0], images[1], images[0]], tmp_path / "s") == 2
    assert "is listed twice (entries 0 and 2)" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert _extract(network, images, tmp_path / "other") == 2
    assert "not empty and holds no settings.json" in capsys.readouterr().err


def test_a_store_is_only_extended_with_the_same_settings(network, tmp_path, capsys):
    images = _images(tmp_path / "images", 3)
    folder = tmp_path / "store"
    assert _extract(network, images, folder, "--workers", "0") == 0
    capsys.readouterr()
    assert _extract(network, images, folder, "--layer", "fc6") == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and "layer: store has 'fc7', this run 'fc6'" in err
    assert _extract(network, images[:2], folder) == 2
    assert "images: store has 3, this run 2" in capsys.readouterr().err
    # the same settings: nothing to do, the store is unchanged
    before = (folder / store.MANIFEST).read_bytes()
    assert _extract(network, images, folder) == 0
    assert "0 images" in capsys.readouterr().out.split("this run:")[1]
    assert (folder / store.MANIFEST).read_bytes() == before


def test_short_path_and_old_names():
    import cnnxfer

    assert cnnxfer.store is store
    with pytest.warns(DeprecationWarning, match="cnnxfer.features.files.save_features"):
        from cnnxfer.store import save_features  # noqa: F401


# ------------------------------------------------------------------------------ verification

def test_verify_reports_every_damaged_shard(network, tmp_path, capsys):
    images = _images(tmp_path / "images", 8)
    folder = tmp_path / "store"
    assert _extract(network, images, folder, "--images-per-shard", "2", "--workers", "0") == 0
    assert main(["store", "verify", str(folder)]) == 0
    assert "ok (4 shards, 8 images" in capsys.readouterr().out
    shards = folder / store.SHARDS
    flipped = bytearray((shards / store.shard_name(0)).read_bytes())
    flipped[-100] ^= 0x40  # one bit of one feature
    (shards / store.shard_name(0)).write_bytes(bytes(flipped))
    data = (shards / store.shard_name(1)).read_bytes()
    (shards / store.shard_name(1)).write_bytes(data[:len(data) // 2])
    (shards / store.shard_name(2)).unlink()
    (shards / store.shard_name(7)).write_bytes(data)
    problems = store.verify(folder)
    assert len(problems) == 4, problems
    assert "shard-000000.safetensors: checksum mismatch" in problems[0]
    assert "shard-000001.safetensors" in problems[1] and "truncated or replaced" in problems[1]
    assert problems[2] == "shard-000002.safetensors: missing"
    assert "shard-000007.safetensors: a shard that the manifest does not list" in problems[3]
    assert main(["store", "verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "4 problems" in out and "checksum mismatch" in out
    assert main(["store", "info", str(folder)]) == 0
    assert '"layer": "fc7"' in capsys.readouterr().out


# ------------------------------------------------------------------------- images as they come

def _zoo(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(usable images: name -> what they are, broken ones: name -> a word of the reason)."""
    folder.mkdir()
    photo = _photo(48, 40, 1)
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: upright it is 40 wide, 48 high
    image.save(folder / "exif6.jpg", exif=exif)
    image.convert("L").save(folder / "grey.png")
    image.convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.dstack([photo, photo[:, :, :1]])).save(folder / "rgba.png")
    image.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(photo[:, :, 0].astype(np.uint16) * 257).save(folder / "grey16.png")
    image.convert("1").save(folder / "bilevel.png")
    image.save(folder / "good.jpg")
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (folder / "corrupt.jpg").write_bytes(jpeg[:20] + bytes(range(256)) * 4)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are notes, not pixels\n")
    (folder / "folder.jpg").mkdir()
    Image.fromarray(_photo(12, 10, 2)).save(folder / "tiny.png")
    Image.fromarray(_photo(200, 160, 3)).save(folder / "huge.png")
    usable = {"exif6.jpg": "EXIF orientation 6", "grey.png": "L", "palette.png": "P",
              "rgba.png": "RGBA", "cmyk.jpg": "CMYK", "grey16.png": "I;16",
              "bilevel.png": "1", "good.jpg": "RGB"}
    broken = {"truncated.jpg": "truncated", "corrupt.jpg": "cannot decode",
              "empty.jpg": "cannot identify", "notes.jpg": "cannot identify",
              "folder.jpg": "is a folder", "missing.jpg": "not found",
              "tiny.png": "smaller than the grid allows", "huge.png": "MAX_IMAGE_PIXELS"}
    return usable, broken


def test_a_zoo_of_unusual_and_broken_files(network, tmp_path, capsys):
    usable, broken = _zoo(tmp_path / "zoo")
    names = sorted(usable) + sorted(broken)
    images = [str(tmp_path / "zoo" / name) for name in names]
    folder = tmp_path / "store"
    args = ["--max-image-pixels", "20000", "--workers", "2"]
    assert _extract(network, images, folder, *args) == 1  # failures: status 1
    err = capsys.readouterr().err
    assert all(f"failed {tmp_path / 'zoo' / name}" in err for name in broken)
    failures = [json.loads(line) for line in (folder / store.FAILURES).read_text().splitlines()]
    assert [f["id"] for f in failures] == [str(tmp_path / "zoo" / n) for n in sorted(broken)]
    for record in failures:
        assert broken[Path(record["id"]).name] in record["reason"], record
        assert images[record["index"]] == record["id"]
    reader = store.open(folder)
    assert reader.ids() == [str(tmp_path / "zoo" / name) for name in sorted(usable)]
    _, boxes = reader[str(tmp_path / "zoo" / "exif6.jpg")]
    assert torch.equal(boxes, paper_grid(40, 48))  # the grid of the upright image
    assert reader.manifest["failures"] == len(broken)
    # the same command with --allow-failures: the finished store, status 0
    assert _extract(network, images, folder, *args, "--allow-failures") == 0


def test_modes_are_converted_to_rgb_correctly(tmp_path):
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    palette.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    palette.save(tmp_path / "p.png")
    got = load_image(tmp_path / "p.png")
    assert got[:, 0, 0].tolist() == [255, 0, 0] and got[:, 0, 1].tolist() == [0, 255, 0]
    bilevel = Image.new("1", (3, 1))
    bilevel.putdata([0, 1, 0])
    bilevel.save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png")[:, 0, :].tolist() == [[0, 255, 0]] * 3
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(255, 0, 0, 0), (0, 0, 0, 255)])  # cyan, black
    cmyk.save(tmp_path / "c.tiff")
    got = load_image(tmp_path / "c.tiff")
    assert got[:, 0, 0].tolist() == [0, 255, 255] and got[:, 0, 1].tolist() == [0, 0, 0]
    clear = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    clear.putpixel((1, 0), (10, 20, 30, 255))
    clear.save(tmp_path / "a.png")
    got = load_image(tmp_path / "a.png")
    assert got[:, 0, 0].tolist() == [255, 255, 255] and got[:, 0, 1].tolist() == [10, 20, 30]
    la = Image.new("LA", (1, 1), (0, 0))  # grey + alpha, fully clear: white
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[:, 0, 0].tolist() == [255, 255, 255]


# ------------------------------------------------------------------------------ crash safety

_KILLER = r'''
import os, signal, sys
import safetensors.torch
from cnnxfer.data import store
point, nth = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}

def hit():
    calls["n"] += 1
    return calls["n"] == nth

if point == "shard-write":  # half the shard's bytes on disk, under its temporary name
    save = safetensors.torch.save_file
    def save_file(tensors, path, metadata=None):
        save(tensors, path, metadata=metadata)
        if hit():
            os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    safetensors.torch.save_file = save_file
else:  # "record": the shard renamed, its record not yet written; "manifest": all but it
    write_json = store.write_json
    def patched(path, value):
        wanted = path.name == "manifest.json" if point == "manifest" else \
            path.name.startswith("shard-")
        if wanted and hit():
            os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, value)
    store.write_json = patched
from cnnxfer.cli import main
sys.exit(main(sys.argv[3:]))
'''


def _run(args: list[str], *, killer: tuple[str, int] | None = None, env=None):
    command = [sys.executable, "-m", "cnnxfer", *args] if killer is None else \
        [sys.executable, "-c", _KILLER, killer[0], str(killer[1]), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})


@pytest.fixture(scope="module")
def uninterrupted(network, tmp_path_factory):
    """9 images (one broken), 2 per shard, and the store an uninterrupted run makes of them."""
    base = tmp_path_factory.mktemp("uninterrupted")
    images = _images(base / "images", 9, bad=(4,))
    common = ["extract", "--weights", str(network), *images, "--images-per-shard", "2",
              "--workers", "2", "--allow-failures", "--quiet"]
    reference = _run([*common, "--store", str(base / "reference")])
    assert reference.returncode == 0, reference.stderr
    return common, base / "reference"


@pytest.mark.slow
@pytest.mark.parametrize("killer", [("shard-write", 1), ("shard-write", 3), ("record", 2),
                                    ("manifest", 1), ("timer", 0.0), ("timer", 0.4)])
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_store(uninterrupted, tmp_path,
                                                                    killer):
    common, reference = uninterrupted
    folder = tmp_path / "store"
    if killer[0] == "timer":  # wherever the run is, `killer[1]` s after its first shard
        process = subprocess.Popen([sys.executable, "-m", "cnnxfer", *common, "--store",
                                    str(folder)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_NUM_THREADS": "2"})
        record = folder / store.SHARDS / store.record_name(0)
        while not record.exists() and process.poll() is None:
            time.sleep(0.005)
        time.sleep(killer[1])
        process.kill()
        if process.wait(timeout=60) != -9:  # it finished first: nothing to resume
            pytest.skip("the run finished before the kill")
    else:
        killed = _run([*common, "--store", str(folder)], killer=killer)
        assert killed.returncode == -9, killed.stderr  # SIGKILL, nothing could clean up
    # nothing partial is visible: every shard under its real name is whole
    for path in (folder / store.SHARDS).glob("shard-*.safetensors"):
        assert store.Shard(path).ids
    if killer[0] == "timer" and (folder / store.MANIFEST).is_file():
        # the timed kill landed after the manifest (in the process's exit): a finished store,
        # which the comparison below checks whole; the resume has nothing left to do
        assert store.verify(folder) == []
    else:  # killed before its manifest: unfinished, and a reader says so
        with pytest.raises(store.StoreError, match="run the same command again"):
            store.open(folder)
    if killer == ("shard-write", 3):  # chunk 2 (with the broken image) was being written:
        # its failure was recorded while the run went on, before any shard of it was done
        live = [json.loads(line) for line in (folder / store.FAILURES).read_text().splitlines()]
        assert [record["index"] for record in live] == [4]
    resumed = _run([*common, "--store", str(folder)])
    assert resumed.returncode == 0, resumed.stderr
    _same_store(reference, folder)
    assert store.verify(folder) == [] and len(store.open(folder).manifest["shards"]) == 5
    # the dead run's unfinished files were cleared by the resume, and it left none of its own
    assert not (folder / store.INCOMING).exists() or not any((folder / store.INCOMING).iterdir())
    assert not [p for p in (folder / store.SHARDS).iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(network, tmp_path):
    images = _images(tmp_path / "images", 7, bad=(5,))  # a failure in process 1's block
    common = ["extract", "--weights", str(network), *images, "--images-per-shard", "2",
              "--workers", "1", "--quiet"]
    one = _run([*common, "--store", str(tmp_path / "one")], env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 1, one.stderr  # a failed image: status 1, the store finished

    def torchrun(folder: Path):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc_per_node=2", "-m", "cnnxfer", *common, "--store", str(folder)],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"})

    two = torchrun(tmp_path / "two")
    # process 0 reports the failure (status 1) after writing the manifest; process 1, whose
    # block held the failure, waited for it instead of ending the job early
    assert two.returncode == 1, two.stderr[-3000:]
    assert two.stdout.count("wrote store") == 1 and "1 failed" in two.stdout
    _same_store(tmp_path / "one", tmp_path / "two")
    # a partly finished multi-process run resumes: drop rank 1's last shard and the manifest
    (tmp_path / "two" / store.MANIFEST).unlink()
    for suffix in (".safetensors", ".json"):
        (tmp_path / "two" / store.SHARDS / f"shard-000003{suffix}").unlink()
    again = torchrun(tmp_path / "two")
    assert again.returncode == 1 and "wrote store" in again.stdout, again.stderr[-3000:]
    _same_store(tmp_path / "one", tmp_path / "two")


@needs_gpu_engine
@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="no CUDA GPU")
def test_torchrun_on_gpus_with_nccl(network, tmp_path):
    """One process per GPU (at most 2), NCCL: the same images and boxes as one process on
    one GPU, the features equal to float tolerance (cuDNN may pick other algorithms)."""
    images = _images(tmp_path / "images", 6)
    common = ["extract", "--weights", str(network), *images, "--images-per-shard", "2",
              "--workers", "1", "--device", "cuda", "--quiet"]
    one = _run([*common, "--store", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    processes = min(2, torch.cuda.device_count())
    many = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={processes}", "-m", "cnnxfer", *common, "--store",
         str(tmp_path / "many")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert many.returncode == 0, many.stderr[-3000:]
    first, second = store.open(tmp_path / "one"), store.open(tmp_path / "many")
    assert first.ids() == second.ids()
    for a, b in zip(first, second):
        assert torch.equal(a.boxes, b.boxes)
        torch.testing.assert_close(a.features, b.features, rtol=1e-3, atol=1e-3)


def test_chunks_are_split_without_padding_or_overlap():
    for chunks in range(0, 12):
        for world in range(1, 5):
            parts = [extraction.my_chunks(chunks, rank, world) for rank in range(world)]
            assert [c for part in parts for c in part] == list(range(chunks))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_warnings_free_reader(network, tmp_path):
    images = _images(tmp_path / "images", 1)
    assert _extract(network, images, tmp_path / "s", "--workers", "0") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning on non-writable NumPy arrays
        features, _ = store.open(tmp_path / "s")[images[0]]
    assert features.shape[1] == 512
