"""`cnnxfer train`: trains the adaptation layers on the labelled patches of a VOC-format split,
from the per-image feature files in --features (computing the missing ones when --weights is
given) or from a feature store, and writes the head as safetensors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_dataset_options, add_feature_options, add_training_options


def run(args: argparse.Namespace) -> int:
    from ..nets import weights as weight_files
    from ..transfer import ensure_features, train_on_split
    from ..transfer.recipe import json_safe, load_task_split
    from .common import feature_settings, training_settings

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {str(out)!r}")
    if not out.parent.exists():
        raise FileNotFoundError(f"--out's folder does not exist: {str(out.parent)!r}")
    split = load_task_split(args.voc, args.split, task=args.task, classes=args.classes)
    settings, (config, labels) = feature_settings(args), training_settings(args)
    if args.finetune and not args.weights:
        raise ValueError("--finetune trains copies of the network's FC layers: give its "
                         "--weights")
    net = weight_files.load(args.weights) if args.weights else None
    features = ensure_features([image.path for image in split.images], args.features,
                               settings=settings, net=net,
                               weights=str(args.weights) if args.weights else None,
                               progress=not args.quiet)
    workdir = Path(args.workdir) if args.workdir else out.with_suffix(".training")
    unusable: dict[str, str] = {}
    head, summary = train_on_split(split, features, workdir=workdir, config=config,
                                   labels=labels, layer=settings.layer, net=net,
                                   skipped=unusable,
                                   finetune=args.finetune, progress=not args.quiet)
    head.save(out, training=json_safe(summary))
    history = summary["history"]
    for source, error in unusable.items():
        print(f"cnnxfer train: skipped {source}: {error}", file=sys.stderr)
    print(f"wrote {out}: {len(split.classes)} classes, {summary['images']} images, "
          f"{sum(summary['labelled'])} labelled patches; best epoch {history['best_epoch'] + 1} "
          f"of {len(history['train_loss'])}, {summary['seconds']:.1f} s; "
          f"{len(features.skipped) + len(split.skipped) + len(unusable)} images skipped")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train the adaptation layers on a VOC-format split")
    parser.add_argument("--voc", required=True, help="a VOCdevkit year folder (e.g. VOC2007)")
    parser.add_argument("--split", default="trainval", help="the image set to train on")
    parser.add_argument("--features", required=True,
                        help="folder of per-image feature files (cnnxfer extract -o FOLDER), "
                             "or a feature store (cnnxfer extract --store DIR)")
    parser.add_argument("--out", required=True, help="the head, HEAD.safetensors")
    parser.add_argument("--weights", help="the network's weights: computes missing features")
    parser.add_argument("--workdir", help="shards and checkpoints (default: OUT.training/); "
                                          "a rerun resumes from its checkpoint")
    add_dataset_options(parser)
    add_feature_options(parser)
    add_training_options(parser)
    parser.set_defaults(run=run)
