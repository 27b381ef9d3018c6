"""The generated world (cnnxfer.data.toyvoc and `cnnxfer toyvoc`): a real VOC-format tree, a
source task of other classes, the same bytes from the same seed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cnnxfer.cli import main
from cnnxfer.data import load_split, toyvoc


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toyvoc.generate(tmp_path_factory.mktemp("world"), seed=3, images=24,
                           size=(96, 72), source_images=60, source_size=32)


def test_the_tree_reads_as_voc_with_every_split(world):
    settings = json.loads((world.source.parent / "world.json").read_text())
    assert settings["splits"] == {"train": 8, "val": 4, "test": 12, "trainval": 12}
    for split, count in settings["splits"].items():
        loaded = load_split(world.root, split)
        assert loaded.classes == toyvoc.TARGET_CLASSES and len(loaded.images) == count
        labels = loaded.labels()  # the per-class files agree with the annotations
        assert labels.shape == (count, len(toyvoc.TARGET_CLASSES))
    trainval = load_split(world.root, "trainval")
    objects = [o for image in trainval.images for o in image.objects]
    assert all(image.width == 96 and image.height == 72 for image in trainval.images)
    assert all(1 <= len(image.objects) <= 4 for image in load_split(world.root, "test").images
               if image.objects)
    assert all(0 <= o.box[0] < o.box[2] <= 96 and 0 <= o.box[1] < o.box[3] <= 72
               for o in objects)
    every = [o for s in ("trainval", "test") for im in load_split(world.root, s).images
             for o in im.objects]
    assert any(o.difficult for o in every) and any(o.truncated for o in every)
    assert {o.name for o in every} <= set(toyvoc.TARGET_CLASSES)


def test_the_source_task_has_other_classes(world):
    images, labels, classes = toyvoc.load_source(world.source)
    assert images.shape == (60, 3, 32, 32) and str(images.dtype) == "torch.uint8"
    assert classes == toyvoc.SOURCE_CLASSES
    assert set(classes).isdisjoint(toyvoc.TARGET_CLASSES)
    assert labels.min() >= 0 and labels.max() < len(classes)
    assert len(set(labels.tolist())) > len(classes) // 2
    assert float(images.float().std()) > 20  # real pictures, not a constant


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    options = dict(images=6, size=(64, 48), source_images=20, source_size=24)
    first = toyvoc.generate(tmp_path / "a", seed=7, **options)
    toyvoc.generate(tmp_path / "b", seed=7, **options)
    toyvoc.generate(tmp_path / "c", seed=8, **options)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert (first.root / "Annotations" / "000000.xml").is_file()


def test_shapes_fill_their_box():
    for kind in toyvoc.TARGET_CLASSES + toyvoc.SOURCE_CLASSES:
        mask = toyvoc.shape_mask(kind, 40)
        assert mask.shape == (40, 40) and 0.2 < mask.mean() < 0.95, kind
    masks = {kind: toyvoc.shape_mask(kind, 40) for kind in toyvoc.TARGET_CLASSES}
    assert len({m.tobytes() for m in masks.values()}) == len(masks)  # all different


def test_command_line(tmp_path, capsys):
    assert main(["toyvoc", str(tmp_path / "w"), "--images", "5", "--size", "64x48",
                 "--source-images", "12", "--source-size", "24", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "w" / "VOCtoy" / "ImageSets" / "Main" / "trainval.txt").is_file()
    for bad in (["--size", "10x10"], ["--size", "big"], ["--images", "0"]):
        with pytest.raises(SystemExit):
            main(["toyvoc", str(tmp_path / "x"), *bad])
    assert main(["toyvoc", str(tmp_path / "y"), "--images", "2"]) == 2
    assert "a world needs images >= 4" in capsys.readouterr().err


def test_scenes_are_not_blank():
    rng = np.random.default_rng(0)
    pixels, objects = toyvoc.render_scene(rng, 80, 60, toyvoc._Backgrounds())
    assert pixels.shape == (60, 80, 3) and pixels.std() > 10
