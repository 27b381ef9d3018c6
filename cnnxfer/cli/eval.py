"""`cnnxfer eval`: scores a VOC-format split with a trained head and writes the devkit result
files, results.json (AP per class, mAP, localization), report.md and a few localization maps.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_dataset_options,
    add_feature_options,
    add_scoring_options,
    feature_settings,
)


def run(args: argparse.Namespace) -> int:
    from ..nets import weights as weight_files
    from ..transfer import DEFAULT_ENLARGE, ensure_features, evaluate_split
    from ..transfer.head import check_network, load_with_header
    from ..transfer.recipe import load_task_split, write_outputs

    head, header = load_with_header(args.head)
    split = load_task_split(args.voc, args.split, task=args.task, classes=head.classes)
    net = None
    if args.weights:
        check_network(head, weight_files.fingerprint(args.weights), f"--weights {args.weights}")
        net = weight_files.load(args.weights)
    # the person boxes' enlargement the head was trained with (actions)
    enlarge = ((header.get("training") or {}).get("labels") or {}).get("enlarge",
                                                                        DEFAULT_ENLARGE)
    settings = feature_settings(args, layer=head.layer)
    features = ensure_features([image.path for image in split.images], args.features,
                               settings=settings, net=net,
                               weights=str(args.weights) if args.weights else None,
                               progress=not args.quiet)
    out = Path(args.out)
    results = evaluate_split(split, features, head, out, k=args.k, metric=args.metric,
                             maps=args.maps, enlarge=enlarge, progress=not args.quiet)
    for timing in ("scoring_seconds", "maps_seconds"):  # run_voc's report keeps them; not here
        del results[timing]
    results.update({"root": str(args.voc), "head": str(args.head),
                    "skipped": {**features.skipped, **results.pop("unusable"),
                                **{s["id"]: s["error"] for s in split.skipped}}})
    write_outputs(out, results)
    print(results["table_text"])
    print(f"wrote {out}/results.json, report.md and the devkit files")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("eval", help="score a VOC-format split: AP table, devkit files")
    parser.add_argument("--voc", required=True, help="a VOCdevkit year folder (e.g. VOC2007)")
    parser.add_argument("--split", default="test", help="the image set to score (test)")
    parser.add_argument("--features", required=True,
                        help="folder of per-image feature files, or a feature store (cnnxfer "
                             "extract --store)")
    parser.add_argument("--head", required=True, help="a head written by cnnxfer train")
    parser.add_argument("--out", required=True, help="folder for results.json, report.md, ...")
    parser.add_argument("--weights", help="the network's weights: computes missing features")
    add_scoring_options(parser)
    add_feature_options(parser, layer=False)  # the head's layer
    add_dataset_options(parser, classes=False)  # the head's classes
    parser.set_defaults(run=run)
