"""Small Pascal VOC trees on disk, in the devkit's own formats, for the tests of cnnxfer.data.

Written independently of cnnxfer.data (it imports nothing of it), so that reading a tree checks
the reader against the format rather than against itself.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

DEFAULT_SIZE = (64, 48)  # (width, height): small, so a tree writes in milliseconds


def write_voc_tree(root, images, *, split="trainval", classes=None, task="main",
                   write_class_files=True, image_size=DEFAULT_SIZE, seed=0) -> Path:
    """Write a VOC year folder under ``root`` and return it as a Path.

    Args:
        images: dicts {"id": "000001", "size": (w, h) (default image_size), "objects": [
            {"name": "cat", "box": (xmin, ymin, xmax, ymax) in VOC's 1-based inclusive pixels,
             written as given (so floats stay floats), "difficult": False, "truncated": False,
             "actions": {"jumping": True, ...} (persons of the action task only)}]}.
        split: the image set written; call again with another name to add a split (images may
            be shared; their files are rewritten identically).
        classes: the label-file classes; None: the object names ("main") or the action names
            other than "other" ("action") found in images, sorted.
        task: "main" writes ImageSets/Main/{split}.txt (ids) and {class}_{split}.txt
            ("id  1" / "id -1" / "id  0", as the devkit's "%s %2d"); "action" writes
            ImageSets/Action/{split}.txt ("id objindex", per person with actions) and
            {action}_{split}.txt ("id objindex label").
        write_class_files: False leaves the label files out.
        seed: the JPEG contents are random noise from (seed, id), so reruns write the same bytes.
    """
    root = Path(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main", "ImageSets/Action"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if classes is None:
        if task == "main":
            classes = sorted({o["name"] for image in images for o in image.get("objects", [])})
        else:
            classes = sorted({a for image in images for o in image.get("objects", [])
                              for a in o.get("actions", {})} - {"other"})
    for image in images:
        size = tuple(image.get("size", image_size))
        _write_jpeg(root / "JPEGImages" / f"{image['id']}.jpg", size, seed)
        (root / "Annotations" / f"{image['id']}.xml").write_text(
            _annotation(image["id"], size, image.get("objects", []), classes if task == "action"
                        else ()))

    folder = root / "ImageSets" / ("Main" if task == "main" else "Action")
    if task == "main":
        (folder / f"{split}.txt").write_text("".join(f"{image['id']}\n" for image in images))
        if write_class_files:
            for name in classes:
                lines = [f"{image['id']} {_image_label(image, name):2d}\n" for image in images]
                (folder / f"{name}_{split}.txt").write_text("".join(lines))
    else:
        persons = [(image["id"], index, o) for image in images
                   for index, o in enumerate(image.get("objects", []), start=1) if "actions" in o]
        (folder / f"{split}.txt").write_text("".join(f"{i} {k}\n" for i, k, _ in persons))
        if write_class_files:
            for name in classes:
                lines = [f"{i} {k} {1 if o['actions'].get(name) else -1:2d}\n"
                         for i, k, o in persons]
                (folder / f"{name}_{split}.txt").write_text("".join(lines))
    return root


def _image_label(image: dict, name: str) -> int:
    """The devkit's image label: 1 for a non-difficult object of the class, 0 for difficult
    ones only, -1 for none."""
    flags = [bool(o.get("difficult", False)) for o in image.get("objects", [])
             if o["name"] == name]
    if not flags:
        return -1
    return 0 if all(flags) else 1


def _write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    width, height = size
    rng = np.random.default_rng([seed, zlib.crc32(path.stem.encode())])
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _annotation(image_id: str, size: tuple[int, int], objects: list[dict],
                actions: tuple[str, ...] | list[str]) -> str:
    """The devkit's XML for one image (VOC2007 layout; persons of the action task get an
    <actions> element with a 0/1 flag per action, and any extra ones they give)."""
    width, height = size
    parts = ["<annotation>\n",
             "\t<folder>VOC2007</folder>\n",
             f"\t<filename>{escape(image_id)}.jpg</filename>\n",
             "\t<source>\n\t\t<database>cnnxfer test tree</database>\n\t</source>\n",
             f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
             f"\t\t<depth>3</depth>\n\t</size>\n",
             "\t<segmented>0</segmented>\n"]
    for o in objects:
        xmin, ymin, xmax, ymax = o["box"]
        parts += ["\t<object>\n",
                  f"\t\t<name>{escape(o['name'])}</name>\n",
                  "\t\t<pose>Unspecified</pose>\n",
                  f"\t\t<truncated>{int(bool(o.get('truncated', False)))}</truncated>\n",
                  f"\t\t<difficult>{int(bool(o.get('difficult', False)))}</difficult>\n"]
        if "actions" in o:
            flags = {**{a: False for a in actions}, **o["actions"]}
            parts.append("\t\t<actions>\n")
            parts += [f"\t\t\t<{a}>{int(bool(flag))}</{a}>\n" for a, flag in flags.items()]
            parts.append("\t\t</actions>\n")
        parts += ["\t\t<bndbox>\n",
                  f"\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n",
                  f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n",
                  "\t\t</bndbox>\n",
                  "\t</object>\n"]
    parts.append("</annotation>\n")
    return "".join(parts)
