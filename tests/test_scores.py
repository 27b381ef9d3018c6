"""Image scores, score maps and localization (cnnxfer.transfer.scores): hand cases, the batched
form against a loop over images, the maps against a plain loop, and argument checks."""
import numpy as np
import pytest
import torch

from cnnxfer.features.grids import paper_grid
from cnnxfer.transfer.scores import (
    image_scores,
    localization_accuracy,
    localization_hits,
    score_maps,
)

# --- image_scores ---------------------------------------------------------------------------------


def test_k1_is_the_mean_and_k5_by_hand():
    probs = torch.tensor([[0.2, 1.0, 0.0], [0.4, 0.0, 0.0]])
    out = image_scores(probs, k=1)
    assert out.dtype == torch.float32 and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([0.3, 0.5, 0.0]))
    # (0.5**5 + 1**5) / 2 = (0.03125 + 1) / 2, exactly
    assert image_scores([[0.5], [1.0]]).tolist() == [0.515625]
    assert image_scores([[0.5], [1.0]], k=5).tolist() == [0.515625]
    # a real exponent: (0.25**1.5 + 1) / 2 = (0.125 + 1) / 2
    assert image_scores(np.array([[0.25], [1.0]]), k=1.5).tolist() == [0.5625]
    # one patch: its own probability to the k
    assert image_scores([[0.5, 0.25]], k=2).tolist() == [0.25, 0.0625]


def test_a_large_k_is_computed_in_float64():
    probs = torch.rand(500, 21, generator=torch.Generator().manual_seed(0))
    expected = probs.double().pow(40).mean(0).float()
    assert torch.equal(image_scores(probs, k=40), expected)


def test_counts_equals_one_image_at_a_time():
    g = torch.Generator().manual_seed(1)
    counts = [3, 1, 5, 2]
    probs = torch.rand(sum(counts), 6, generator=g)
    for k in (1, 5, 2.5):
        batched = image_scores(probs, k, counts=counts)
        assert batched.shape == (4, 6) and batched.dtype == torch.float32
        singles = torch.stack([image_scores(part, k) for part in probs.split(counts)])
        torch.testing.assert_close(batched, singles, rtol=0, atol=1e-7)
    for kind in (torch.tensor, np.array, tuple):
        torch.testing.assert_close(image_scores(probs, counts=kind(counts)),
                                   image_scores(probs, counts=counts))
    assert image_scores(torch.zeros(0, 6), counts=[]).shape == (0, 6)


@pytest.mark.parametrize("call,error,match", [
    (lambda: image_scores(torch.zeros(0, 3)), ValueError, r"image 0 has no patches"),
    (lambda: image_scores(torch.rand(4, 3), counts=[2, 0, 2]), ValueError,
     r"counts\[1\] = 0: image 1 has no patches"),
    (lambda: image_scores(torch.rand(4, 3), counts=[2, 1]), ValueError,
     r"counts must sum to the 4 rows of patch_probs, got 3"),
    (lambda: image_scores(torch.rand(4, 3), counts=[5, -1]), ValueError, r"counts\[1\] = -1"),
    (lambda: image_scores(torch.rand(4, 3), counts=[2.0, 2.0]), TypeError, r"counts must hold"),
    (lambda: image_scores(torch.rand(4, 3), counts=[[4]]), ValueError, r"counts must be 1-D"),
    (lambda: image_scores(torch.rand(4, 3), k=0), ValueError, r"k must be a positive number"),
    (lambda: image_scores(torch.rand(4, 3), k=-2), ValueError, r"got -2"),
    (lambda: image_scores(torch.rand(4, 3), k=True), TypeError, r"k must be a real number"),
    (lambda: image_scores(torch.rand(4, 3), k=float("nan")), ValueError, r"k must be finite"),
    (lambda: image_scores(torch.rand(4)), ValueError, r"patch_probs must be \[M, C\]"),
    (lambda: image_scores([[0.5, 1.5]]), ValueError,
     r"patch_probs\[0, 1\] = 1.5 must be a probability in \[0, 1\]"),
    (lambda: image_scores([[0.5, float("nan")]]), ValueError, r"patch_probs\[0, 1\] = nan"),
    (lambda: image_scores([[-0.1]]), ValueError, r"patch_probs\[0, 0\]"),
    (lambda: image_scores(torch.ones(2, 2, dtype=torch.bool)), TypeError, r"torch.bool"),
])
def test_image_scores_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- score_maps -----------------------------------------------------------------------------------

def reference_maps(boxes, probs, width, height):
    """The plain loop, in float64: each patch adds its scores over its pixels."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    sums = torch.zeros(probs.shape[1], height, width, dtype=torch.float64)
    counts = torch.zeros(height, width, dtype=torch.float64)
    for (x0, y0, x1, y1), p in zip(torch.as_tensor(boxes).reshape(-1, 4).tolist(), probs):
        sums[:, y0:y1, x0:x1] += p[:, None, None]
        counts[y0:y1, x0:x1] += 1
    return torch.where(counts > 0, sums / counts.clamp(min=1), 0.0)


def random_boxes(generator, count, width, height):
    x0 = torch.randint(0, width, (count,), generator=generator)
    y0 = torch.randint(0, height, (count,), generator=generator)
    x1 = x0 + 1 + (torch.rand(count, generator=generator) * (width - x0)).long()
    y1 = y0 + 1 + (torch.rand(count, generator=generator) * (height - y0)).long()
    return torch.stack([x0, y0, x1.clamp(max=width), y1.clamp(max=height)], dim=1)


@pytest.mark.parametrize("width,height,count,classes", [
    (1, 1, 3, 2), (1, 7, 4, 1), (9, 1, 5, 3), (13, 11, 20, 4), (40, 30, 60, 21), (2, 2, 1, 5)])
def test_score_maps_matches_the_loop(width, height, count, classes):
    g = torch.Generator().manual_seed(width * 100 + height)
    boxes = random_boxes(g, count, width, height)
    probs = torch.rand(count, classes, generator=g)
    got = score_maps(boxes, probs, width, height)
    assert got.shape == (classes, height, width) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference_maps(boxes, probs, width, height),
                               rtol=0, atol=1e-7)


def test_boxes_on_the_edges_and_uncovered_pixels():
    # one box in each corner, one along the bottom edge; pixel (2, 2) of the 5x5 image is free
    boxes = [[0, 0, 2, 2], [3, 0, 5, 2], [0, 3, 2, 5], [3, 3, 5, 5], [0, 4, 5, 5]]
    probs = [[0.1], [0.2], [0.3], [0.4], [0.9]]
    got = score_maps(boxes, probs, 5, 5)
    torch.testing.assert_close(got.double(), reference_maps(boxes, probs, 5, 5), rtol=0,
                               atol=1e-7)
    assert got[0, 2, 2] == 0 and got[0, 0, 2] == 0
    torch.testing.assert_close(got[0, 4, 0], torch.tensor(0.6))      # (0.3 + 0.9) / 2
    torch.testing.assert_close(got[0, 4, 2], torch.tensor(0.9))
    # the whole image
    assert torch.equal(score_maps([[0, 0, 5, 5]], [[0.25, 1.0]], 5, 5),
                       torch.tensor([0.25, 1.0]).reshape(2, 1, 1).expand(2, 5, 5))


def test_no_patches_give_zero_maps():
    got = score_maps(torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0, 3), 6, 4)
    assert got.shape == (3, 4, 6) and not bool(got.any())
    assert score_maps([], np.zeros((0, 2)), 1, 1).tolist() == [[[0.0]], [[0.0]]]


def test_the_paper_grid_and_other_inputs():
    grid = paper_grid(64, 48)
    probs = torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(3))
    expected = reference_maps(grid, probs, 64, 48)
    torch.testing.assert_close(score_maps(grid, probs, 64, 48).double(), expected, rtol=0,
                               atol=1e-7)
    torch.testing.assert_close(score_maps(grid.numpy(), probs.double().numpy(), 64, 48).double(),
                               expected, rtol=0, atol=1e-7)
    assert bool((expected > 0).all())  # the grid covers the image


def float32_difference_maps(boxes, probs, width, height):
    """score_maps' algorithm with float32 sums: what the float64 accumulation avoids."""
    x0, y0, x1, y1 = boxes.unbind(1)
    corners = torch.cat([y0 * (width + 1) + x0, y0 * (width + 1) + x1,
                         y1 * (width + 1) + x0, y1 * (width + 1) + x1])
    p = probs.t().float()
    sums = torch.zeros(probs.shape[1], (height + 1) * (width + 1)).index_add_(
        1, corners, torch.cat([p, -p, -p, p], dim=1))
    sums = sums.view(-1, height + 1, width + 1).cumsum(1).cumsum(2)[:, :height, :width]
    covering = reference_maps(boxes, torch.ones(len(boxes), 1), width, height)  # 1 or 0
    counts = torch.zeros(height, width)
    for bx0, by0, bx1, by1 in boxes.tolist():
        counts[by0:by1, bx0:bx1] += 1
    return torch.where(covering[0] > 0, sums / counts.clamp(min=1), 0.0)


def test_many_patches_do_not_drift():
    # 2000 overlapping patches: the cumulative sums run into the hundreds, where float32's
    # spacing is ~1e-5. Summed in float64 the maps stay within float32 rounding of the loop.
    g = torch.Generator().manual_seed(0)
    width, height = 160, 120
    boxes = random_boxes(g, 2000, width, height)
    probs = torch.rand(2000, 2, generator=g)
    expected = reference_maps(boxes, probs, width, height)
    got = score_maps(boxes, probs, width, height)
    assert (got.double() - expected).abs().max() <= 1e-7
    # the same algorithm summing in float32 is off by far more (which is why it does not)
    assert (float32_difference_maps(boxes, probs, width, height).double()
            - expected).abs().max() > 1e-7


@pytest.mark.parametrize("call,error,match", [
    (lambda: score_maps([[0, 0, 6, 2]], [[0.5]], 5, 5), ValueError, r"boxes\[0\].*width=5"),
    (lambda: score_maps([[0, 0, 2, 2]], [[0.5], [0.5]], 5, 5), ValueError,
     r"patch_probs must be \[K, C\] with K = 1.*\(2, 1\)"),
    (lambda: score_maps([[0, 0, 2, 2]], [0.5], 5, 5), ValueError, r"patch_probs must be \[K, C\]"),
    (lambda: score_maps([[0, 0, 2, 2]], [[float("inf")]], 5, 5), ValueError,
     r"patch_probs\[0, 0\] = inf must be finite"),
    (lambda: score_maps([[0, 0, 2, 2]], [[0.5]], 0, 5), ValueError, r"width must be a positive"),
    (lambda: score_maps([[0, 0, 2, 2]], [[0.5]], 5, 2.0), TypeError, r"height must be a positive"),
])
def test_score_maps_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- localization ---------------------------------------------------------------------------------

def test_localization_hits_by_hand():
    maps = torch.zeros(3, 10, 10)
    maps[0, 2, 3] = 0.9          # inside class 0's box
    maps[1, 8, 8] = 0.7          # outside class 1's box
    maps[2, 1, 5] = 0.4          # at x = 5: class 2's box (0, 0, 5, 5) stops at column 4
    boxes = [[0, 0, 5, 5], [0, 0, 5, 5], [0, 0, 5, 5]]
    assert localization_hits(maps, boxes, [0, 1, 2]) == {0: True, 1: False, 2: False}
    # a second box of class 1 holds its maximum: a hit
    assert localization_hits(maps, boxes + [[7, 7, 10, 10]], [0, 1, 2, 1]) == \
        {0: True, 1: True, 2: False}
    # only the classes with a box are checked, and present narrows them
    assert localization_hits(maps, boxes[:1], [0]) == {0: True}
    assert localization_hits(maps, boxes, [0, 1, 2], present=[2, 1]) == {1: False, 2: False}
    assert localization_hits(maps, [], []) == {}


def test_ties_go_to_the_first_pixel_in_row_major_order():
    maps = torch.full((1, 4, 6), 0.5)
    assert localization_hits(maps, [[0, 0, 1, 1]], [0]) == {0: True}        # (0, 0)
    assert localization_hits(maps, [[1, 0, 6, 4]], [0]) == {0: False}
    maps[0, 2, 4] = maps[0, 3, 1] = 1.0                                     # (2, 4) comes first
    assert localization_hits(maps, [[4, 2, 5, 3]], [0]) == {0: True}
    assert localization_hits(maps, [[1, 3, 2, 4]], [0]) == {0: False}


def test_localization_of_score_maps():
    grid = paper_grid(60, 40)
    probs = torch.zeros(len(grid), 2)
    x0, y0, x1, y1 = grid.unbind(1)
    probs[:, 0] = ((x1 <= 30) & (y1 <= 30)).float()        # class 0 on the left
    probs[:, 1] = (x0 >= 30).float() * 0.5                  # class 1 on the right
    maps = score_maps(grid, probs, 60, 40)
    hits = localization_hits(maps, [[0, 0, 30, 40], [30, 0, 60, 40]], [0, 1])
    assert hits == {0: True, 1: True}
    assert localization_hits(maps, [[30, 0, 60, 40], [0, 0, 30, 40]], [0, 1]) == \
        {0: False, 1: False}


def test_localization_accuracy():
    results = [{0: True, 1: False}, {0: False}, {0: True, 2: True}, {}]
    out = localization_accuracy(results)
    assert out["per_class"] == {0: 2 / 3, 1: 0.0, 2: 1.0}
    assert out["images"] == {0: 3, 1: 1, 2: 1}
    assert out["overall"] == 3 / 5
    assert out["mean"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert localization_accuracy(iter([{4: np.bool_(True)}]))["overall"] == 1.0


@pytest.mark.parametrize("call,error,match", [
    (lambda: localization_hits(torch.zeros(2, 5, 5), [[0, 0, 6, 5]], [0]), ValueError,
     r"boxes\[0\].*width=5"),
    (lambda: localization_hits(torch.zeros(2, 5, 5), [[0, 0, 5, 5]], [2]), ValueError,
     r"classes\[0\] = 2 must be a class index in 0..1"),
    (lambda: localization_hits(torch.zeros(2, 5, 5), [[0, 0, 5, 5]], [0], present=[1]),
     ValueError, r"present names class 1, which has no box"),
    (lambda: localization_hits(torch.zeros(2, 5, 5), [[0, 0, 5, 5]], [0], present=[5]),
     ValueError, r"present\[0\] = 5 must be a class index in 0..1"),
    (lambda: localization_hits(torch.zeros(2, 5, 5), [[0, 0, 5, 5]], [0], present=0),
     TypeError, r"present must be an iterable"),
    (lambda: localization_hits(torch.zeros(5, 5), [], []), ValueError, r"maps must be \[C, H, W\]"),
    (lambda: localization_hits(torch.full((1, 2, 2), float("nan")), [], []), ValueError,
     r"maps\[0, 0, 0\] = nan must be finite"),
    (lambda: localization_accuracy([]), ValueError, r"no checked class"),
    (lambda: localization_accuracy({0: True}), TypeError, r"single mapping"),
    (lambda: localization_accuracy([[True]]), TypeError, r"results\[0\] must be a"),
    (lambda: localization_accuracy([{0: 1}]), TypeError, r"results\[0\]\[0\] must be a bool"),
    (lambda: localization_accuracy([{"cat": True}]), TypeError,
     r"a key of results\[0\] must be an integer class index"),
])
def test_localization_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
