"""`cnnxfer eval`: scores a VOC-format split with a trained head and writes the devkit result
files, results.json (AP per class, mAP, localization), report.md and a few localization maps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import DTYPES, non_negative_int, positive_float


def run(args: argparse.Namespace) -> int:
    from ..nets import weights as weight_files
    from ..transfer import AdaptationHead, FeatureSettings, ensure_features, evaluate_split
    from ..transfer.recipe import _json_safe, load_task_split, report

    head = AdaptationHead.load(args.head)
    split = load_task_split(args.voc, args.split, task=args.task, classes=head.classes)
    net = weight_files.load(args.weights) if args.weights else None
    settings = FeatureSettings(layer=head.layer, dtype=DTYPES[args.dtype], device=args.device)
    if args.scales is not None:
        settings = FeatureSettings(layer=head.layer, dtype=DTYPES[args.dtype],
                                   device=args.device, scales=args.scales)
    features = ensure_features([image.path for image in split.images], args.features,
                               settings=settings, net=net,
                               weights=str(args.weights) if args.weights else None,
                               progress=not args.quiet)
    out = Path(args.out)
    results = evaluate_split(split, features, head, out, k=args.k, metric=args.metric,
                             maps=args.maps, progress=not args.quiet)
    results.update({"root": str(args.voc), "head": str(args.head),
                    "skipped": {**features.skipped,
                                **{s["id"]: s["error"] for s in split.skipped}}})
    (out / "results.json").write_text(json.dumps(_json_safe(
        {k: v for k, v in results.items() if not k.startswith("table_")}), indent=1))
    (out / "report.md").write_text(report(results))
    print(results["table_text"])
    print(f"wrote {out}/results.json, report.md and the devkit files")
    return 0


def add_parser(commands) -> None:
    from .common import add_dataset_options, scales

    parser = commands.add_parser("eval", help="score a VOC-format split: AP table, devkit files")
    parser.add_argument("--voc", required=True, help="a VOCdevkit year folder (e.g. VOC2007)")
    parser.add_argument("--split", default="test", help="the image set to score (test)")
    parser.add_argument("--features", required=True, help="folder of per-image feature files")
    parser.add_argument("--head", required=True, help="a head written by cnnxfer train")
    parser.add_argument("--out", required=True, help="folder for results.json, report.md, ...")
    parser.add_argument("--weights", help="the network's weights: computes missing features")
    parser.add_argument("--metric", choices=("voc07", "area"),
                        help="11-point AP (VOC2007) or area (VOC2010+); default from the year "
                             "in the folder's name, else voc07")
    parser.add_argument("-k", type=positive_float, default=5.0,
                        help="image score = mean over patches of y^k (5)")
    parser.add_argument("--maps", type=non_negative_int, default=4,
                        help="images to draw maps for (4)")
    parser.add_argument("--scales", type=scales, default=None,
                        help="the grid's scales for missing features (the paper's nine)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_dataset_options(parser, classes=False)  # the head's classes
    parser.set_defaults(run=run)
