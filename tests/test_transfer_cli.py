"""`cnnxfer voc`, `train`, `eval` and `localize` end to end, in-process through cnnxfer.cli.main,
on small VOC-format trees with a planted visual signal (a coloured square per object on noise) and
a random width-0.25 AlexNet.

The features of the main tree are extracted once (by the `voc` run) into a shared folder that the
other tests reuse; the grid has three scales (`--scales 1,1.6,2.4`: 65 patches on 96x72) so that
extraction stays cheap.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cnnxfer import nets, weights
from cnnxfer.cli import main
from cnnxfer.data.metrics import APTable, average_precision, mean_average_precision

from voc_trees import write_voc_tree

COLORS = {"blue": (30, 30, 220), "red": (220, 30, 30)}
CLASSES = sorted(COLORS)
SIZE = (96, 72)  # width, height
SCALES = ["--scales", "1,1.6,2.4"]
# a small, fast head: enough for coloured squares
TRAINING = ["--epochs", "8", "--hidden", "128", "--batch-size", "64", "--lr", "0.01"]


def _scene(rng, image_id: str, *, empty: bool = False, difficult: str | None = None) -> dict:
    """An image of SIZE with, per class, a square of its colour with probability 1/2 (none when
    empty; the `difficult` class's square, always drawn, is flagged difficult)."""
    width, height = SIZE
    objects = []
    for name in CLASSES:
        if empty or (name != difficult and rng.random() < 0.5):
            continue
        side = int(rng.integers(20, 40))
        x = int(rng.integers(1, width - side))
        y = int(rng.integers(1, height - side))
        objects.append({"name": name, "box": (x, y, x + side - 1, y + side - 1),
                        "difficult": name == difficult})
    return {"id": image_id, "size": SIZE, "objects": objects}


def _paint(tree: Path, images: list[dict], rng, colors=COLORS, key="name") -> None:
    """Overwrites each image's JPEG with noise and its objects' squares (VOC boxes are 1-based,
    inclusive)."""
    for image in images:
        width, height = image["size"]
        pixels = rng.integers(60, 160, (height, width, 3)).astype(np.uint8)
        for obj in image["objects"]:
            x0, y0, x1, y1 = obj["box"]
            pixels[y0 - 1:y1, x0 - 1:x1] = colors[obj[key]]
        Image.fromarray(pixels).save(tree / "JPEGImages" / f"{image['id']}.jpg", quality=95)


def _devkit_labels(image: dict) -> list[int]:
    """Per class: 1 (a non-difficult object), 0 (difficult ones only), -1 (none)."""
    out = []
    for name in CLASSES:
        flags = [o["difficult"] for o in image["objects"] if o["name"] == name]
        out.append(-1 if not flags else 0 if all(flags) else 1)
    return out


@contextlib.contextmanager
def _captured():
    """stdout and stderr of a main() call made outside a test function (capsys is per test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield SimpleNamespace(out=out, err=err)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """VOCdevkit/VOC2007 (24 trainval, 12 test images of 96x72; one empty image and one
    difficult object in each split), the network's weights and a shared features folder."""
    base = tmp_path_factory.mktemp("transfer_cli")
    rng = np.random.default_rng(0)
    train = [_scene(rng, f"{i:06d}", empty=i == 0, difficult="red" if i == 5 else None)
             for i in range(24)]
    test = [_scene(rng, f"{1000 + i:06d}", empty=i == 0, difficult="red" if i == 1 else None)
            for i in range(12)]
    root = base / "VOCdevkit" / "VOC2007"
    write_voc_tree(root, train, split="trainval", classes=CLASSES)
    write_voc_tree(root, test, split="test", classes=CLASSES)
    _paint(root, train + test, rng)
    labels = np.array([_devkit_labels(image) for image in test])
    # enough of each label for an AP that means something
    assert ((labels == 1).sum(0) >= 3).all() and ((labels == -1).sum(0) >= 3).all()
    net = nets.alexnet("alexnet", width=0.25, seed=0, num_classes=None)
    weights_path = base / "net.safetensors"
    weights.save(net, weights_path)
    return SimpleNamespace(base=base, root=root, weights=weights_path, train=train, test=test,
                           test_labels=labels, features=base / "features")


def _voc_args(tree, out: Path) -> list[str]:
    return ["voc", "--root", str(tree.root), "--weights", str(tree.weights), "--out", str(out),
            "--features", str(tree.features), "--quiet", *SCALES, *TRAINING]


@pytest.fixture(scope="module")
def voc_run(tree):
    """One `cnnxfer voc` run (it extracts every feature of the tree into tree.features); its
    results.json and report.md as they were right after it."""
    out = tree.base / "voc"
    start = time.perf_counter()
    with _captured() as captured:
        status = main(_voc_args(tree, out))
    seconds = time.perf_counter() - start
    return SimpleNamespace(status=status, out=out, seconds=seconds,
                           stdout=captured.out.getvalue(), stderr=captured.err.getvalue(),
                           results=json.loads((out / "results.json").read_text()),
                           report=(out / "report.md").read_text())


def _chance_map(labels: np.ndarray, trials: int = 200) -> float:
    """The mean mAP of random scores on these labels (the 11-point AP of a random ranking is
    above the positive rate on few samples)."""
    rng = np.random.default_rng(1)
    return float(np.mean([mean_average_precision(rng.random(labels.shape), labels, CLASSES,
                                                 "voc07").map for _ in range(trials)]))


@pytest.mark.slow
def test_voc_end_to_end(tree, voc_run):
    assert voc_run.status == 0, voc_run.stderr
    results = voc_run.results
    assert {"classes", "ap", "map", "metric"} <= results.keys()
    assert results["classes"] == CLASSES and results["metric"] == "voc07"  # from "VOC2007"
    assert results["samples"] == len(tree.test) and results["skipped"] == {}
    assert results["images"] == {"train": len(tree.train), "test": len(tree.test)}

    labels = tree.test_labels
    positive_rate = float((labels == 1).sum() / (labels != 0).sum())
    chance = _chance_map(labels)
    print(f"\nvoc: mAP {results['map']:.3f}, AP {results['ap']}; positive rate "
          f"{positive_rate:.3f}, mAP of random scores {chance:.3f}; {voc_run.seconds:.1f} s "
          f"(timing {results['timing']})")
    assert results["map"] > max(positive_rate, chance) + 0.15
    assert results["map"] == pytest.approx(np.mean([results["ap"][c] for c in CLASSES]))

    # the devkit files: one line per test image, in the image set's order; their scores give
    # the same AP against the devkit's labels
    ids = [image["id"] for image in tree.test]
    for c, name in enumerate(CLASSES):
        lines = (voc_run.out / f"comp2_cls_test_{name}.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ids
        scores = np.array([float(line.split()[1]) for line in lines])
        assert average_precision(scores, labels[:, c], "voc07") == pytest.approx(
            results["ap"][name], abs=1e-4)  # the files hold 6 decimals

    table = APTable(tuple(CLASSES), results["ap"], "voc07").to_markdown()
    assert table in voc_run.report
    assert table.splitlines()[0] == "| blue | red | mAP |"
    assert "## Time" in voc_run.report and "## Maps" in voc_run.report
    assert "## Left out" not in voc_run.report
    assert voc_run.stdout.splitlines()[0].split() == [*CLASSES, "mAP"]  # the text table

    assert len(results["maps"]) == 4
    for relative in results["maps"]:
        with Image.open(voc_run.out / relative) as png:
            assert png.format == "PNG" and png.width >= SIZE[0]
    assert sorted(p.name for p in (voc_run.out / "maps").glob("*.png")) == sorted(
        Path(p).name for p in results["maps"])

    timing = results["timing"]
    assert timing["features_train_computed"] == len(tree.train)
    assert timing["features_test_computed"] == len(tree.test)
    assert timing["training_seconds"] > 0
    assert results["localization"] is not None
    assert len(list(tree.features.glob("*.safetensors"))) == len(tree.train) + len(tree.test)


@pytest.mark.slow
def test_voc_rerun_reuses_features_and_head(tree, voc_run):
    assert voc_run.status == 0
    head = voc_run.out / "head.safetensors"
    stamp = head.stat().st_mtime_ns
    start = time.perf_counter()
    with _captured():
        assert main(_voc_args(tree, voc_run.out)) == 0
    seconds = time.perf_counter() - start
    results = json.loads((voc_run.out / "results.json").read_text())
    print(f"\nvoc rerun: {seconds:.1f} s (first run {voc_run.seconds:.1f} s)")
    timing = results["timing"]
    assert timing["features_train_computed"] == 0 and timing["features_test_computed"] == 0
    assert "training_seconds" not in timing and "training_per_image" not in timing
    assert "features_per_image" not in timing
    assert results["ap"] == voc_run.results["ap"] and results["map"] == voc_run.results["map"]
    assert head.stat().st_mtime_ns == stamp
    assert results["training"]["history"] == voc_run.results["training"]["history"]


def _copy_features(tree, folder: Path, ids: list[str]) -> Path:
    folder.mkdir()
    for image_id in ids:
        shutil.copy2(tree.features / f"{image_id}.safetensors", folder)
    return folder


@pytest.mark.slow
def test_train_eval_localize(tree, voc_run, tmp_path, capsys):
    assert voc_run.status == 0
    # two trainval images lack features: train computes them with --weights
    train_ids = [image["id"] for image in tree.train]
    features = _copy_features(tree, tmp_path / "features", train_ids[2:])
    head = tmp_path / "head.safetensors"
    assert main(["train", "--voc", str(tree.root), "--features", str(features), "--out",
                 str(head), "--weights", str(tree.weights), "--quiet", *SCALES,
                 *TRAINING]) == 0
    out = capsys.readouterr().out
    assert f"wrote {head}: 2 classes, {len(tree.train)} images" in out
    assert "0 images skipped" in out
    assert sorted(p.stem for p in features.glob("*.safetensors")) == train_ids
    assert (tmp_path / "head.training" / "checkpoint.pt").is_file()  # the default workdir
    tensors = load_file(str(head))
    assert tensors["fcb.weight"].shape == (len(CLASSES) + 1, 128)
    assert tensors["fca.weight"].shape == (128, 1024)  # fc7 of the width-0.25 network

    # eval on the test split, with the test features of the voc run (reused: same settings)
    evaluation = tmp_path / "eval"
    test_features = tree.features
    stamps = {p: p.stat().st_mtime_ns for p in test_features.glob("*.safetensors")}
    assert main(["eval", "--voc", str(tree.root), "--features", str(test_features), "--head",
                 str(head), "--out", str(evaluation), "--weights", str(tree.weights),
                 "--quiet", *SCALES]) == 0
    assert {p: p.stat().st_mtime_ns for p in test_features.glob("*.safetensors")} == stamps
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [*CLASSES, "mAP"]
    results = json.loads((evaluation / "results.json").read_text())
    assert results["classes"] == CLASSES and results["metric"] == "voc07"
    assert results["samples"] == len(tree.test) and results["skipped"] == {}
    assert results["head"] == str(head)
    with capsys.disabled():
        print(f"\ntrain + eval: mAP {results['map']:.3f}, AP {results['ap']} (voc run: "
              f"{voc_run.results['map']:.3f})")
    assert results["map"] > 0.8
    for name in CLASSES:
        lines = (evaluation / f"comp2_cls_test_{name}.txt").read_text().splitlines()
        assert len(lines) == len(tree.test)
    report = (evaluation / "report.md").read_text()
    assert APTable(tuple(CLASSES), results["ap"], "voc07").to_markdown() in report
    assert len(list((evaluation / "maps").glob("*.png"))) == 4

    # localize two test images: one PNG and one [C, H, W] array each
    images = [tree.root / "JPEGImages" / f"{tree.test[i]['id']}.jpg" for i in (2, 3)]
    maps = tmp_path / "maps"
    assert main(["localize", "--head", str(head), "--weights", str(tree.weights),
                 *map(str, images), "--out", str(maps), "--arrays", "--quiet", *SCALES]) == 0
    assert "wrote 2 maps" in capsys.readouterr().out
    for image in images:
        with Image.open(maps / f"{image.stem}.png") as png:
            assert png.format == "PNG"
        array = np.load(maps / f"{image.stem}.npy")
        assert array.shape == (len(CLASSES), SIZE[1], SIZE[0]) and array.dtype == np.float32
        assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
    # one class drawn on request
    assert main(["localize", "--head", str(head), "--weights", str(tree.weights),
                 str(images[0]), "--out", str(tmp_path / "red"), "--classes", "red",
                 "--quiet", *SCALES]) == 0
    assert [p.name for p in (tmp_path / "red").iterdir()] == [f"{images[0].stem}.png"]


@pytest.mark.slow
def test_a_subset_of_the_classes(tree, voc_run, tmp_path, capsys):
    """--classes blue: images with red squares are blue negatives, not skipped images; the head
    of blue alone evaluates on the whole test split."""
    assert voc_run.status == 0
    head = tmp_path / "blue.safetensors"
    assert main(["train", "--voc", str(tree.root), "--features", str(tree.features), "--out",
                 str(head), "--classes", "blue", "--quiet", *SCALES, "--epochs", "1",
                 "--hidden", "16"]) == 0
    out = capsys.readouterr().out
    assert f"1 classes, {len(tree.train)} images" in out and "0 images skipped" in out
    evaluation = tmp_path / "eval"
    assert main(["eval", "--voc", str(tree.root), "--features", str(tree.features), "--head",
                 str(head), "--out", str(evaluation), "--maps", "0", "--quiet"]) == 0
    results = json.loads((evaluation / "results.json").read_text())
    assert results["classes"] == ["blue"] and results["samples"] == len(tree.test)
    assert results["skipped"] == {}
    lines = (evaluation / "comp2_cls_test_blue.txt").read_text().splitlines()
    assert len(lines) == len(tree.test) and not (evaluation / "comp2_cls_test_red.txt").exists()


class _Interrupted(RuntimeError):
    """Stands for a Ctrl-C after the first epoch (main does not catch it)."""


@pytest.mark.slow
def test_train_resumes_from_its_checkpoint(tree, voc_run, tmp_path, capsys, monkeypatch):
    assert voc_run.status == 0
    from cnnxfer.transfer import training

    arguments = ["train", "--voc", str(tree.root), "--features", str(tree.features),
                 "--quiet", *SCALES, "--epochs", "2", "--hidden", "64", "--batch-size", "64",
                 "--validation", "0.2"]
    # uninterrupted
    whole = tmp_path / "whole.safetensors"
    assert main([*arguments, "--out", str(whole)]) == 0
    checkpoint = tmp_path / "whole.training" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    # the same again: every epoch is in the checkpoint, nothing is trained
    again = tmp_path / "again.safetensors"
    start = time.perf_counter()
    assert main([*arguments, "--out", str(again), "--workdir",
                 str(tmp_path / "whole.training")]) == 0
    seconds = time.perf_counter() - start
    assert checkpoint.stat().st_mtime_ns == stamp  # no epoch ran (each one saves a checkpoint)
    _assert_same_tensors(whole, again)
    # and with the default workdir (the same --out)
    assert main([*arguments, "--out", str(whole)]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp

    # interrupted after the first epoch, then resumed: the head of the uninterrupted run
    save = training._save_checkpoint

    def save_then_stop(path, key, epoch, *rest):
        save(path, key, epoch, *rest)
        raise _Interrupted(f"after epoch {epoch}")

    resumed = tmp_path / "resumed.safetensors"
    monkeypatch.setattr(training, "_save_checkpoint", save_then_stop)
    with pytest.raises(_Interrupted, match="after epoch 0"):
        main([*arguments, "--out", str(resumed)])
    assert not resumed.exists()
    monkeypatch.setattr(training, "_save_checkpoint", save)
    assert main([*arguments, "--out", str(resumed)]) == 0
    _assert_same_tensors(whole, resumed)
    with capsys.disabled():
        print(f"\nresume: a rerun of a finished training took {seconds:.2f} s")


def _assert_same_tensors(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def _error(capsys) -> str:
    """The one line a user's mistake prints on stderr."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_user_errors_exit_2_with_one_line(tree, tmp_path, capsys):
    w = str(tree.weights)
    missing = str(tmp_path / "nowhere" / "VOC2007")
    assert main(["voc", "--root", missing, "--weights", w, "--out", str(tmp_path / "o")]) == 2
    line = _error(capsys)
    assert line.startswith("cnnxfer voc: error: VOC root folder not found") and missing in line
    assert main(["train", "--voc", missing, "--features", str(tmp_path / "f"), "--out",
                 str(tmp_path / "h.safetensors")]) == 2
    assert "VOC root folder not found" in _error(capsys)

    # train: --out must be a .safetensors file in an existing folder
    assert main(["train", "--voc", str(tree.root), "--features", str(tmp_path / "f"), "--out",
                 str(tmp_path / "head.pt")]) == 2
    assert "--out must end in .safetensors" in _error(capsys)
    assert main(["train", "--voc", str(tree.root), "--features", str(tmp_path / "f"), "--out",
                 str(tmp_path / "none" / "head.safetensors")]) == 2
    assert "--out's folder does not exist" in _error(capsys)
    # features missing and no --weights to compute them
    assert main(["train", "--voc", str(tree.root), "--features", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "head.safetensors")]) == 2
    line = _error(capsys)
    assert "features of layer fc7 are missing" in line and "--weights" in line
    # a misspelt class
    assert main(["train", "--voc", str(tree.root), "--features", str(tmp_path / "f"), "--out",
                 str(tmp_path / "head.safetensors"), "--classes", "blue,rde"]) == 2
    line = _error(capsys)
    assert "class 'rde' is not a class of split 'trainval'" in line and "blue, red" in line

    # a head file that is not a head: the network's weights, and garbage
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    for path, message in ((tree.weights, "is not a cnnxfer head"),
                          (garbage, "is not a readable safetensors file"),
                          (tmp_path / "absent.safetensors", "head file not found")):
        assert main(["eval", "--voc", str(tree.root), "--features", str(tmp_path / "f"),
                     "--head", str(path), "--out", str(tmp_path / "e")]) == 2
        assert message in _error(capsys)
        assert main(["localize", "--head", str(path), "--weights", w, "x.jpg", "--out",
                     str(tmp_path / "m")]) == 2
        assert message in _error(capsys)


def test_bad_option_values_are_usage_errors(tree, tmp_path, capsys):
    base = ["voc", "--root", str(tree.root), "--weights", str(tree.weights), "--out",
            str(tmp_path / "o")]
    for option, value, message in (("--scales", "0.5,1", "expected scales >= 1"),
                                   ("--epochs", "0", "expected a positive int"),
                                   ("--validation", "1.5", "expected a number in [0, 1]"),
                                   # 1.0 would hold out every image
                                   ("--validation", "1.0", "expected a number in [0, 1)"),
                                   ("--maps", "-1", "expected an int >= 0"),
                                   ("--lr", "nan", "expected a positive number"),
                                   ("--task", "detect", "invalid choice")):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, option, value])
        assert exit_info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("cnnxfer voc: error: argument") and option in last
        assert message in last


@pytest.fixture(scope="module")
def head_file(tree, tmp_path_factory):
    """An untrained head of CLASSES on the network's fc7 (for the error tests that need a real
    head file)."""
    from cnnxfer.transfer import AdaptationHead

    path = tmp_path_factory.mktemp("head") / "head.safetensors"
    AdaptationHead(1024, CLASSES, hidden=8, network=str(tree.weights)).save(path)
    return path


def test_localize_unknown_class_and_head_of_other_classes(tree, head_file, tmp_path, capsys):
    image = tree.root / "JPEGImages" / f"{tree.test[0]['id']}.jpg"
    assert main(["localize", "--head", str(head_file), "--weights", str(tree.weights),
                 str(image), "--out", str(tmp_path / "m"), "--classes", "red,green"]) == 2
    line = _error(capsys)
    assert "'green'" in line and "the head does not know" in line and "blue, red" in line
    assert not (tmp_path / "m").exists()

    # a tree of other classes than the head's: an error, not a run that skips every image
    other = write_voc_tree(tmp_path / "VOC2007", [
        {"id": "000001", "objects": [{"name": "cat", "box": (5, 5, 30, 30)}]},
        {"id": "000002", "objects": [{"name": "dog", "box": (5, 5, 30, 30)}]}], split="test")
    assert main(["eval", "--voc", str(other), "--features", str(tmp_path / "f"), "--head",
                 str(head_file), "--out", str(tmp_path / "e"), "--quiet"]) == 2
    line = _error(capsys)
    assert "cat" in line and "blue" in line


def test_image_set_errors_are_fatal(tree, tmp_path, capsys):
    """A malformed image set is the tree's error, not an image's: exit 2 naming file and line."""
    root = tmp_path / "VOC2007"
    shutil.copytree(tree.root, root)
    listing = root / "ImageSets" / "Main" / "test.txt"
    ids = listing.read_text().split()
    listing.write_text("\n".join([*ids, ids[3]]) + "\n")
    assert main(["voc", "--root", str(root), "--weights", str(tree.weights), "--out",
                 str(tmp_path / "o"), "--quiet", *SCALES]) == 2
    line = _error(capsys)
    assert f"{listing}:{len(ids) + 1}" in line and "listed a second time" in line
    # the action task on a tree without ImageSets/Action/trainval.txt
    assert main(["voc", "--root", str(tree.root), "--weights", str(tree.weights), "--out",
                 str(tmp_path / "o"), "--task", "action", "--quiet"]) == 2
    line = _error(capsys)
    assert "VOC image set not found" in line and "Action" in line


@pytest.mark.slow
def test_voc_skips_unreadable_and_missing_images(tree, tmp_path, capsys):
    """A long run goes on past bad images: a JPEG of garbage bytes, and an id of the image set
    with no annotation nor JPEG, are reported, listed in results.json and report.md, and left
    out of the AP; the run exits 0. (VOC2012 in the folder's name: the "area" metric.)"""
    rng = np.random.default_rng(3)
    size = (64, 48)
    train = [{**_scene(rng, f"{i:06d}"), "size": size} for i in range(6)]
    test = [{**_scene(rng, f"{100 + i:06d}"), "size": size} for i in range(4)]
    for image in train + test:  # squares that fit 64x48
        image["objects"] = [{**o, "box": (2, 2, 21, 21)} if o["name"] == "blue"
                            else {**o, "box": (40, 26, 59, 45)} for o in image["objects"]]
    train[0]["objects"] = [{"name": "blue", "box": (2, 2, 21, 21), "difficult": False},
                           {"name": "red", "box": (40, 26, 59, 45), "difficult": False}]
    test[1]["objects"] = train[0]["objects"]
    test[2]["objects"] = []
    root = tmp_path / "VOC2012"
    write_voc_tree(root, train, split="trainval", classes=CLASSES)
    write_voc_tree(root, test, split="test", classes=CLASSES)
    _paint(root, train + test, rng)
    broken = root / "JPEGImages" / f"{test[0]['id']}.jpg"
    broken.write_bytes(b"\xff\xd8 garbage, not a JPEG")
    listing = root / "ImageSets" / "Main" / "test.txt"
    listing.write_text(listing.read_text() + "999999\n")
    out = tmp_path / "out"
    assert main(["voc", "--root", str(root), "--weights", str(tree.weights), "--out", str(out),
                 "--quiet", *SCALES, "--epochs", "1", "--hidden", "16", "--maps", "1"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {broken}" in captured.err
    assert "2 images skipped (listed in report.md)" in captured.out
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "area"
    assert set(results["skipped"]) == {str(broken), "999999"}
    assert "cannot decode" in results["skipped"][str(broken)]
    assert "has no annotation file" in results["skipped"]["999999"]
    assert results["samples"] == len(test) - 1 and results["images"]["test"] == len(test)
    assert str(broken) in results["left_out_of_ap"]
    report = (out / "report.md").read_text()
    assert "## Left out" in report
    assert f"- `{broken}`: " in report and "- `999999`: " in report
    for name in CLASSES:
        lines = (out / f"comp2_cls_test_{name}.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == [image["id"] for image in test[1:]]


@pytest.mark.slow
def test_voc_action_task(tree, tmp_path, capsys):
    """Persons (squares) coloured by their action; `voc --task action` scores each test person
    and writes the devkit's comp10 files."""
    colors = {"jumping": (220, 30, 30), "phoning": (30, 30, 220), "other": (30, 200, 30)}
    rng = np.random.default_rng(4)

    def person(action, x):
        return {"name": "person", "box": (x, 10, x + 35, 55), "action": action,
                "actions": {action: True}}

    train = [{"id": f"{i:06d}", "size": SIZE,
              "objects": [person(("jumping", "phoning")[i % 2], 4)]
              + ([person(("phoning", "jumping")[i % 2], 52)] if i % 3 == 0 else [])}
             for i in range(6)]
    train[5]["objects"].append(person("other", 52))  # no action of the classes: not trained on
    test = [{"id": f"{100 + i:06d}", "size": SIZE,
             "objects": [person(("jumping", "phoning")[i % 2], 4 + 48 * (i // 2))]}
            for i in range(3)]
    test[0]["objects"].append(person("phoning", 52))
    root = tmp_path / "VOC2012"
    write_voc_tree(root, train, split="trainval", task="action")
    write_voc_tree(root, test, split="test", task="action")
    _paint(root, train + test, rng, colors=colors, key="action")
    out = tmp_path / "out"
    assert main(["voc", "--task", "action", "--root", str(root), "--weights", str(tree.weights),
                 "--out", str(out), "--quiet", *SCALES, "--epochs", "2", "--hidden", "32",
                 "--validation", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["jumping", "phoning", "mAP"]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "action" and results["classes"] == ["jumping", "phoning"]
    assert results["samples"] == 4 and results["skipped"] == {}
    assert results["localization"] is None and results["maps"] == []
    persons = ["000100 1", "000100 2", "000101 1", "000102 1"]
    for name in ("jumping", "phoning"):
        lines = (out / f"comp10_action_test_{name}.txt").read_text().splitlines()
        assert [" ".join(line.split()[:2]) for line in lines] == persons
        assert all(0.0 <= float(line.split()[2]) <= 1.0 for line in lines)
    assert not list(out.glob("comp2_*"))
    with capsys.disabled():
        print(f"\naction: mAP {results['map']}, AP {results['ap']}")


@pytest.mark.slow
def test_finetune_fc7_from_fc6_features(tree, tmp_path, capsys):
    """--finetune trains a copy of fc7 too, from fc6 features (computed here), and eval runs
    the whole trained stack on the test split."""
    head = tmp_path / "head.safetensors"
    features = tmp_path / "fc6"
    assert main(["train", "--voc", str(tree.root), "--features", str(features), "--out",
                 str(head), "--weights", str(tree.weights), "--layer", "fc6", "--finetune",
                 "--quiet", *SCALES, *TRAINING]) == 0
    tensors = load_file(str(head))
    assert tensors["trunk.0.weight"].shape == (1024, 1024)  # fc7 of the width-0.25 network
    assert tensors["fca.weight"].shape == (128, 1024)
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["eval", "--voc", str(tree.root), "--features", str(features), "--head",
                 str(head), "--out", str(out), "--weights", str(tree.weights), "--quiet",
                 *SCALES]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["samples"] == len(tree.test) and results["map"] > 0.6
    # fc7 features have no FC layer left to fine-tune
    assert main(["train", "--voc", str(tree.root), "--features", str(tmp_path / "fc7"),
                 "--out", str(head), "--weights", str(tree.weights), "--finetune", "--quiet",
                 *SCALES, *TRAINING]) == 2
    assert "needs features of layer conv5 or fc6" in _error(capsys)


# ------------------------------------------------------------------ what a rerun may reuse

def _copy_run(voc_run, tmp_path) -> Path:
    out = tmp_path / "voc"
    shutil.copytree(voc_run.out, out)
    return out


@pytest.mark.slow
def test_voc_rerun_retrains_when_the_training_changes(tree, voc_run, tmp_path, monkeypatch):
    """The head is reused only for the same feature files and labels: another training split,
    or another grid, retrains it; the weights given by another path reuse everything."""
    out = _copy_run(voc_run, tmp_path)
    base = _voc_args(tree, out)
    # the same run with the weights spelled relative to another folder: nothing recomputed
    monkeypatch.chdir(tree.weights.parent)
    relative = [arg if arg != str(tree.weights) else tree.weights.name for arg in base]
    assert main(relative) == 0
    results = json.loads((out / "results.json").read_text())
    assert "training_seconds" not in results["timing"]
    assert results["timing"]["features_train_computed"] == 0
    # another training split (here: the test split): retrained, and the summary says so
    assert main([*base, "--train-split", "test", "--test-split", "trainval"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "training_seconds" in results["timing"] and results["training"]["split"] == "test"
    # another grid: new features, and a new head on them
    features = tmp_path / "coarse"
    other = [*base, "--scales", "1,2", "--features", str(features)]
    assert main(other) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["timing"]["features_train_computed"] == len(tree.train)
    assert "training_seconds" in results["timing"]


@pytest.mark.slow
def test_a_head_is_refused_on_another_network(tree, voc_run, tmp_path, capsys):
    """A different network (even saved under the same name) is recognized by its contents."""
    other = tmp_path / tree.weights.name
    weights.save(nets.alexnet("alexnet", width=0.25, seed=1, num_classes=None), other)
    head = voc_run.out / "head.safetensors"
    for command in (["eval", "--voc", str(tree.root), "--features", str(tmp_path / "f"),
                     "--head", str(head), "--out", str(tmp_path / "e"), "--weights", str(other),
                     "--quiet", *SCALES],
                    ["localize", "--head", str(head), "--weights", str(other), "--out",
                     str(tmp_path / "m"), str(tree.root / "JPEGImages" / "001000.jpg")]):
        assert main(command) == 2
        assert "features of another network" in _error(capsys)
    # eval without --weights on features of the other network: refused as well
    features = tmp_path / "other-features"
    assert main(["extract", "--weights", str(other), "-o", str(features.mkdir() or features),
                 "--quiet", *[str(tree.root / "JPEGImages" / f"{i['id']}.jpg")
                              for i in tree.test]]) == 0
    capsys.readouterr()
    assert main(["eval", "--voc", str(tree.root), "--features", str(features), "--head",
                 str(head), "--out", str(tmp_path / "e2"), "--quiet"]) == 2
    assert "features of another network" in _error(capsys)


@pytest.mark.slow
def test_an_image_whose_jpeg_and_xml_disagree_is_skipped(tmp_path, tree, capsys):
    """A JPEG of another size than its <size> says: reported by name and left out, the run
    goes on."""
    rng = np.random.default_rng(5)
    train = [_scene(rng, f"{i:06d}") for i in range(8)]
    test = [_scene(rng, f"{100 + i:06d}") for i in range(4)]
    root = tmp_path / "VOC2007"
    write_voc_tree(root, train, split="trainval", classes=CLASSES)
    write_voc_tree(root, test, split="test", classes=CLASSES)
    _paint(root, train + test, rng)
    for image_id in ("000003", "000102"):  # one of each split: 80x60 pixels, <size> 96x72
        Image.new("RGB", (80, 60), (90, 90, 90)).save(root / "JPEGImages" / f"{image_id}.jpg")
    out = tmp_path / "out"
    assert main(["voc", "--root", str(root), "--weights", str(tree.weights), "--out", str(out),
                 "--quiet", *SCALES, *TRAINING]) == 0
    results = json.loads((out / "results.json").read_text())
    bad = {str(root / "JPEGImages" / f"{i}.jpg") for i in ("000003", "000102")}
    assert bad <= set(results["skipped"])
    assert all("the JPEG and the XML disagree" in results["skipped"][b] for b in bad)
    assert results["samples"] == 3 and results["training"]["images"] == 7
    assert "000102.jpg" in (out / "report.md").read_text()


def test_bad_devices_and_counts_are_usage_errors(tree, tmp_path, capsys):
    head = tmp_path / "head.safetensors"
    base = ["localize", "--head", str(head), "--weights", str(tree.weights), "--out",
            str(tmp_path / "m"), "x.jpg"]
    cases = [(["--top", "-1"], "expected a positive int"),
             (["--device", "foo"], "expected a device such as cpu or cuda"),
             (["--classes", ","], "expected comma-separated class names")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "this machine has no CUDA GPU"))
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    # a --features that is a file, not a folder: one line, exit 2
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["train", "--voc", str(tree.root), "--features", str(not_a_folder), "--out",
                 str(head), "--weights", str(tree.weights), "--quiet", *SCALES]) == 2
    assert str(not_a_folder) in _error(capsys)


@pytest.mark.slow
def test_train_and_eval_read_a_feature_store(tree, tmp_path, capsys):
    """The dataset path: every image extracted once into a store (cnnxfer extract --store),
    then training and scoring read it; a store that lacks images or was made otherwise is
    refused with the reason."""
    jpegs = sorted(str(p) for p in (tree.root / "JPEGImages").glob("*.jpg"))
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(jpegs) + "\n")
    features = tmp_path / "store"
    assert main(["extract", "--weights", str(tree.weights), "--list", str(listing), "--store",
                 str(features), "--workers", "1", "--quiet", *SCALES]) == 0
    head = tmp_path / "head.safetensors"
    assert main(["train", "--voc", str(tree.root), "--features", str(features), "--out",
                 str(head), "--quiet", *SCALES, *TRAINING]) == 0
    assert f"wrote {head}: 2 classes, {len(tree.train)} images" in capsys.readouterr().out
    evaluation = tmp_path / "eval"
    assert main(["eval", "--voc", str(tree.root), "--features", str(features), "--head",
                 str(head), "--out", str(evaluation), "--weights", str(tree.weights),
                 "--quiet", *SCALES]) == 0
    results = json.loads((evaluation / "results.json").read_text())
    assert results["samples"] == len(tree.test) and results["skipped"] == {}
    assert results["map"] > 0.8, results
    capsys.readouterr()
    # the paper's grid was asked, the store has another
    assert main(["eval", "--voc", str(tree.root), "--features", str(features), "--head",
                 str(head), "--out", str(evaluation), "--quiet"]) == 2
    assert "scales: store has [1.0, 1.6, 2.4]" in _error(capsys)
    # a store of the test images only cannot train on trainval
    partial = tmp_path / "partial"
    test_jpegs = [str(tree.root / "JPEGImages" / f"{image['id']}.jpg") for image in tree.test]
    assert main(["extract", "--weights", str(tree.weights), *test_jpegs, "--store",
                 str(partial), "--workers", "0", "--quiet", *SCALES]) == 0
    assert main(["train", "--voc", str(tree.root), "--features", str(partial), "--out",
                 str(head), "--quiet", *SCALES, *TRAINING]) == 2
    assert f"has no features for {len(tree.train)} of {len(tree.train)} images" in _error(capsys)
