"""Patch grids (cnnxfer.features.grids): counts, geometry, order and argument checks."""
import math

import pytest
import torch

from cnnxfer.features.grids import (
    DEFAULT_OVERLAP,
    PAPER_SCALES,
    aligned_grid,
    as_boxes,
    dense_grid,
    paper_grid,
)


def side_of(w, h, lam):
    return max(1, int(math.floor(min(w, h) / lam + 0.5)))


def per_scale(grid, w, h, scales=PAPER_SCALES):
    """Split a large-image grid into its scales (sides are all distinct there), in output order."""
    sides = [side_of(w, h, lam) for lam in scales]
    assert len(set(sides)) == len(sides), "test helper needs distinct sides"
    widths = (grid[:, 2] - grid[:, 0]).tolist()
    out, start = [], 0
    for s in sides:
        n = 0
        while start + n < len(widths) and widths[start + n] == s:
            n += 1
        assert n > 0, f"no patch of side {s}"
        out.append((s, grid[start:start + n]))
        start += n
    assert start == len(widths), "patches left over after the last scale, or scales out of order"
    return out


def check_inside_and_square(grid, w, h):
    assert grid.dtype == torch.int64 and grid.dim() == 2 and grid.shape[1] == 4
    x0, y0, x1, y1 = grid.unbind(1)
    assert bool((x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all())
    assert bool(((x1 - x0) == (y1 - y0)).all() and ((x1 - x0) >= 1).all())


SIZES = [(500, 375), (375, 500), (640, 480), (500, 333), (1024, 768)]


@pytest.mark.parametrize("w,h,lo,hi", [(500, 375, 400, 600), (375, 500, 400, 600),
                                       (640, 480, 400, 600), (500, 500, 250, 600)])
def test_count_about_500(w, h, lo, hi):
    k = paper_grid(w, h).shape[0]
    assert lo <= k <= hi, k


def test_default_overlap_gives_the_papers_about_500():
    """The paper asks for >= 50% overlap and about 500 patches on a Pascal VOC image (500x375);
    its bare minimum, 0.5, would give far fewer: the default must meet both."""
    assert 0.5 <= DEFAULT_OVERLAP < 1
    assert torch.equal(paper_grid(500, 375), paper_grid(500, 375, overlap=DEFAULT_OVERLAP))
    assert abs(paper_grid(500, 375).shape[0] - 500) <= 25
    assert paper_grid(500, 375, overlap=0.5).shape[0] < 400


@pytest.mark.parametrize("w,h,overlap,count", [(500, 375, DEFAULT_OVERLAP, 496),
                                               (640, 480, DEFAULT_OVERLAP, 497),
                                               (480, 640, DEFAULT_OVERLAP, 497),
                                               (500, 375, 0.5, 275)])
def test_counts_the_documentation_promises(w, h, overlap, count):
    # paper_grid's docstring and the README quote these counts to users
    assert paper_grid(w, h, overlap=overlap).shape[0] == count


@pytest.mark.parametrize("w,h", SIZES)
def test_boxes_square_inside_with_scale_side(w, h):
    g = paper_grid(w, h)
    check_inside_and_square(g, w, h)
    for s, boxes in per_scale(g, w, h):
        assert bool(((boxes[:, 2] - boxes[:, 0]) == s).all())


@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("overlap", [0.5, DEFAULT_OVERLAP, 0.8])
def test_flush_full_grid_and_neighbour_overlap(w, h, overlap):
    g = paper_grid(w, h, overlap=overlap)
    for s, boxes in per_scale(g, w, h):
        xs = sorted(set(boxes[:, 0].tolist()))
        ys = sorted(set(boxes[:, 1].tolist()))
        # first flush with left/top, last with right/bottom
        assert xs[0] == 0 and ys[0] == 0
        assert xs[-1] + s == w and ys[-1] + s == h
        # a full rows x columns grid
        assert boxes.shape[0] == len(xs) * len(ys)
        cells = {(x, y) for x, y in boxes[:, :2].tolist()}
        assert cells == {(x, y) for x in xs for y in ys}
        # every actual neighbour pair (right and below) shares >= overlap of the side
        for x, y in cells:
            i = xs.index(x)
            if i + 1 < len(xs):
                assert (x + s - xs[i + 1]) >= overlap * s - 1e-9, (s, x, xs[i + 1])
            j = ys.index(y)
            if j + 1 < len(ys):
                assert (y + s - ys[j + 1]) >= overlap * s - 1e-9, (s, y, ys[j + 1])
        # evenly spaced (gaps differ by at most the rounding pixel), and no more positions than
        # needed
        for pos, length in ((xs, w), (ys, h)):
            gaps = [b - a for a, b in zip(pos, pos[1:])]
            if gaps:
                assert max(gaps) - min(gaps) <= 1
            step = max(1, math.floor(s * (1 - overlap) + 1e-9))
            assert len(pos) == max(1, math.ceil((length - s) / step) + 1)


@pytest.mark.parametrize("w,h", [(500, 375), (7, 5)])
def test_order_scales_then_rows_then_columns(w, h):
    g = paper_grid(w, h).tolist()
    sides = [side_of(w, h, lam) for lam in PAPER_SCALES]
    # scale index of each box = first scale with that side (later equal sides only add duplicates)
    keys = [(sides.index(b[2] - b[0]), b[1], b[0]) for b in g]
    assert keys == sorted(keys)


def test_positions_pinned():
    # side 4, max step 2, span 7 -> 5 positions at 0, 1.75, 3.5, 5.25, 7, rounded half up
    g = paper_grid(11, 4, scales=[1.0], overlap=0.5).tolist()
    assert [b[0] for b in g] == [0, 2, 4, 5, 7]
    assert all(b[1] == 0 and b[2] - b[0] == 4 for b in g)
    # 500x375, scale 1: side 375, max step floor(375 * 0.35) = 131 > span 125 -> two columns
    assert paper_grid(500, 375, scales=[1.0]).tolist() == [[0, 0, 375, 375], [125, 0, 500, 375]]


def test_overlap_monotone_and_all_scales_used():
    counts = [paper_grid(500, 375, overlap=o).shape[0] for o in (0.5, 0.6, 0.65, 0.7, 0.9)]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    single = paper_grid(500, 375, scales=[2.0])
    assert set((single[:, 2] - single[:, 0]).tolist()) == {188}  # round(375 / 2) = 187.5 -> 188


def test_deterministic():
    a = paper_grid(640, 480)
    b = paper_grid(640, 480)
    assert torch.equal(a, b)
    assert torch.equal(dense_grid(50, 40, side=16, stride=5), dense_grid(50, 40, side=16, stride=5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32])
def test_dtype_same_values(dtype):
    ref = paper_grid(500, 375)
    g = paper_grid(500, 375, dtype=dtype)
    assert g.dtype == dtype
    assert torch.equal(g.to(torch.int64), ref)
    d = dense_grid(30, 20, side=7, stride=4, dtype=dtype)
    assert d.dtype == dtype and torch.equal(d.to(torch.int64), dense_grid(30, 20, side=7, stride=4))


@pytest.mark.parametrize("w,h", [(7, 5), (5, 7), (1, 1), (1, 9), (3, 2), (17, 4)])
def test_tiny_images(w, h):
    g = paper_grid(w, h)
    check_inside_and_square(g, w, h)
    rows = [tuple(r) for r in g.tolist()]
    assert len(rows) == len(set(rows)), "duplicates must be dropped"
    assert rows[0] == (0, 0, min(w, h), min(w, h))  # scale 1 starts flush top-left
    assert max(r[2] for r in rows) == w and max(r[3] for r in rows) == h
    if (w, h) == (1, 1):
        assert rows == [(0, 0, 1, 1)]


def test_duplicates_keep_first_occurrence():
    # 7x5: 5/2.4, 5/2.8 and 5/3.2 all round to side 2, 5/3.6 and 5/4 to side 1: repeated boxes
    g = paper_grid(7, 5).tolist()
    ref, total = [], 0
    for lam in PAPER_SCALES:
        one = paper_grid(7, 5, scales=[lam]).tolist()
        total += len(one)
        for b in one:
            if b not in ref:
                ref.append(b)
    assert len(g) < total and g == ref


def test_dense_grid_flush():
    # stride lands on L - side along x (10 - 4 = 6) but not along y (7 - 4 = 3 ok; 11 - 4 = 7 not)
    g = dense_grid(10, 7, side=4, stride=3).tolist()
    assert g == [[0, 0, 4, 4], [3, 0, 7, 4], [6, 0, 10, 4],
                 [0, 3, 4, 7], [3, 3, 7, 7], [6, 3, 10, 7]]
    g = dense_grid(11, 4, side=4, stride=3).tolist()
    assert [b[0] for b in g] == [0, 3, 6, 7] and all(b[1] == 0 for b in g)
    # stride larger than the image still reaches the far border
    assert dense_grid(20, 5, side=5, stride=100).tolist() == [[0, 0, 5, 5], [15, 0, 20, 5]]
    g = dense_grid(37, 23, side=8, stride=5)
    check_inside_and_square(g, 37, 23)
    assert int(g[:, 2].max()) == 37 and int(g[:, 3].max()) == 23


@pytest.mark.parametrize("kwargs,words", [
    (dict(side=6, stride=1), ["side", "6", "5"]),
    (dict(side=0, stride=1), ["side", "0"]),
    (dict(side=3, stride=0), ["stride", "0"]),
    (dict(side=3, stride=-2), ["stride", "-2"]),
])
def test_dense_grid_errors(kwargs, words):
    with pytest.raises(ValueError) as e:
        dense_grid(8, 5, **kwargs)
    for word in words:
        assert word in str(e.value)


def test_as_boxes_accepts_and_copies():
    t = torch.tensor([[0, 0, 5, 5], [1, 2, 3, 4]])
    out = as_boxes(t, 5, 5)
    assert out.dtype == torch.int64 and torch.equal(out, t)
    out[0, 0] = 9
    assert int(t[0, 0]) == 0, "as_boxes must not alias its input"
    assert torch.equal(as_boxes([[0.0, 1.0, 2.0, 3.0]], 4, 4), torch.tensor([[0, 1, 2, 3]]))
    assert torch.equal(as_boxes(torch.tensor([[0, 0, 3, 3]], dtype=torch.uint8), 3, 3),
                       torch.tensor([[0, 0, 3, 3]]))
    assert as_boxes([], 4, 4).shape == (0, 4)
    as_float = paper_grid(64, 48, dtype=torch.float32)
    assert torch.equal(as_boxes(as_float, 64, 48), paper_grid(64, 48))


@pytest.mark.parametrize("bad,idx", [
    ([[0, 0, 2, 2], [0, 0, 2.5, 2]], 1),    # not an integer
    ([[0, 0, 2, 2], [1, 1, 2, 2], [-1, 0, 2, 2]], 2),  # negative
    ([[3, 0, 3, 2]], 0),                     # empty width (x0 == x1)
    ([[0, 3, 2, 1]], 0),                     # y1 < y0
    ([[0, 0, 2, 2], [0, 0, 11, 2]], 1),     # past the right border
    ([[0, 0, 2, 2], [0, 0, 2, 9]], 1),      # past the bottom border
    ([[0, 0, 1e30, 2]], 0),                  # huge float must not wrap into range
    ([[0, 0, float("nan"), 2]], 0),
])
def test_as_boxes_errors_name_the_index(bad, idx):
    with pytest.raises(ValueError, match=rf"boxes\[{idx}\]"):
        as_boxes(bad, 10, 8)


def test_as_boxes_error_shows_values():
    with pytest.raises(ValueError) as e:
        as_boxes([[0, 0, 2, 2], [1, 2, 30, 4]], 10, 8)
    assert "(1, 2, 30, 4)" in str(e.value) and "width=10" in str(e.value)


@pytest.mark.parametrize("bad", [[0, 0, 2, 2], [[0, 0, 2]], [[[0, 0, 2, 2]]]])
def test_as_boxes_shape(bad):
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        as_boxes(bad, 10, 8)


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(width=0, height=5), ValueError, ["width", "0"]),
    (dict(width=5, height=-3), ValueError, ["height", "-3"]),
    (dict(width=5.0, height=5), TypeError, ["width", "5.0"]),
    (dict(width=True, height=5), TypeError, ["width", "True"]),
    (dict(width=5, height=5, overlap=0.4), ValueError, ["overlap", "0.4", "[0.5, 1)"]),
    (dict(width=5, height=5, overlap=1.0), ValueError, ["overlap", "1.0", "[0.5, 1)"]),
    (dict(width=5, height=5, overlap=float("nan")), ValueError, ["overlap", "nan"]),
    (dict(width=5, height=5, overlap="0.6"), TypeError, ["overlap", "0.6"]),
    (dict(width=5, height=5, scales=()), ValueError, ["scales", "empty"]),
    (dict(width=5, height=5, scales=2.0), TypeError, ["scales", "2.0"]),
    (dict(width=5, height=5, scales=(1.0, 0.5)), ValueError, ["scales[1]", "0.5", "1.0"]),
    (dict(width=5, height=5, dtype=torch.float16), ValueError, ["dtype", "float16"]),
])
def test_paper_grid_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc) as e:
        paper_grid(**kwargs)
    for word in words:
        assert word in str(e.value), (word, str(e.value))


# ------------------------------------------------------------------ aligned_grid

def _off_cell(boxes: torch.Tensor, total_stride: int, input_size: int) -> torch.Tensor:
    """Per box and axis, how far (in image pixels) its start is from a whole cell of its
    scale's map (a cell is side * total_stride / input_size pixels)."""
    side = (boxes[:, 2] - boxes[:, 0]).double()[:, None]
    cell = side * total_stride / input_size
    starts = boxes[:, :2].double()
    return (starts - (starts / cell).round() * cell).abs()


@pytest.mark.parametrize("w, h", [(500, 375), (375, 500), (640, 480), (227, 227), (90, 61)])
@pytest.mark.parametrize("stride, size", [(32, 227), (32, 224), (36, 221), (32, 64)])
def test_aligned_grid_starts_on_whole_cells_and_covers_the_image(w, h, stride, size):
    boxes = aligned_grid(w, h, total_stride=stride, input_size=size)
    paper = paper_grid(w, h)
    # the same sides, square and inside the image
    assert set((boxes[:, 2] - boxes[:, 0]).tolist()) == set((paper[:, 2] - paper[:, 0]).tolist())
    assert torch.equal(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
    off = _off_cell(boxes, stride, size)
    steps = max(1, math.floor((1 - DEFAULT_OVERLAP) * size / stride + 1e-9))
    for side in set((boxes[:, 2] - boxes[:, 0]).tolist()):
        rows = boxes[:, 2] - boxes[:, 0] == side
        for axis, length in ((0, w), (1, h)):
            starts = sorted(set(boxes[rows, axis].tolist()))
            # reaches both borders; every start but a last, flush one is on a whole cell
            assert starts[0] == 0 and starts[-1] == length - side
            inner = [s for s in starts if s != length - side or len(starts) == 1]
            assert all(float(off[rows][boxes[rows, axis] == s, axis].max()) <= 0.5 + 1e-9
                       for s in inner), (side, axis, starts)
            # neighbours overlap by at least the asked overlap, where a whole-cell step allows
            gaps = [b - a for a, b in zip(starts, starts[1:])]
            cell = side * stride / size
            assert all(gap <= steps * cell + 1 for gap in gaps), (side, gaps)


def test_aligned_grid_counts_and_alignment_on_a_voc_image():
    """500x375, AlexNet (T = 32, S = 227): two cells per step (72% overlap) give 702
    patches, 82% of them on whole cells (the paper grid: 496 patches, 3% on whole cells);
    overlap 0.5 gives three cells per step (58%) and 374 patches."""
    boxes = aligned_grid(500, 375, total_stride=32, input_size=227)
    assert len(boxes) == 702
    assert float((_off_cell(boxes, 32, 227) <= 0.5 + 1e-9).all(dim=1).double().mean()) > 0.8
    paper = paper_grid(500, 375)
    assert float((_off_cell(paper, 32, 227) <= 0.5 + 1e-9).all(dim=1).double().mean()) < 0.05
    assert len(aligned_grid(500, 375, total_stride=32, input_size=227, overlap=0.5)) == 374
    with pytest.raises(ValueError, match="total_stride"):
        aligned_grid(500, 375, total_stride=0, input_size=227)
    with pytest.raises(ValueError, match=r"overlap must be in \[0.5, 1\)"):
        aligned_grid(500, 375, total_stride=32, input_size=227, overlap=0.4)
