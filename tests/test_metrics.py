"""Average precision (cnnxfer.data.metrics) by hand, against a loop transcription of the VOC
devkit's MATLAB code, and the AP table's formats."""
import json
import math

import numpy as np
import pytest
import torch

from cnnxfer.data import APTable, average_precision, mean_average_precision


def matlab_colon(start, step, stop):
    """MATLAB's start:step:stop for a whole number of steps: the left half as start + k*step,
    the right half as stop - k*step (MathWorks' colonop.m)."""
    n = round((stop - start) / step)
    out = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        out[k] = start + k * step
        out[n - k] = stop - k * step
    return out


def devkit_ap(scores, labels, metric):
    """VOCevalcls.m (VOC2007: 11 points) and VOCap.m (VOC2010+: area), line by line. Label-0
    samples stay in the ranking as in the devkit, adding a point with tp and fp unchanged (and a
    0/0 precision when they come first, which MATLAB's max ignores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # [so,si]=sort(-confidence)
    npos = sum(1 for y in labels if y > 0)
    if npos == 0:
        return math.nan
    tp = fp = 0
    rec, prec = [], []
    for i in order:
        tp += labels[i] > 0   # tp=cumsum(gt(si)>0)
        fp += labels[i] < 0   # fp=cumsum(gt(si)<0)
        rec.append(tp / npos)
        prec.append(tp / (tp + fp) if tp + fp else math.nan)
    if metric == "voc07":
        ap = 0.0
        for t in matlab_colon(0, 0.1, 1):  # for t=0:0.1:1
            p = [q for r, q in zip(rec, prec) if r >= t and not math.isnan(q)]  # max(prec(rec>=t))
            ap += (max(p) if p else 0.0) / 11
        return ap
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):  # mpre(i)=max(mpre(i),mpre(i+1)), NaN ignored
        mpre[i] = max(x for x in (mpre[i], mpre[i + 1]) if not math.isnan(x))
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec))
               if mrec[i] != mrec[i - 1])


def test_hand_computed_both_metrics():
    # labels [1, -1, 1, -1] at scores [.9, .8, .7, .6], already ranked; 2 positives.
    #   tp 1 1 2 2, fp 0 1 1 2 -> recall .5 .5 1 1, precision 1 .5 2/3 .5
    # voc07: t = 0, .1, ..., .5 (6 thresholds) reach the first point: max precision 1;
    #   t = .6, ..., 1 (5 thresholds) reach only the last two: max(2/3, .5) = 2/3
    #   -> (6 * 1 + 5 * 2/3) / 11 = 28/33
    # area: precision made monotone from the right: 1 1 2/3 .5; recall steps 0 -> .5 (at
    #   precision 1) and .5 -> 1 (at 2/3) -> .5 * 1 + .5 * 2/3 = 5/6
    scores, labels = [0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1]
    assert average_precision(scores, labels, "voc07") == pytest.approx(28 / 33, abs=1e-12)
    assert average_precision(scores, labels, "area") == pytest.approx(5 / 6, abs=1e-12)
    assert average_precision(scores, labels) == average_precision(scores, labels, "voc07")
    # Input order does not matter, only the scores do.
    perm = [2, 0, 3, 1]
    assert average_precision([scores[i] for i in perm], [labels[i] for i in perm], "area") == \
        pytest.approx(5 / 6, abs=1e-12)


def test_worst_ranking_and_ties():
    # Negatives first: recall 0 0 1, precision 0 0 1/3 -> every threshold and the whole area
    # at precision 1/3.
    for metric in ("voc07", "area"):
        assert average_precision([3, 2, 1], [-1, -1, 1], metric) == pytest.approx(1 / 3)
    # Equal scores keep their input order: the negative first gives precision 0 then .5 at
    # recall 1 (AP .5), the positive first gives precision 1 at recall 1 (AP 1).
    for metric in ("voc07", "area"):
        assert average_precision([0.5, 0.5], [-1, 1], metric) == pytest.approx(0.5)
        assert average_precision([0.5, 0.5], [1, -1], metric) == pytest.approx(1.0)


def test_difficult_samples_count_neither_way():
    # [1, 0, -1, 1] at [.9, .8, .7, .6] is [1, -1, 1] at [.9, .7, .6]: recall .5 .5 1,
    # precision 1 .5 2/3: the same curve as the hand case above.
    scores, labels = [0.9, 0.8, 0.7, 0.6], [1, 0, -1, 1]
    assert average_precision(scores, labels, "voc07") == pytest.approx(28 / 33)
    assert average_precision(scores, labels, "area") == pytest.approx(5 / 6)
    # wherever the difficult sample ranks, nothing changes
    for s in (1.0, 0.65, 0.0):
        assert average_precision([0.9, s, 0.7, 0.6], labels, "area") == pytest.approx(5 / 6)
    # ... which it would as a negative
    assert average_precision([0.9, 1.0, 0.7, 0.6], [1, -1, -1, 1], "area") < 0.7
    # first in the ranking (a 0/0 precision in the devkit's curve): the same as without it
    assert average_precision([2.0, 0.9, 0.7], [0, 1, -1], "voc07") == pytest.approx(1.0)


def test_all_positive_none_positive_empty():
    for metric in ("voc07", "area"):
        assert average_precision([0.1, 0.5, 0.3], [1, 1, 1], metric) == pytest.approx(1.0)
        assert math.isnan(average_precision([0.1, 0.5], [-1, -1], metric))
        assert math.isnan(average_precision([0.1, 0.5], [0, -1], metric))
        assert math.isnan(average_precision([], [], metric))
        assert average_precision([0.1], [1], metric) == 1.0


def test_eleven_thresholds_are_matlabs():
    """10 positives, 3 ranked first, then 5 negatives, then the other 7: recall is exactly 3/10
    at precision 1. MATLAB's 0:0.1:1 has 3*0.1 = 0.30000000000000004 as its fourth threshold,
    which 3/10 does not reach: the devkit (and cnnxfer) read precision 10/15 there, not 1."""
    labels = [1] * 3 + [-1] * 5 + [1] * 7
    scores = list(range(len(labels), 0, -1))
    thresholds = matlab_colon(0, 0.1, 1)
    assert thresholds[3] == 3 * 0.1 > 0.3 and thresholds[6:8] == [0.6, 0.7]
    ap = average_precision(scores, labels, "voc07")
    assert ap == pytest.approx(devkit_ap(scores, labels, "voc07"), abs=1e-15)
    # t = 0 .. 0.2 at precision 1, t = 0.30000000000000004 .. 1 at 10/15 (the last point)
    assert ap == pytest.approx((3 * 1 + 8 * 10 / 15) / 11, abs=1e-15)


@pytest.mark.parametrize("metric", ["voc07", "area"])
def test_against_the_devkit_loop_on_random_cases(metric):
    rng = np.random.default_rng(2014)
    for case in range(400):
        n = int(rng.integers(1, 40))
        # few distinct scores, so ties are common; every mix of positives, negatives, difficult
        levels = int(rng.integers(1, 8))
        scores = (rng.integers(0, levels, n) / levels).tolist()
        p = rng.dirichlet([1.0, 1.0, 0.5])
        labels = rng.choice([1, -1, 0], size=n, p=p).tolist()
        expected = devkit_ap(scores, labels, metric)
        got = average_precision(torch.tensor(scores), torch.tensor(labels), metric)
        if math.isnan(expected):
            assert math.isnan(got), (case, scores, labels)
        else:
            assert got == pytest.approx(expected, abs=1e-12), (case, scores, labels)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"metric must be one of .*'voc2012'"):
        average_precision([1.0], [1], "voc2012")
    with pytest.raises(ValueError, match="same length, got 2 scores and 1 labels"):
        average_precision([1.0, 2.0], [1])
    with pytest.raises(ValueError, match=r"labels\[1\] = 2.0, expected 1 .*-1 .*0"):
        average_precision([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError, match=r"scores\[0\] is NaN"):
        average_precision([math.nan, 2.0], [1, -1])
    with pytest.raises(ValueError, match=r"one-dimensional \[N\], got shape \(1, 2\)"):
        average_precision([[1.0, 2.0]], [1, -1])
    with pytest.raises(TypeError, match="real numbers"):
        average_precision(["a"], [1])


def table():
    return mean_average_precision(
        np.array([[0.9, 0.8, 0.5], [0.8, 0.9, 0.4], [0.7, 0.2, 0.3], [0.6, 0.3, 0.2]]),
        np.array([[1, 1, -1], [-1, -1, -1], [1, -1, 0], [-1, -1, -1]]),
        ["aeroplane", "bicycle", "bird"], metric="area")


def test_mean_average_precision_and_formats():
    t = table()
    assert t.classes == ("aeroplane", "bicycle", "bird") and t.metric == "area"
    assert t.ap["aeroplane"] == pytest.approx(5 / 6)  # the hand case
    assert t.ap["bicycle"] == pytest.approx(0.5)      # the one positive ranked second
    assert math.isnan(t.ap["bird"])                   # no positive: left out of the mean
    assert t.map == pytest.approx((5 / 6 + 0.5) / 2)
    assert t.to_text().splitlines() == ["aeroplane  bicycle  bird   mAP",
                                        "     83.3     50.0   n/a  66.7"]
    assert t.to_markdown() == ("| aeroplane | bicycle | bird | mAP |\n| --- | --- | --- | --- |\n"
                               "| 83.3 | 50.0 | n/a | 66.7 |")
    assert t.to_markdown(row_name="fc7").splitlines()[2] == "| fc7 | 83.3 | 50.0 | n/a | 66.7 |"
    d = t.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["classes"] == ["aeroplane", "bicycle", "bird"] and d["metric"] == "area"
    assert d["ap"]["bird"] is None and d["map"] == pytest.approx((5 / 6 + 0.5) / 2)


def test_empty_table_and_errors():
    t = APTable(classes=("a",), ap={"a": math.nan}, metric="voc07")
    assert math.isnan(t.map) and t.to_dict()["map"] is None
    with pytest.raises(ValueError, match=r"scores has 2 columns but classes names 1"):
        mean_average_precision(np.zeros((3, 2)), np.ones((3, 2)), ["a"])
    with pytest.raises(ValueError, match=r"same shape \[N, C\], got \(3, 2\) and \(2, 2\)"):
        mean_average_precision(np.zeros((3, 2)), np.ones((2, 2)), ["a", "b"])
    with pytest.raises(ValueError, match=r"class 'b' \(column 1\): labels\[0\] = 5.0"):
        mean_average_precision(np.zeros((1, 2)), [[1, 5]], ["a", "b"])
    with pytest.raises(ValueError, match="metric must be one of"):
        mean_average_precision(np.zeros((1, 1)), [[1]], ["a"], metric="11point")
