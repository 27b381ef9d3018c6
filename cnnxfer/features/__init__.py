"""Patch features: grids of boxes, image decoding, the patch feature extractor and feature files.

    from cnnxfer import features
    boxes = features.paper_grid(500, 375)               # [496, 4] (x0, y0, x1, y1)
    image = features.load_image("photo.jpg")            # [3, H, W] uint8, EXIF-upright RGB
    extractor = features.PatchFeatureExtractor(net, layer="fc7")
    fc7, boxes = extractor("photo.jpg")                 # [496, 4096], [496, 4]
    features.save_features("f.safetensors", list(extractor.extract(paths)))
    graphed = features.GraphedExtractor(net, 500, 375)  # GPU: one CUDA graph per image

Built on cnnxfer.nets and cnnxfer.ops. The grids, images and feature files need no compiled
kernel; only the extractor runs one.
"""
from .extractor import CONV_POOLING, ImageFeatures, PatchFeatureExtractor
from .files import load_features, save_features
from .graphed import GraphedExtractor
from .grids import DEFAULT_OVERLAP, PAPER_SCALES, aligned_grid, as_boxes, dense_grid, paper_grid
from .images import ImageError, load_image

__all__ = ["PatchFeatureExtractor", "GraphedExtractor", "ImageFeatures", "CONV_POOLING",
           "paper_grid", "aligned_grid",
           "dense_grid", "as_boxes", "PAPER_SCALES", "DEFAULT_OVERLAP", "load_image", "ImageError",
           "save_features", "load_features"]
