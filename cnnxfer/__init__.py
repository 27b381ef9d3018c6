"""cnnxfer: mid-level CNN patch features and their transfer to new tasks (Oquab et al., CVPR 2014).

    import cnnxfer
    y = cnnxfer.ops.relu_lrn_maxpool(x)          # fused ReLU + LRN + max-pool, CPU or GPU
"""
from . import ops, reference
from .specs import LRN, MaxPool

__version__ = "0.1.0"
__all__ = ["ops", "reference", "LRN", "MaxPool"]
