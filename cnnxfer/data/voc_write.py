"""Writing a VOC-format tree: annotations and image sets as the devkit lays them out, so that
data.voc (and the devkit itself) reads what cnnxfer generates.

Boxes are given in cnnxfer's convention (0-based, x1/y1 exclusive) and written in VOC's
(1-based, inclusive): xmin = x0 + 1, xmax = x1, the inverse of voc.voc_box.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class ObjectRecord:
    """One object to write: its class, box (x0, y0, x1, y1; cnnxfer convention) and flags."""

    name: str
    box: tuple[int, int, int, int]
    difficult: bool = False
    truncated: bool = False


def annotation_xml(image_id: str, width: int, height: int, objects: Sequence[ObjectRecord], *,
                   folder: str = "VOC", database: str = "cnnxfer") -> str:
    """The devkit's XML for one image (the VOC2007 layout)."""
    parts = ["<annotation>\n", f"\t<folder>{escape(folder)}</folder>\n",
             f"\t<filename>{escape(image_id)}.jpg</filename>\n",
             f"\t<source>\n\t\t<database>{escape(database)}</database>\n\t</source>\n",
             f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
             f"\t\t<depth>3</depth>\n\t</size>\n", "\t<segmented>0</segmented>\n"]
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"image {image_id}: box {obj.box} of {obj.name!r} is not inside "
                             f"its {width}x{height} image")
        parts += ["\t<object>\n", f"\t\t<name>{escape(obj.name)}</name>\n",
                  "\t\t<pose>Unspecified</pose>\n",
                  f"\t\t<truncated>{int(obj.truncated)}</truncated>\n",
                  f"\t\t<difficult>{int(obj.difficult)}</difficult>\n",
                  f"\t\t<bndbox>\n\t\t\t<xmin>{x0 + 1}</xmin>\n\t\t\t<ymin>{y0 + 1}</ymin>\n"
                  f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n",
                  "\t</object>\n"]
    parts.append("</annotation>\n")
    return "".join(parts)


def image_label(objects: Sequence[ObjectRecord], name: str) -> int:
    """The devkit's image label for a class: 1 (a non-difficult object), 0 (difficult ones
    only), -1 (none)."""
    flags = [obj.difficult for obj in objects if obj.name == name]
    if not flags:
        return -1
    return 0 if all(flags) else 1


def write_image_sets(root: str | Path, split: str, images: Sequence[tuple[str, Sequence]],
                     classes: Sequence[str]) -> None:
    """ImageSets/Main/{split}.txt (one id per line) and {class}_{split}.txt ("id  1", "id -1",
    "id  0" as the devkit writes them) for images given as (id, objects)."""
    folder = Path(root) / "ImageSets" / "Main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id, _ in images))
    for name in classes:
        lines = [f"{image_id} {image_label(objects, name):2d}\n" for image_id, objects in images]
        (folder / f"{name}_{split}.txt").write_text("".join(lines))
