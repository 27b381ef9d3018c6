"""Transfer to a target task (Oquab et al., CVPR 2014, section 3): labelled patches, the
adaptation layers and their training, image scores, localization maps, and the recipe on a
VOC-format tree.

    from cnnxfer import transfer
    labels = transfer.label_patches(patches, boxes, classes, num_classes=20)   # [K] int64
    head, history = transfer.train_head(images, classes, in_features=4096, workdir="run")
    probs = head.probabilities(fc7)                                # [K, C + 1]
    scores = transfer.image_scores(probs[:, :-1], k=5)             # [C]
    maps = transfer.score_maps(boxes, probs[:, :-1], width, height)  # [C, H, W]

Built on cnnxfer.features (feature files, the extractor) and cnnxfer.data (VOC trees, AP).
"""
from .dataset_features import FeatureFiles, FeatureSettings, ensure_features
from .head import AdaptationHead, trunk_from_network
from .labels import DEFAULT_ENLARGE, label_patches, patches_in_box
from .maps import save_overlay
from .patch_data import LabelledImage
from .recipe import LabelSettings, default_metric, evaluate_split, run_voc, train_on_split
from .scores import (
    PAPER_K,
    image_scores,
    localization_accuracy,
    localization_hits,
    score_maps,
)
from .training import History, TrainConfig, train_head

__all__ = ["label_patches", "patches_in_box", "DEFAULT_ENLARGE", "AdaptationHead",
           "trunk_from_network", "LabelledImage", "TrainConfig", "History", "train_head",
           "image_scores", "score_maps", "localization_hits", "localization_accuracy", "PAPER_K",
           "save_overlay", "FeatureSettings", "FeatureFiles", "ensure_features", "LabelSettings",
           "train_on_split", "evaluate_split", "run_voc", "default_metric"]
