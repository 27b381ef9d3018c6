"""cnnxfer: mid-level CNN patch features and their transfer to new tasks (Oquab et al., CVPR 2014).

    import cnnxfer
    y = cnnxfer.ops.relu_lrn_maxpool(x)                   # fused ReLU + LRN + max-pool, CPU or GPU
    boxes = cnnxfer.features.paper_grid(500, 375)         # ~500 multi-scale square boxes
    batch = cnnxfer.ops.extract_patches(image, boxes)     # [K, 3, 224, 224] network inputs
    net = cnnxfer.weights.load("alexnet.safetensors")     # or .pth (torchvision), .onnx
    features, boxes = cnnxfer.PatchFeatureExtractor(net, layer="fc7")("photo.jpg")
    split = cnnxfer.data.load_split("VOCdevkit/VOC2007", "test")     # a VOC-format tree
    scores = cnnxfer.transfer.image_scores(head.probabilities(features)[:, :-1], k=5)

The package is in layers, each importing only those before it: ops (the engine's faces and the
reference) <- nets (networks, weights) <- features (grids, images, the extractor, feature files)
<- transfer, data (the paper's method; VOC trees and their evaluation) <- cli. Importing it
loads no compiled code: the ops library loads on the first op call.
"""
from . import _moved

_moved.install()

from . import data, features, nets, ops, transfer  # noqa: E402  (after the aliases)
from .features import PatchFeatureExtractor  # noqa: E402
from .nets import Preprocessing, weights  # noqa: E402
from .ops import LRN, MaxPool  # noqa: E402

__version__ = "0.2.0"
__all__ = ["data", "features", "nets", "ops", "transfer", "weights", "PatchFeatureExtractor",
           "Preprocessing", "LRN", "MaxPool"]


def __getattr__(name: str):
    # cnnxfer.reference, cnnxfer.patches ...: the 0.1 module names, for one release (_moved).
    module = _moved.attribute(name)
    if module is None:
        raise AttributeError(f"module 'cnnxfer' has no attribute {name!r}")
    return module
