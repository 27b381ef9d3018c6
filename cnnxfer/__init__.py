"""cnnxfer: mid-level CNN patch features and their transfer to new tasks (Oquab et al., CVPR 2014).

    import cnnxfer
    y = cnnxfer.ops.relu_lrn_maxpool(x)          # fused ReLU + LRN + max-pool, CPU or GPU
    boxes = cnnxfer.patches.paper_grid(500, 375) # ~500 multi-scale square boxes
    batch = cnnxfer.ops.extract_patches(image, boxes)   # [K, 3, 224, 224] network inputs
    net = cnnxfer.weights.load("alexnet.safetensors")  # or .pth (torchvision), .onnx
    features, boxes = cnnxfer.PatchFeatureExtractor(net, layer="fc7")("photo.jpg")
"""
from . import features, images, nets, ops, patches, reference, weights
from .features import PatchFeatureExtractor
from .preprocessing import Preprocessing
from .specs import LRN, MaxPool

__version__ = "0.1.0"
__all__ = ["features", "images", "nets", "ops", "patches", "reference", "weights",
           "PatchFeatureExtractor", "Preprocessing", "LRN", "MaxPool"]
