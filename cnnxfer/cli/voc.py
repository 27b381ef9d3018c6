"""`cnnxfer voc`: the paper's whole recipe on a VOC-format tree: features, labels, training,
scores, AP, localization maps; writes OUT/results.json, OUT/report.md and the devkit files.
A rerun reuses the features and the head already in OUT.
"""
from __future__ import annotations

import argparse

from .common import (
    add_dataset_options,
    add_feature_options,
    add_scoring_options,
    add_training_options,
)


def run(args: argparse.Namespace) -> int:
    from ..transfer import run_voc
    from .common import feature_settings, training_settings

    config, labels = training_settings(args)
    results = run_voc(args.root, args.weights, args.out, task=args.task,
                      train_split=args.train_split, test_split=args.test_split,
                      features_dir=args.features, classes=args.classes,
                      settings=feature_settings(args), config=config, labels=labels, k=args.k,
                      metric=args.metric, maps=args.maps, finetune=args.finetune,
                      progress=not args.quiet)
    print(results["table_text"])
    timing = results["timing"]
    print("time per image: " + ", ".join(f"{key.replace('_per_image', '')} {value:.3f} s"
                                         for key, value in timing.items()
                                         if key.endswith("_per_image")))
    if results["skipped"]:
        print(f"{len(results['skipped'])} images skipped (listed in report.md)")
    print(f"wrote {args.out}/results.json and report.md")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("voc", help="the whole recipe on a VOC-format tree")
    parser.add_argument("--root", required=True, help="a VOCdevkit year folder (e.g. VOC2007)")
    parser.add_argument("--weights", required=True, help="the source network's weights")
    parser.add_argument("--out", required=True, help="output folder (reused by a rerun)")
    parser.add_argument("--train-split", default="trainval")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--features", help="feature files folder, or a feature store "
                             "(default: OUT/features)")
    add_scoring_options(parser)
    add_dataset_options(parser)
    add_feature_options(parser)
    add_training_options(parser)
    parser.set_defaults(run=run)
