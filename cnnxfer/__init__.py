"""cnnxfer: mid-level CNN patch features and their transfer to new tasks (Oquab et al., CVPR 2014).

    import cnnxfer
    y = cnnxfer.ops.relu_lrn_maxpool(x)          # fused ReLU + LRN + max-pool, CPU or GPU
    boxes = cnnxfer.patches.paper_grid(500, 375) # ~500 multi-scale square boxes
    batch = cnnxfer.ops.extract_patches(image, boxes)   # [K, 3, 224, 224] network inputs
"""
from . import ops, patches, reference
from .specs import LRN, MaxPool

__version__ = "0.1.0"
__all__ = ["ops", "patches", "reference", "LRN", "MaxPool"]
