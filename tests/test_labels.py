"""Patch labels (cnnxfer.transfer.labels): the paper's rule by hand at its boundaries, against a
plain double loop, background subsampling, the action task's patches, and argument checks."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from cnnxfer.features.grids import paper_grid
from cnnxfer.transfer.labels import label_patches, patches_in_box

BG = 20  # background label with num_classes=20


def label(patches, boxes, classes, difficult=None, fraction=1.0, seed=0, num_classes=20):
    return label_patches(patches, boxes, classes, num_classes=num_classes, difficult=difficult,
                         background_fraction=fraction, seed=seed).tolist()


# --- the rule, by hand ----------------------------------------------------------------------------

def test_equality_at_a_fifth_of_the_patch_qualifies_one_row_less_does_not():
    patch = [0, 0, 10, 10]                       # |P| = 100
    # |P∩B| = 2 * 10 = 20 = 0.2 |P| exactly; |B| = 30, 0.6 |B| = 18 <= 20
    assert label([patch], [[8, 0, 11, 10]], [3]) == [3]
    # one row less: |P∩B| = 18 < 20 (while 18 >= 0.6 * 27 still holds)
    assert label([patch], [[8, 1, 11, 10]], [3]) == [BG]


def test_equality_at_three_fifths_of_the_box_qualifies_one_column_less_does_not():
    box = [0, 0, 5, 1]                           # |B| = 5, 0.6 |B| = 3
    # |P∩B| = 3 exactly; |P| = 10, 0.2 |P| = 2 <= 3
    assert label([[2, 0, 7, 2]], [box], [4]) == [4]
    # one column less: |P∩B| = 2 < 3 (while 2 >= 0.2 * 10 still holds)
    assert label([[3, 0, 8, 2]], [box], [4]) == [BG]


def test_both_equalities_at_once_and_areas_are_of_exclusive_boxes():
    # P = 5x3 = 15 pixels, B = its last column, 3 pixels: 5*3 >= 15 and 5*3 >= 3*3
    assert label([[0, 0, 5, 3]], [[4, 0, 5, 3]], [0]) == [0]
    # touching boxes share no pixel (x1 exclusive): no overlap, background
    assert label([[0, 0, 5, 3]], [[5, 0, 6, 3]], [0]) == [BG]


def test_the_box_inside_a_patch_too_large_for_it_is_background():
    # B fully inside P (|P∩B| = |B|) but only 16% of P: fails 0.2 |P|
    assert label([[0, 0, 10, 10]], [[0, 0, 4, 4]], [1]) == [BG]
    # a patch inside a huge box: 100% of P but 1% of B
    assert label([[0, 0, 10, 10]], [[0, 0, 100, 100]], [1]) == [BG]


def test_two_classes_are_ambiguous_several_boxes_of_one_class_are_not():
    patch = [[0, 0, 10, 10]]
    halves = [[0, 0, 5, 10], [5, 0, 10, 10]]     # each qualifies: 50 of 100, all of itself
    assert label(patch, halves, [0, 1]) == [-1]
    assert label(patch, halves, [2, 2]) == [2]
    # a third box of another class that does not qualify changes nothing
    assert label(patch, halves + [[0, 0, 1, 1]], [2, 2, 7]) == [2]


def test_difficult_boxes():
    patch = [[0, 0, 10, 10]]
    halves = [[0, 0, 5, 10], [5, 0, 10, 10]]
    # only difficult boxes: left out
    assert label(patch, halves[:1], [3], difficult=[True]) == [-1]
    assert label(patch, halves, [3, 3], difficult=[True, True]) == [-1]
    # a non-difficult box of class 3 and a difficult one of class 5: ambiguous, left out
    assert label(patch, halves, [3, 5], difficult=[False, True]) == [-1]
    # difficult and non-difficult boxes of one class: that class
    assert label(patch, halves, [3, 3], difficult=[True, False]) == [3]
    # 0/1 flags (VOC's own encoding) and None
    assert label(patch, halves, [3, 5], difficult=[0, 1]) == [-1]
    assert label(patch, halves[:1], [3], difficult=None) == [3]
    # a difficult box the patch does not qualify for leaves a background patch background
    assert label([[50, 50, 60, 60]], halves, [3, 5], difficult=[True, True]) == [BG]


def test_no_boxes_all_background():
    grid = paper_grid(50, 40)
    for boxes in ([], torch.zeros(0, 4, dtype=torch.int64), np.zeros((0, 4))):
        out = label_patches(grid, boxes, [], num_classes=3, background_fraction=1.0)
        assert out.dtype == torch.int64 and out.device.type == "cpu"
        assert out.tolist() == [3] * len(grid)
    assert label_patches(grid, [], [], num_classes=3, background_fraction=0.0).tolist() == \
        [-1] * len(grid)


def test_no_patches():
    out = label_patches(torch.zeros(0, 4), [[0, 0, 5, 5]], [0], num_classes=2)
    assert out.dtype == torch.int64 and out.shape == (0,)


# --- background subsampling -----------------------------------------------------------------------

def test_background_fraction_keeps_an_exact_deterministic_count():
    grid = paper_grid(500, 375)                  # 496 patches
    boxes, classes = [[100, 80, 300, 300], [350, 200, 480, 360]], [6, 14]
    full = label_patches(grid, boxes, classes, num_classes=20, background_fraction=1.0)
    background = full == 20
    n = int(background.sum())
    assert 0 < n < len(grid)

    none = label_patches(grid, boxes, classes, num_classes=20, background_fraction=0.0)
    assert bool((none[background] == -1).all())
    assert torch.equal(none[~background], full[~background])

    tenth = label_patches(grid, boxes, classes, num_classes=20, background_fraction=0.1)
    assert int((tenth == 20).sum()) == int(np.floor(0.1 * n + 0.5))
    assert torch.equal(tenth[~background], full[~background])   # objects are never subsampled
    assert bool((tenth[background] != -1).sum() == (tenth == 20).sum())
    again = label_patches(grid, boxes, classes, num_classes=20, background_fraction=0.1)
    assert torch.equal(tenth, again)
    other = label_patches(grid, boxes, classes, num_classes=20, background_fraction=0.1, seed=1)
    assert int((other == 20).sum()) == int((tenth == 20).sum())
    assert not torch.equal(other, tenth)


def test_the_subset_is_the_generators_choice():
    # Pinned to torch.randperm on a CPU generator: the same labels on every machine.
    patches = [[i, 0, i + 1, 1] for i in range(10)]
    out = label_patches(patches, [], [], num_classes=1, background_fraction=0.3, seed=7)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(7))[:3]
    expected = torch.full((10,), -1)
    expected[order] = 1
    assert torch.equal(out, expected)


@pytest.mark.parametrize("n,fraction,kept", [(3, 0.1, 1), (5, 0.1, 1), (15, 0.1, 2), (25, 0.1, 3),
                                             (24, 0.1, 2), (10, 1.0, 10), (10, 0.0, 0),
                                             (1, 1e-9, 1), (7, 0.5, 4)])
def test_kept_count_rounds_half_up_and_keeps_at_least_one(n, fraction, kept):
    patches = [[i, 0, i + 1, 1] for i in range(n)]
    out = label_patches(patches, [], [], num_classes=2, background_fraction=fraction)
    assert int((out == 2).sum()) == kept
    assert int((out == -1).sum()) == n - kept


# --- against a plain double loop ------------------------------------------------------------------

def reference_labels(patches, boxes, classes, difficult, num_classes):
    """The rule written out, one patch and one box at a time, before background subsampling."""
    out = []
    for px0, py0, px1, py1 in patches:
        area = (px1 - px0) * (py1 - py0)
        hit_classes, easy_classes = set(), set()
        for (bx0, by0, bx1, by1), c, hard in zip(boxes, classes, difficult):
            inter = (max(0, min(px1, bx1) - max(px0, bx0))
                     * max(0, min(py1, by1) - max(py0, by0)))
            if (inter >= Fraction(1, 5) * area
                    and inter >= Fraction(3, 5) * (bx1 - bx0) * (by1 - by0)):
                hit_classes.add(c)
                if not hard:
                    easy_classes.add(c)
        if not hit_classes:
            out.append(num_classes)
        elif len(hit_classes) == 1 and easy_classes:
            out.append(easy_classes.pop())
        else:
            out.append(-1)
    return out


def random_boxes(generator, count, width, height, max_side=None):
    x0 = torch.randint(0, width - 1, (count,), generator=generator)
    y0 = torch.randint(0, height - 1, (count,), generator=generator)
    limit_w = width - x0 if max_side is None else torch.clamp(width - x0, max=max_side)
    limit_h = height - y0 if max_side is None else torch.clamp(height - y0, max=max_side)
    x1 = x0 + 1 + (torch.rand(count, generator=generator) * limit_w).long().clamp(max=limit_w - 1)
    y1 = y0 + 1 + (torch.rand(count, generator=generator) * limit_h).long().clamp(max=limit_h - 1)
    return torch.stack([x0, y0, x1, y1], dim=1)


@pytest.mark.parametrize("seed", range(4))
def test_matches_the_double_loop_on_random_boxes(seed):
    g = torch.Generator().manual_seed(seed)
    width, height, num_classes = 60, 45, 4
    patches = random_boxes(g, 300, width, height, max_side=30)
    boxes = random_boxes(g, 6, width, height, max_side=25)
    classes = torch.randint(0, num_classes, (6,), generator=g)
    difficult = torch.rand(6, generator=g) < 0.3
    expected = reference_labels(patches.tolist(), boxes.tolist(), classes.tolist(),
                                difficult.tolist(), num_classes)
    got = label_patches(patches, boxes, classes, num_classes=num_classes, difficult=difficult,
                        background_fraction=1.0)
    assert got.tolist() == expected
    # enough of every outcome for the comparison to mean something
    assert len(set(expected)) >= 3, expected


def test_matches_the_double_loop_on_the_paper_grid():
    grid = paper_grid(500, 375)
    boxes = [[40, 60, 220, 330], [200, 90, 330, 300], [300, 10, 490, 200], [0, 250, 120, 375],
             [350, 180, 500, 375]]
    classes = [14, 14, 6, 11, 6]
    difficult = [False, False, False, True, False]
    expected = reference_labels(grid.tolist(), boxes, classes, difficult, 20)
    got = label_patches(grid, torch.tensor(boxes), classes, num_classes=20, difficult=difficult,
                        background_fraction=1.0)
    assert got.tolist() == expected
    assert {14, 6, -1, 20} <= set(expected)
    # with subsampling, only background patches change, to -1
    tenth = label_patches(grid, boxes, classes, num_classes=20, difficult=difficult)
    background = torch.tensor(expected) == 20
    assert tenth[~background].tolist() == got[~background].tolist()
    assert set(tenth[background].tolist()) == {-1, 20}


def test_input_kinds_agree():
    boxes = [[0, 0, 5, 10], [5, 0, 10, 10]]
    patches = [[0, 0, 10, 10], [0, 0, 5, 10], [6, 0, 10, 10]]
    expected = label(patches, boxes, [1, 2])
    assert expected == [-1, 1, 2]
    for kind in (np.array, torch.tensor, lambda v: torch.tensor(v, dtype=torch.float64),
                 lambda v: np.array(v, dtype=np.int32)):
        out = label_patches(kind(patches), kind(boxes), kind([1, 2]), num_classes=20,
                            background_fraction=1.0)
        assert out.dtype == torch.int64 and out.tolist() == expected


# --- errors ---------------------------------------------------------------------------------------

GOOD = dict(patches=[[0, 0, 10, 10]], boxes=[[0, 0, 5, 5]], classes=[1], num_classes=3)


@pytest.mark.parametrize("change,error,match", [
    (dict(patches=[[0, 0, 10]]), ValueError, r"patches must be \[K, 4\].*\(1, 3\)"),
    (dict(patches=[[0, 0, 0, 10]]), ValueError, r"patches\[0\] = .*\(0, 0, 0, 10\).*x0 < x1"),
    (dict(patches=[[0, 0, 3, 3], [0, 5, 3, 5]]), ValueError, r"patches\[1\].*y0 < y1"),
    (dict(patches=[[0, 0, 2.5, 3]]), ValueError, r"patches\[0\].*integer"),
    (dict(patches=[[0, 0, float("nan"), 3]]), ValueError, r"patches\[0\].*integer"),
    (dict(patches=[[0, 0, 2**40, 3]]), ValueError, r"patches\[0\].*2\*\*28"),
    (dict(patches=[[True, False, True, True]]), TypeError, r"patches.*torch.bool"),
    (dict(patches="boxes"), TypeError, r"patches must be a tensor"),
    (dict(boxes=[[0, 0, 5]]), ValueError, r"boxes must be \[K, 4\]"),
    (dict(boxes=[[5, 0, 4, 5]]), ValueError, r"boxes\[0\].*x0 < x1"),
    (dict(classes=[1, 2]), ValueError, r"classes must be a 1-D sequence of 1 .*shape \(2,\)"),
    (dict(classes=1), ValueError, r"classes must be a 1-D sequence"),
    (dict(classes=[3]), ValueError, r"classes\[0\] = 3 must be a class index in 0..2"),
    (dict(classes=[-1]), ValueError, r"classes\[0\] = -1"),
    (dict(classes=[1.5]), ValueError, r"classes\[0\] = 1.5 must be an integer"),
    (dict(classes=[True]), TypeError, r"classes must hold class indices"),
    (dict(num_classes=0), ValueError, r"num_classes must be a positive integer, got 0"),
    (dict(num_classes=2.0), TypeError, r"num_classes must be a positive integer"),
    (dict(num_classes=True), TypeError, r"num_classes"),
    (dict(difficult=[True, False]), ValueError, r"difficult must be a 1-D sequence of 1"),
    (dict(difficult=[2]), ValueError, r"difficult\[0\] = 2 must be a flag"),
    (dict(background_fraction=1.5), ValueError, r"background_fraction must be in \[0, 1\]"),
    (dict(background_fraction=-0.1), ValueError, r"background_fraction"),
    (dict(background_fraction=float("nan")), ValueError, r"background_fraction must be finite"),
    (dict(background_fraction="0.1"), TypeError, r"background_fraction must be a real"),
    (dict(seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
    (dict(seed=1.0), TypeError, r"seed must be an integer"),
])
def test_errors_name_the_argument(change, error, match):
    arguments = {**GOOD, **change}
    patches, boxes, classes = (arguments.pop(k) for k in ("patches", "boxes", "classes"))
    with pytest.raises(error, match=match):
        label_patches(patches, boxes, classes, **arguments)


# --- patches_in_box -------------------------------------------------------------------------------

def test_patches_half_inside_the_enlarged_box():
    # box (40, 40, 60, 60), x 1.5 about (50, 50): E = (35, 35, 65, 65)
    patches = [[35, 35, 45, 45],    # all inside
               [30, 35, 40, 45],    # 5 of 10 columns inside: exactly half
               [29, 35, 39, 45],    # 4 of 10: less than half
               [60, 60, 70, 70],    # 25 of 100
               [0, 0, 100, 100]]    # 900 of 10000
    out = patches_in_box(patches, [40, 40, 60, 60], width=100, height=100)
    assert out.dtype == torch.bool and out.tolist() == [True, True, False, False, False]
    # enlarge=1 is the box itself, which no patch half fills: the best IoU, (35, 35, 45, 45)
    # with 25 / 475, beats the whole image's 400 / 10000
    out = patches_in_box(patches, [40, 40, 60, 60], enlarge=1.0, width=100, height=100)
    assert out.tolist() == [True, False, False, False, False]
    # larger factor: (20, 20, 80, 80) takes (60, 60, 70, 70) in, not yet the whole image
    out = patches_in_box(patches, [40, 40, 60, 60], enlarge=3, width=100, height=100)
    assert out.tolist() == [True, True, True, True, False]


def test_enlarged_box_rounds_outwards_and_is_clipped():
    # (10, 10, 11, 11) x 1.5: 9.75 .. 11.25 -> E = (9, 9, 12, 12), 9 pixels
    square = [[9, 9, 12, 12], [8, 9, 11, 12], [7, 9, 10, 12]]   # 9, 6, 3 pixels of E
    out = patches_in_box(square, [10, 10, 11, 11], width=20, height=20)
    assert out.tolist() == [True, True, False]
    # (0, 0, 4, 4) x 1.5: -1 .. 5 -> clipped to (0, 0, 5, 5): a patch over the border is judged
    # by its pixels in the image's part of E
    out = patches_in_box([[0, 0, 5, 5], [0, 0, 6, 6], [0, 0, 8, 8]], [0, 0, 4, 4],
                         width=8, height=8)
    assert out.tolist() == [True, True, False]


def test_no_patch_qualifies_the_best_iou_is_taken():
    patches = [[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100], [0, 0, 50, 50]]
    # E = (44, 9, 48, 13): inside patch 0 (and its duplicate 3), a sliver of nothing else
    out = patches_in_box(patches, [45, 10, 47, 12], width=100, height=100)
    assert out.tolist() == [True, False, False, False]        # ties: the lowest index
    # E straddles patches 0 and 1, more of it in patch 1
    out = patches_in_box(patches, [48, 10, 54, 12], width=100, height=100)
    assert out.tolist() == [False, True, False, False]
    assert patches_in_box(torch.zeros(0, 4), [1, 1, 2, 2], width=5, height=5).shape == (0,)


def reference_in_box(patches, box, enlarge, width, height):
    """E as a pixel mask: the pixels whose square meets the enlarged (real) box."""
    x0, y0, x1, y1 = (Fraction(v) for v in box)
    f = Fraction(enlarge)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, f * (x1 - x0) / 2, f * (y1 - y0) / 2
    cols = [cx - hw < x + 1 and x < cx + hw for x in range(width)]
    rows = [cy - hh < y + 1 and y < cy + hh for y in range(height)]
    mask = np.outer(rows, cols)
    inside = [int(mask[b[1]:b[3], b[0]:b[2]].sum()) for b in patches]
    chosen = [2 * n >= (b[2] - b[0]) * (b[3] - b[1]) for n, b in zip(inside, patches)]
    if patches and not any(chosen):
        area = int(mask.sum())
        iou = [Fraction(n, (b[2] - b[0]) * (b[3] - b[1]) + area - n)
               for n, b in zip(inside, patches)]
        chosen[iou.index(max(iou))] = True
    return chosen


@pytest.mark.parametrize("seed", range(3))
def test_patches_in_box_matches_a_pixel_mask(seed):
    g = torch.Generator().manual_seed(seed)
    width, height = 70, 50
    patches = random_boxes(g, 200, width, height, max_side=25).tolist()
    for box in random_boxes(g, 8, width, height, max_side=30).tolist():
        for enlarge in (1.0, 1.5, 1.3, 2.0):
            expected = reference_in_box(patches, box, enlarge, width, height)
            got = patches_in_box(patches, box, enlarge=enlarge, width=width, height=height)
            assert got.tolist() == expected, (box, enlarge)
    grid = paper_grid(width, height).tolist()
    assert patches_in_box(grid, [1, 1, 3, 3], width=width, height=height).tolist() == \
        reference_in_box(grid, [1, 1, 3, 3], 1.5, width, height)


@pytest.mark.parametrize("change,error,match", [
    (dict(box=[0, 0, 5]), ValueError, r"box must be 4 numbers"),
    (dict(box=[0, 0, 21, 5]), ValueError, r"box = .*\(0, 0, 21, 5\).*width=20"),
    (dict(box=[3, 0, 3, 5]), ValueError, r"box = .*0 <= x0 < x1"),
    (dict(box=[0, 0, 2.5, 5]), ValueError, r"box\[2\] = 2.5 must be an integer"),
    (dict(patches=[[0, 0, 30, 5]]), ValueError, r"patches\[0\].*width=20"),
    (dict(enlarge=0.5), ValueError, r"enlarge must be >= 1"),
    (dict(enlarge=True), TypeError, r"enlarge must be a real number"),
    (dict(enlarge=float("inf")), ValueError, r"enlarge must be finite"),
    (dict(width=0), ValueError, r"width must be a positive integer, got 0"),
    (dict(height=1.5), TypeError, r"height must be a positive integer"),
])
def test_patches_in_box_errors(change, error, match):
    arguments = {"patches": [[0, 0, 5, 5]], "box": [1, 1, 4, 4], "width": 20, "height": 10,
                 **change}
    with pytest.raises(error, match=match):
        patches_in_box(arguments.pop("patches"), arguments.pop("box"), **arguments)
