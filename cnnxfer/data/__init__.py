"""Datasets and their evaluation: Pascal VOC trees, the devkit's result files, and average
precision as the devkit computes it.

    from cnnxfer import data
    split = data.load_split("VOCdevkit/VOC2007", "test")       # annotations, no image decoded
    labels = split.labels()                                     # int8 [N, 20] in {1, -1, 0}
    table = data.mean_average_precision(scores, labels, split.classes)   # scores [N, 20]
    print(table.to_text())                                      # AP x 100 per class, mAP last
    data.write_results("results", "test", split.classes, split.ids, scores)

VOC boxes (1-based, inclusive) become cnnxfer boxes (0-based, x1/y1 exclusive) through
:func:`voc_box` only. Built on the standard library, NumPy, Pillow (image headers) and torch.
"""
from . import toyvoc
from .metrics import METRICS, APTable, average_precision, mean_average_precision
from .voc import (
    TASKS,
    VOC_ACTIONS,
    VOC_CLASSES,
    VOCError,
    VOCImage,
    VOCObject,
    VOCSplit,
    find_classes,
    load_split,
    read_annotation,
    voc_box,
    write_results,
)

__all__ = ["toyvoc", "VOC_CLASSES", "VOC_ACTIONS", "TASKS", "VOCError", "VOCObject", "VOCImage",
           "VOCSplit", "voc_box", "read_annotation", "find_classes", "load_split",
           "write_results", "METRICS", "average_precision", "mean_average_precision", "APTable"]
