"""Where the time of the paper's recipe goes, per image: features vs head training vs scoring.

    .venv/bin/python benches/voc_timing.py [--train 24] [--test 16] [--dtype bfloat16]
                                           [--device cpu|cuda] [--out DIR]

Writes a VOC-format tree of 500x375 JPEGs (VOC's common size) with coloured squares of three
classes on noise (tests/voc_trees.py writes the XML and ImageSets; the generated VOC world of
the next issue will replace it), a full-width AlexNet with random weights, and runs
cnnxfer.transfer.run_voc with the paper's grid (496 patches per image) and default training (10
epochs). Prints the per-image times that results.json records and the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cnnxfer import nets  # noqa: E402
from cnnxfer.nets import weights  # noqa: E402
from cnnxfer.transfer import FeatureSettings, TrainConfig, run_voc  # noqa: E402

from voc_trees import write_voc_tree  # noqa: E402

COLORS = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}


def scene(rng, image_id: str) -> dict:
    width, height = 500, 375
    objects = []
    for name in COLORS:
        if rng.random() < 0.45:
            side = int(rng.integers(80, 250))
            x, y = int(rng.integers(1, width - side)), int(rng.integers(1, height - side))
            objects.append({"name": name, "box": (x, y, x + side - 1, y + side - 1)})
    return {"id": image_id, "size": (width, height), "objects": objects}


def write_tree(root: Path, train: int, test: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    scenes = {"trainval": [scene(rng, f"{i:06d}") for i in range(train)],
              "test": [scene(rng, f"{1000 + i:06d}") for i in range(test)]}
    tree = root / "VOC2007"
    for split, images in scenes.items():
        write_voc_tree(tree, images, split=split, classes=sorted(COLORS))
    for image in scenes["trainval"] + scenes["test"]:
        width, height = image["size"]
        pixels = rng.integers(60, 160, (height, width, 3)).astype(np.uint8)
        for obj in image["objects"]:
            x0, y0, x1, y1 = obj["box"]  # VOC's 1-based inclusive box
            pixels[y0 - 1:y1, x0 - 1:x1] = COLORS[obj["name"]]
        Image.fromarray(pixels).save(tree / "JPEGImages" / f"{image['id']}.jpg", quality=95)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=24)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--device", default="cpu", help="where features and training run")
    parser.add_argument("--out", help="folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="cnnxfer-voc-timing-"))
    tree = write_tree(root, args.train, args.test)
    net = nets.alexnet("alexnet", seed=0, num_classes=None)
    weights.save(net, root / "net.safetensors")
    start = time.perf_counter()
    results = run_voc(tree, root / "net.safetensors", root / "out",
                      settings=FeatureSettings(dtype=getattr(torch, args.dtype),
                                               device=args.device),
                      config=TrainConfig(epochs=10, device=args.device), progress=False)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import machine

    timing = results["timing"]
    training = results["training"]
    print(f"machine: {machine()}")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}")
    print(f"{args.train} train + {args.test} test images of 500x375, 496 patches each, "
          f"features in {args.dtype} on {args.device}; {training['images']} training images, "
          f"{sum(training['labelled'])} labelled patches, 10 epochs; mAP {results['map']:.3f}; "
          f"{time.perf_counter() - start:.1f} s in all")
    print(json.dumps({key: round(value, 3) for key, value in timing.items()
                      if key.endswith("_per_image")}))


if __name__ == "__main__":
    main()
