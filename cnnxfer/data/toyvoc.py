"""A small generated world in which the paper's question can be asked, with nothing downloaded.

    world = toyvoc.generate("world", seed=0)      # world.root: a VOC-format tree, world.source
    split = data.load_split(world.root, "test")   # read like VOC

Two tasks share their mid-level structure (edges, corners, textures, colours) but not their
classes, as ImageNet and Pascal VOC do:

- the source task: many object-centred images (`source_size` pixels square, one shape of one of
  SOURCE_CLASSES each, on a texture or photograph crop), with a label per image, written as
  `source.safetensors` ("images" uint8 [N, 3, S, S], "labels" int64 [N]; the class names in the
  metadata). Plenty of labels, for pretraining a network.
- the target task: scenes in the real VOCdevkit layout (`VOCtoy/`: JPEGImages, Annotations with
  difficult and truncated flags, ImageSets/Main with the per-class files; splits train, val,
  trainval and test) of TARGET_CLASSES. Each scene holds one to four objects of several sizes on a
  crop of a real photograph (the images scikit-image ships), partly occluding each other or cut by
  the border; the smallest ones are flagged difficult. The photographs are colour-shifted (the
  statistics shift between source and target). Few labels: a few dozen training images.

Every shape is filled with a texture drawn from one shared family (plain, stripes, checks, dots,
gradient), so a network that learnt the source task has seen the target's parts, not its classes.
The output is deterministic from the seed, byte for byte, for a given Pillow and scikit-image.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .voc_write import ObjectRecord, annotation_xml, write_image_sets

TARGET_CLASSES = ("cross", "disc", "ring", "square", "star", "triangle")
SOURCE_CLASSES = ("arrow", "chevron", "crescent", "diamond", "ellipse", "heart", "hexagon",
                  "octagon", "pentagon", "trapezoid")
# scikit-image's own photographs and textures (shipped in its wheel, none fetched)
_PHOTOS = ("astronaut", "cat", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
           "retina", "camera", "clock", "coins", "moon")
_TEXTURES = ("brick", "grass", "gravel")
DIFFICULT_SIDE = 0.16   # an object smaller than this share of the short side is 'difficult'
TREE_NAME = "VOCtoy"
SPLITS = {"train": 0.35, "val": 0.15, "test": 0.5}


@dataclass(frozen=True)
class World:
    """Where a generated world is: the VOC-format tree and the source task's file."""

    root: Path
    source: Path
    target_classes: tuple[str, ...] = TARGET_CLASSES
    source_classes: tuple[str, ...] = SOURCE_CLASSES


# ------------------------------------------------------------------ shapes and textures

def _polygon(kind: str) -> list[tuple[float, float]]:
    """The outline of a shape in the unit square, as (x, y) points."""
    def regular(n, start=-math.pi / 2, radius=0.5):
        return [(0.5 + radius * math.cos(start + 2 * math.pi * i / n),
                 0.5 + radius * math.sin(start + 2 * math.pi * i / n)) for i in range(n)]

    if kind == "square":
        return [(0.05, 0.05), (0.95, 0.05), (0.95, 0.95), (0.05, 0.95)]
    if kind == "triangle":
        return [(0.5, 0.03), (0.97, 0.95), (0.03, 0.95)]
    if kind == "star":
        outer, inner = regular(5), regular(5, -math.pi / 2 + math.pi / 5, 0.2)
        return [p for pair in zip(outer, inner) for p in pair]
    if kind == "cross":
        a, b = 0.32, 0.68
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b),
                (0, a), (a, a)]
    if kind == "diamond":
        return [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]
    if kind == "hexagon":
        return regular(6, 0)
    if kind == "octagon":
        return regular(8, math.pi / 8)
    if kind == "pentagon":
        return regular(5)
    if kind == "trapezoid":
        return [(0.25, 0.15), (0.75, 0.15), (1, 0.85), (0, 0.85)]
    if kind == "arrow":
        return [(0, 0.35), (0.55, 0.35), (0.55, 0.1), (1, 0.5), (0.55, 0.9), (0.55, 0.65),
                (0, 0.65)]
    if kind == "chevron":
        return [(0, 0), (0.45, 0), (1, 0.5), (0.45, 1), (0, 1), (0.55, 0.5)]
    if kind == "heart":
        points = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((0.5 + x / 34, 0.45 - y / 34))
        return points
    raise ValueError(f"unknown shape {kind!r}")


def shape_mask(kind: str, side: int) -> np.ndarray:
    """bool [side, side]: the pixels of a shape drawn to fill a side x side box."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    box = [0, 0, side - 1, side - 1]
    if kind in ("disc", "ellipse", "ring", "crescent"):
        if kind == "ellipse":
            box = [0, side * 0.2, side - 1, side * 0.8]
        draw.ellipse(box, fill=255)
        if kind == "ring":
            inset = side * 0.28
            draw.ellipse([inset, inset, side - 1 - inset, side - 1 - inset], fill=0)
        if kind == "crescent":
            draw.ellipse([side * 0.3, -side * 0.05, side * 1.1, side * 0.85], fill=0)
    else:
        draw.polygon([(x * (side - 1), y * (side - 1)) for x, y in _polygon(kind)], fill=255)
    return np.asarray(canvas) > 127


def _colour(rng) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def texture(height: int, width: int, rng) -> np.ndarray:
    """float32 [height, width, 3] in 0..255: one of the shared fills, in one or two colours."""
    first, second = _colour(rng), _colour(rng)
    kind = rng.integers(0, 5)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # plain
        weight = np.zeros((height, width), np.float32)
    elif kind == 1:  # stripes at an angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(3, 9)
        weight = ((np.cos(angle) * xx + np.sin(angle) * yy) // period % 2).astype(np.float32)
    elif kind == 2:  # checks
        period = rng.uniform(3, 9)
        weight = ((xx // period + yy // period) % 2).astype(np.float32)
    elif kind == 3:  # dots
        period = rng.uniform(4, 9)
        dx, dy = (xx % period) - period / 2, (yy % period) - period / 2
        weight = (dx * dx + dy * dy < (period / 3.2) ** 2).astype(np.float32)
    else:  # gradient
        angle = rng.uniform(0, 2 * math.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    return first * (1 - weight[..., None]) + second * weight[..., None]


# ------------------------------------------------------------------ backgrounds

class _Backgrounds:
    """Crops of scikit-image's photographs (target scenes) and textures (source images)."""

    def __init__(self):
        import skimage.data

        def rgb(name):
            image = np.asarray(getattr(skimage.data, name)())
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            return image[..., :3].astype(np.uint8)

        self.photos = [rgb(name) for name in _PHOTOS]
        self.textures = [rgb(name) for name in _TEXTURES]

    @staticmethod
    def crop(images, height: int, width: int, rng) -> np.ndarray:
        """float32 [height, width, 3]: a random crop of a random image, rescaled by a random
        factor first (nearest neighbour: cheap, and deterministic)."""
        image = images[rng.integers(0, len(images))]
        scale = rng.uniform(0.5, 1.5)
        h = max(height, int(round(image.shape[0] * scale)))
        w = max(width, int(round(image.shape[1] * scale)))
        rows = (np.arange(h) * image.shape[0] / h).astype(np.int64)
        cols = (np.arange(w) * image.shape[1] / w).astype(np.int64)
        y, x = rng.integers(0, h - height + 1), rng.integers(0, w - width + 1)
        return image[rows[y:y + height]][:, cols[x:x + width]].astype(np.float32)


def _colour_shift(pixels: np.ndarray, rng) -> np.ndarray:
    """The target's statistics shift: a random gain per channel and a gamma."""
    gain = rng.uniform(0.75, 1.25, 3).astype(np.float32)
    gamma = rng.uniform(0.7, 1.4)
    return 255.0 * np.clip(pixels * gain / 255.0, 0, 1) ** gamma


# ------------------------------------------------------------------ scenes

def _paste(canvas: np.ndarray, kind: str, x: int, y: int, side: int, rng) -> np.ndarray:
    """Draws a textured shape with its box's top-left at (x, y) (possibly outside the canvas);
    returns the bool mask of the canvas pixels it covers."""
    height, width = canvas.shape[:2]
    mask = shape_mask(kind, side)
    fill = texture(side, side, rng)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    covered = np.zeros((height, width), bool)
    if x0 >= x1 or y0 >= y1:
        return covered
    part = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    region = canvas[y0:y1, x0:x1]
    region[part] = fill[y0 - y:y1 - y, x0 - x:x1 - x][part]
    covered[y0:y1, x0:x1] = part
    return covered


def render_scene(rng, width: int, height: int, backgrounds: _Backgrounds
                 ) -> tuple[np.ndarray, list[ObjectRecord]]:
    """A target scene: uint8 [height, width, 3] and its objects (boxes of their visible pixels,
    cnnxfer convention)."""
    canvas = _colour_shift(backgrounds.crop(backgrounds.photos, height, width, rng), rng)
    short = min(width, height)
    placed = []  # (kind, full mask in the canvas)
    for _ in range(int(rng.integers(1, 5))):
        kind = TARGET_CLASSES[rng.integers(0, len(TARGET_CLASSES))]
        side = int(round(short * rng.uniform(0.12, 0.6)))
        # a third of the objects may be cut by the border
        slack = side // 3 if rng.random() < 1 / 3 else 0
        x = int(rng.integers(-slack, width - side + slack + 1))
        y = int(rng.integers(-slack, height - side + slack + 1))
        full = int(shape_mask(kind, side).sum())
        covered = _paste(canvas, kind, x, y, side, rng)
        placed = [(k, m & ~covered, f, s) for k, m, f, s in placed]  # later ones occlude
        placed.append((kind, covered, full, side))
    objects = []
    for kind, visible, full, side in placed:
        count = int(visible.sum())
        if count < 0.15 * full or count == 0:
            continue  # hidden: not annotated, as VOC does not annotate what cannot be seen
        rows, cols = np.nonzero(visible.any(axis=1))[0], np.nonzero(visible.any(axis=0))[0]
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        objects.append(ObjectRecord(kind, box, difficult=side < DIFFICULT_SIDE * short,
                                    truncated=count < 0.7 * full))
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), objects


def render_source(rng, side: int, backgrounds: _Backgrounds) -> tuple[np.ndarray, int]:
    """A source image: uint8 [side, side, 3] of one centred shape, and its class index."""
    label = int(rng.integers(0, len(SOURCE_CLASSES)))
    pool = backgrounds.textures if rng.random() < 0.5 else backgrounds.photos
    canvas = backgrounds.crop(pool, side, side, rng)
    size = int(round(side * rng.uniform(0.45, 0.9)))
    jitter = (side - size) // 2
    x = jitter + int(rng.integers(-jitter // 2, jitter // 2 + 1))
    y = jitter + int(rng.integers(-jitter // 2, jitter // 2 + 1))
    _paste(canvas, SOURCE_CLASSES[label], x, y, size, rng)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), label


# ------------------------------------------------------------------ the world

def generate(out: str | Path, *, seed: int = 0, images: int = 200, size: tuple[int, int] =
             (160, 120), source_images: int = 4000, source_size: int = 64,
             progress: bool = False) -> World:
    """Writes the world into `out` (created) and returns where it is.

    Args:
        images: target scenes, split into train / val / test (35% / 15% / 50%; trainval is
            train + val, as VOC's).
        size: the scenes' (width, height) in pixels.
        source_images, source_size: the source task's images and their side in pixels.
    The same arguments give the same bytes (world.json records them).
    """
    from PIL import Image
    from safetensors.torch import save_file
    from tqdm import tqdm

    width, height = (int(v) for v in size)
    if images < 4 or width < 32 or height < 32 or source_images < len(SOURCE_CLASSES) \
            or source_size < 16:
        raise ValueError(f"a world needs images >= 4, size >= 32x32, source_images >= "
                         f"{len(SOURCE_CLASSES)}, source_size >= 16; got images={images}, "
                         f"size={width}x{height}, source_images={source_images}, "
                         f"source_size={source_size}")
    out = Path(out)
    root = out / TREE_NAME
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    backgrounds = _Backgrounds()
    # separate streams: changing the number of source images leaves the scenes as they were
    scene_rng = np.random.default_rng([seed, 1])
    source_rng = np.random.default_rng([seed, 2])

    records = []
    for index in tqdm(range(images), desc="scenes", unit="image", disable=not progress):
        pixels, objects = render_scene(scene_rng, width, height, backgrounds)
        image_id = f"{index:06d}"
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            annotation_xml(image_id, width, height, objects, folder=TREE_NAME,
                           database="cnnxfer toyvoc"))
        records.append((image_id, objects))
    counts = {name: round(share * images) for name, share in SPLITS.items()}
    counts["test"] = images - counts["train"] - counts["val"]
    start, parts = 0, {}
    for name in SPLITS:
        parts[name] = records[start:start + counts[name]]
        start += counts[name]
    parts["trainval"] = parts["train"] + parts["val"]
    for name, part in parts.items():
        write_image_sets(root, name, part, TARGET_CLASSES)

    pixels, labels = [], []
    for _ in tqdm(range(source_images), desc="source images", unit="image",
                  disable=not progress):
        image, label = render_source(source_rng, source_size, backgrounds)
        pixels.append(image)
        labels.append(label)
    import torch

    source = out / "source.safetensors"
    save_file({"images": torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(),
               "labels": torch.tensor(labels, dtype=torch.int64)}, str(source),
              metadata={"classes": json.dumps(list(SOURCE_CLASSES))})
    settings = {"seed": seed, "images": images, "size": [width, height],
                "source_images": source_images, "source_size": source_size,
                "target_classes": list(TARGET_CLASSES), "source_classes": list(SOURCE_CLASSES),
                "splits": {name: len(part) for name, part in parts.items()}}
    (out / "world.json").write_text(json.dumps(settings, indent=1) + "\n")
    return World(root, source)


def load_source(path: str | Path):
    """(images uint8 [N, 3, S, S], labels int64 [N], class names) of a world's source task."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as handle:
        classes = tuple(json.loads((handle.metadata() or {})["classes"]))
        return handle.get_tensor("images"), handle.get_tensor("labels"), classes
