"""Score-map overlays (cnnxfer.transfer.maps): a valid PNG per call, one panel per class, no
pyplot state, and argument checks."""
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from cnnxfer.transfer.maps import save_overlay

NAMES = ["cat", "dog", "bus", "car", "cow"]


def image_and_maps(width=40, height=30, classes=5):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    maps = torch.rand(classes, height, width, generator=g)
    return image, maps


def png_size(path):
    with Image.open(path) as png:
        assert png.format == "PNG"
        png.load()           # decodes the whole file: a truncated PNG fails here
        return png.size


def test_writes_a_png_and_returns_its_path(tmp_path):
    image, maps = image_and_maps()
    out = save_overlay(str(tmp_path / "a.png"), image, maps, NAMES, classes=["dog"])
    assert out == tmp_path / "a.png" and out.stat().st_size > 0
    width, height = png_size(out)
    assert width > 0 and height > 0
    with Image.open(out) as png:   # not one flat colour: the image and the map are drawn
        assert len(png.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_one_panel_per_class_in_rows_of_four(tmp_path):
    image, maps = image_and_maps()
    sizes = {n: png_size(save_overlay(tmp_path / f"{n}.png", image, maps, NAMES,
                                      classes=list(range(n)))) for n in (1, 2, 3, 4)}
    widths = [sizes[n][0] for n in (1, 2, 3, 4)]
    assert widths == sorted(widths) and len(set(widths)) == 4          # wider with each panel
    assert widths[1] - widths[0] == pytest.approx(widths[0], abs=2)   # by one panel's width
    assert len({sizes[n][1] for n in sizes}) == 1
    # the default draws every class: the fifth panel wraps onto a second row
    every = png_size(save_overlay(tmp_path / "all.png", image, maps, NAMES))
    assert every[0] == sizes[4][0] and every[1] > sizes[4][1]


def test_image_layouts_names_and_indices_and_zero_maps(tmp_path):
    image, maps = image_and_maps()
    chw = save_overlay(tmp_path / "chw.png", image, maps, NAMES, classes=["cow", 0])
    hwc = save_overlay(tmp_path / "hwc.png", image.permute(1, 2, 0).numpy(), maps.numpy(),
                       NAMES, classes=[torch.tensor(4), "cat"], alpha=0.3, cmap="viridis")
    assert png_size(chw) == png_size(hwc)
    best = maps.amax(dim=(1, 2)).topk(2).indices        # a tensor of indices, as topk gives
    top = save_overlay(tmp_path / "top.png", image, maps, NAMES, classes=best)
    assert png_size(top) == png_size(chw)
    # all-zero maps: the scale falls back to [0, 1] rather than an empty range
    zero = save_overlay(tmp_path / "zero.PNG", image, torch.zeros_like(maps), NAMES,
                        classes=["bus"])
    png_size(zero)


def test_no_pyplot_and_threads(tmp_path):
    had_pyplot = "matplotlib.pyplot" in sys.modules
    image, maps = image_and_maps()
    errors = []

    def draw(i):
        try:
            save_overlay(tmp_path / f"t{i}.png", image, maps, NAMES, classes=[i])
        except Exception as error:  # reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({png_size(tmp_path / f"t{i}.png") for i in range(3)}) == 1
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


@pytest.mark.parametrize("change,error,match", [
    (dict(classes=["horse"]), ValueError, r"classes\[0\] = 'horse' is not a class name"),
    (dict(classes=[5]), ValueError, r"classes\[0\] = 5 must be a class index in 0..4"),
    (dict(classes=[1, "dog"]), ValueError, r"classes\[1\] = 'dog' repeats class 'dog'"),
    (dict(classes=[]), ValueError, r"at least one class"),
    (dict(classes="dog"), TypeError, r"classes must be a list"),
    (dict(classes=[1.0]), TypeError, r"classes\[0\] must be a class name"),
    (dict(classes=[True]), TypeError, r"classes\[0\] must be a class name"),
    (dict(classes=[np.int64(-1)]), ValueError, r"classes\[0\] = -1 must be a class index"),
    (dict(maps=torch.rand(5, 30, 41)), ValueError, r"maps must have the image's size"),
    (dict(maps=torch.rand(30, 40)), ValueError, r"maps must be \[C, H, W\]"),
    (dict(maps=torch.full((5, 30, 40), float("nan"))), ValueError,
     r"maps\[0, 0, 0\] = nan must be finite"),
    (dict(class_names=NAMES[:4]), ValueError, r"class_names must name each of the maps' 5"),
    (dict(class_names="cat"), TypeError, r"class_names must be a sequence"),
    (dict(image=torch.rand(3, 30, 40)), TypeError, r"image must be uint8"),
    (dict(image=torch.zeros(30, 40, 3, dtype=torch.uint8)), ValueError,
     r"image as a tensor must be \[3, H, W\]"),
    (dict(image=np.zeros((3, 30, 40), np.uint8)), ValueError,
     r"image as an array must be \[H, W, 3\]"),
    (dict(alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    (dict(alpha="0.5"), TypeError, r"alpha must be a real number"),
    (dict(cmap="no-such-map"), ValueError, r"cmap must be a matplotlib colour map name"),
    (dict(path="out.jpg"), ValueError, r"path must end in .png"),
])
def test_errors(tmp_path, change, error, match):
    image, maps = image_and_maps()
    arguments = {"path": tmp_path / "x.png", "image": image, "maps": maps, "class_names": NAMES,
                 **change}
    if "path" in change:
        arguments["path"] = tmp_path / change["path"]
    with pytest.raises(error, match=match):
        save_overlay(arguments.pop("path"), arguments.pop("image"), arguments.pop("maps"),
                     arguments.pop("class_names"), **arguments)
    assert not (tmp_path / "x.png").exists()
