"""The paper's recipe on a VOC-format tree, in steps the commands share.

    train_on_split(...)   labelled patches of a split -> a trained AdaptationHead
    evaluate_split(...)   a head on a split -> scores, devkit files, AP table, localization, maps
    run_voc(...)          features -> labels -> training -> scores -> AP -> maps -> report,
                          reusing the features and head an earlier run left in its folder

Output folder of run_voc (and of evaluate_split):
    results.json   {"classes", "ap", "map", "metric", "localization", "timing", "skipped", ...}
    report.md      the AP table (markdown), localization accuracy, timings, maps, skipped images
    comp2_cls_{split}_{class}.txt (comp10_action_... for actions): the devkit's result files
    maps/{id}.png  localization maps of a few test images
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data.metrics import mean_average_precision
from ..data.voc import VOCSplit, load_split, write_results
from ..features.images import load_image
from . import feature_access
from .dataset_features import FeatureFiles, FeatureSettings, ensure_features
from .head import (
    AdaptationHead,
    check_finetune_layer,
    check_network,
    load_with_header,
    trunk_from_network,
)
from .labels import DEFAULT_ENLARGE
from .maps import save_overlay
from .patch_data import LabelledImage
from .samples import labelled_images, score_split
from .scores import PAPER_K, localization_accuracy, localization_hits, score_maps
from .training import TrainConfig, fingerprint, settings_key, train_head


def default_metric(root: str | Path) -> str:
    """The devkit's metric for a tree: "voc07" (11-point) for VOC2007 and earlier, "area" for
    VOC2010 and later (read from a year in the folder's name); "voc07" when there is none."""
    years = [int(y) for y in re.findall(r"(?<!\d)(20\d\d)(?!\d)", Path(root).resolve().name)]
    return "area" if years and years[-1] >= 2010 else "voc07"


def load_task_split(root: str | Path, split: str, *, task: str = "main", classes=None,
                    check: bool = True) -> VOCSplit:
    """A split as the recipe reads it: load_split(on_error="skip"), so that a bad image is
    reported and left out rather than ending a long run.

    classes: the label columns (a subset of the tree's, or a head's). Objects of other classes
    are left out of the labels (the images are negatives of the classes given), not a reason to
    skip the image. With `check`, a class that no label file and no annotation of the split
    names is an error (a misspelt class, a head of another tree); run_voc's test split, which
    takes the training split's classes, skips the check (a class may have no test object).
    """
    loaded = load_split(root, split, task=task, classes=classes, on_error="skip",
                        ignore_unknown=classes is not None)
    if classes is None or not check:
        return loaded
    suffix = f"_{split}.txt"  # the devkit's label files, {class}_{split}.txt
    folder = Path(root) / "ImageSets" / ("Main" if task == "main" else "Action")
    known = {path.name[:-len(suffix)] for path in folder.glob(f"*{suffix}")}
    for image in loaded.images:
        for obj in image.objects:
            known.update([obj.name] if task == "main" else obj.actions)
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise ValueError(f"class {unknown[0]!r} is not a class of split {split!r} of "
                         f"{str(root)!r} (no label file or annotation names it; its classes: "
                         f"{', '.join(sorted(known - {'other'})) or 'none'})")
    return loaded


@dataclass(frozen=True)
class LabelSettings:
    """The labelling rule's free parameters: the share of background patches kept, the seed of
    that subsample, and (actions) the person box's enlargement factor."""

    background_fraction: float = 0.1
    seed: int = 0
    enlarge: float = DEFAULT_ENLARGE


def training_images(split: VOCSplit, features: FeatureFiles, labels: LabelSettings,
                    skipped: dict[str, str] | None = None) -> list[LabelledImage]:
    """The split's images with features, their patches labelled (samples.labelled_images);
    an image whose JPEG and XML disagree on its size goes to `skipped`."""
    images = labelled_images(split, features.paths,
                             background_fraction=labels.background_fraction, seed=labels.seed,
                             enlarge=labels.enlarge, skipped=skipped)
    if not images:
        raise ValueError(f"no image of split {split.split!r} has usable features: nothing to "
                         f"train on")
    return images


def training_key(images: list[LabelledImage], classes, config: TrainConfig,
                 labels: LabelSettings, layer: str, finetune: bool) -> str:
    """What makes two trainings the same: the feature files (which name their network and
    grid) and the labels of their patches (which follow from the split, the boxes and the
    labelling rule), the classes and the settings. A saved head is reused only on a match."""
    return fingerprint(images, classes, {**settings_key(config), **asdict(labels),
                                         "layer": layer, "finetune": finetune})


def train_on_split(split: VOCSplit, features: FeatureFiles, *, workdir: Path,
                   config: TrainConfig = TrainConfig(), labels: LabelSettings = LabelSettings(),
                   layer: str = "fc7", net=None, finetune: bool = False,
                   images: list[LabelledImage] | None = None,
                   skipped: dict[str, str] | None = None,
                   progress: bool = True) -> tuple[AdaptationHead, dict]:
    """Trains a head on the labelled patches of `split` (features: its feature files; images:
    training_images' result, when the caller has it already).

    finetune: also train copies of the network's FC layers after `layer` (conv5 or fc6
    features; needs `net`). The head records the network of the feature files. Returns (head,
    training summary: history, patch counts, seconds, settings, and the training_key).
    """
    start = time.perf_counter()
    if images is None:
        images = training_images(split, features, labels, skipped)
    trunk = None
    if finetune:
        check_finetune_layer(layer)
        if net is None:
            raise ValueError("fine-tuning FC6 and FC7 needs the network's weights (--weights)")
        trunk = trunk_from_network(net, layer)
    header = feature_access.header(images[0].features_path)
    head, history = train_head(images, split.classes,
                               in_features=feature_access.feature_size(images[0].features_path),
                               workdir=workdir, config=config, layer=layer,
                               network=str(header.get("weights", "")),
                               network_sha256=str(header.get("weights_sha256", "")),
                               trunk=trunk, progress=progress)
    counts = torch.stack([torch.bincount(im.labels[im.labels >= 0],
                                         minlength=len(split.classes) + 1)
                          for im in images]).sum(0).tolist()
    summary = {"history": asdict(history), "images": len(images), "split": split.split,
               "patches": sum(len(im.labels) for im in images), "labelled": counts,
               "seconds": time.perf_counter() - start, "config": asdict(config),
               "labels": asdict(labels),
               "key": training_key(images, split.classes, config, labels, layer, finetune)}
    return head, summary


def check_features_network(head: AdaptationHead, features: FeatureFiles) -> None:
    """Refuses feature files of another network than the head's (the first file's header)."""
    first = next(iter(features.paths.values()), None)
    if first is not None:
        check_network(head, feature_access.header(first).get("weights_sha256"),
                      f"the features in {feature_access.where(first)!r}")


def evaluate_split(split: VOCSplit, features: FeatureFiles, head: AdaptationHead, out: Path, *,
                   k: float = PAPER_K, metric: str | None = None, maps: int = 4,
                   enlarge: float = DEFAULT_ENLARGE, progress: bool = True) -> dict:
    """Scores `split` with `head` and writes, in `out`: the devkit result files, results.json
    (AP per class and mean, localization, skipped images) and maps/{id}.png for the first `maps`
    scored images. Samples whose image has no features are left out of the AP and listed."""
    from tqdm import tqdm

    if tuple(head.classes) != tuple(split.classes):
        raise ValueError(f"the head was trained for classes {list(head.classes)}, the split has "
                         f"{list(split.classes)}")
    check_features_network(head, features)
    metric = metric or default_metric(split.root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "maps").mkdir(exist_ok=True)
    hits, drawn = [], []
    bar = tqdm(total=len(split.images), unit="image", desc="scoring", disable=not progress)
    column = {name: c for c, name in enumerate(split.classes)}

    maps_seconds = 0.0

    def per_image(image, boxes, probs) -> None:
        nonlocal maps_seconds
        bar.update(1)
        if split.task != "main":
            return
        begin = time.perf_counter()
        localize(image, boxes, probs)
        maps_seconds += time.perf_counter() - begin

    def localize(image, boxes, probs) -> None:
        objects = [o for o in image.objects if o.name in column and not o.difficult]
        present = sorted({column[o.name] for o in objects})
        if present:  # the paper's localization check, on the present classes' maps
            m = score_maps(boxes, probs[:, present], image.width, image.height)
            index = {c: n for n, c in enumerate(present)}
            found = localization_hits(m, [o.box for o in objects],
                                      [index[column[o.name]] for o in objects])
            hits.append({present[n]: hit for n, hit in found.items()})
        if len(drawn) < maps:
            shown = present or probs.mean(0).topk(min(3, probs.shape[1])).indices.tolist()
            m = score_maps(boxes, probs[:, shown], image.width, image.height)
            path = out / "maps" / f"{image.id}.png"
            save_overlay(path, load_image(image.path), m, [split.classes[c] for c in shown])
            drawn.append(path)

    start, unusable = time.perf_counter(), {}
    try:
        scored = score_split(split, features.paths, head, k=k, enlarge=enlarge,
                             on_image=per_image, skipped=unusable)
    finally:
        bar.close()
    seconds = time.perf_counter() - start - maps_seconds
    labels = split.labels()
    kept = scored.kept
    if split.task == "main":
        ids = [i for i, keep in zip(split.ids, kept.tolist()) if keep]
        write_results(out, split.split, split.classes, ids, scored.scores[kept])
    else:
        persons = [p for p, keep in zip(split.person_ids(), kept.tolist()) if keep]
        write_results(out, split.split, split.classes, None, scored.scores[kept],
                      task="action", persons=persons)
    table = mean_average_precision(scored.scores[kept], labels[kept], split.classes, metric)
    results = table.to_dict()
    rows = ([(i, None) for i in range(len(split.images))] if split.task == "main"
            else split.persons())
    # images, by path, with a sample left out of the AP (no features, or unusable ones), and
    # the image set's entries that could not be read at all (by id)
    left_out = sorted({str(split.images[i].path)
                       for (i, _), keep in zip(rows, kept.tolist()) if not keep})
    results.update({
        "split": split.split, "task": split.task, "k": k, "samples": int(kept.sum()),
        "left_out_of_ap": left_out + [s["id"] for s in split.skipped],
        "unusable": unusable,
        "localization": _localization(hits, split.classes),
        "maps": [str(p.relative_to(out)) for p in drawn],
        "scoring_seconds": seconds, "maps_seconds": maps_seconds,
    })
    results["table_markdown"] = table.to_markdown()
    results["table_text"] = table.to_text()
    return results


def _localization(hits: list, classes) -> dict | None:
    if not hits or not any(hits):
        return None
    summary = localization_accuracy([h for h in hits if h])
    return {"per_class": {classes[c]: v for c, v in summary["per_class"].items()},
            "images": {classes[c]: v for c, v in summary["images"].items()},
            "overall": summary["overall"], "mean": summary["mean"]}


def run_voc(root: str | Path, weights: str | Path, out: str | Path, *, task: str = "main",
            train_split: str = "trainval", test_split: str = "test",
            features_dir: str | Path | None = None, classes=None,
            settings: FeatureSettings = FeatureSettings(), config: TrainConfig = TrainConfig(),
            labels: LabelSettings = LabelSettings(), k: float = PAPER_K,
            metric: str | None = None, maps: int = 4, finetune: bool = False,
            progress: bool = True) -> dict:
    """The whole recipe on a VOC tree; writes out/results.json, out/report.md, the devkit files
    and out/maps, and returns the results. A rerun reuses out/features (or features_dir) and
    out/head.safetensors when they were made with the same settings."""
    from ..nets import weights as weight_files

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_task_split(root, train_split, task=task, classes=classes)
    test = load_task_split(root, test_split, task=task, classes=train.classes, check=False)
    net = weight_files.load(weights)
    folder = Path(features_dir) if features_dir else out / "features"
    timing = {}

    features = {}
    for name, split in (("train", train), ("test", test)):
        features[name] = ensure_features([im.path for im in split.images], folder,
                                         settings=settings, net=net, weights=weights,
                                         progress=progress)
        timing[f"features_{name}_seconds"] = features[name].seconds
        timing[f"features_{name}_computed"] = features[name].computed
        timing[f"features_{name}_patches"] = features[name].patches

    unusable: dict[str, str] = {}
    images = training_images(train, features["train"], labels, unusable)
    key = training_key(images, train.classes, config, labels, settings.layer, finetune)
    head_path = out / "head.safetensors"
    head, summary = _reusable_head(head_path, key)
    if head is None:
        head, summary = train_on_split(train, features["train"], workdir=out / "training",
                                       config=config, labels=labels, layer=settings.layer,
                                       net=net, finetune=finetune, images=images,
                                       progress=progress)
        head.save(head_path, training=json_safe(summary))
        timing["training_seconds"] = summary["seconds"]
    results = evaluate_split(test, features["test"], head, out, k=k, metric=metric, maps=maps,
                             enlarge=labels.enlarge, progress=progress)
    timing["scoring_seconds"] = results.pop("scoring_seconds")
    timing["maps_seconds"] = results.pop("maps_seconds")
    timing.update(_per_image(timing, len(train.images), len(test.images)))
    skipped = {**features["train"].skipped, **features["test"].skipped, **unusable,
               **results.pop("unusable")}
    skipped.update({s["id"]: s["error"] for s in train.skipped + test.skipped})
    results.update({"timing": timing, "skipped": skipped, "head": str(head_path),
                    "weights": str(weights), "root": str(root),
                    "images": {"train": len(train.images), "test": len(test.images)},
                    "training": {k2: v for k2, v in summary.items() if k2 != "config"}})
    write_outputs(out, results)
    return results


def write_outputs(out: Path, results: dict) -> None:
    """out/results.json (JSON-safe, without the rendered tables) and out/report.md."""
    (out / "results.json").write_text(json.dumps(json_safe(
        {key: value for key, value in results.items() if not key.startswith("table_")}),
        indent=1))
    (out / "report.md").write_text(report(results))


def _per_image(timing: dict, train_images: int, test_images: int) -> dict:
    computed = timing.get("features_train_computed", 0) + timing.get("features_test_computed", 0)
    feature_seconds = timing.get("features_train_seconds", 0) + timing.get(
        "features_test_seconds", 0)
    per = {"scoring_per_image": timing["scoring_seconds"] / max(1, test_images),
           "maps_per_image": timing["maps_seconds"] / max(1, test_images)}
    if computed:
        per["features_per_image"] = feature_seconds / computed
    if "training_seconds" in timing:
        per["training_per_image"] = timing["training_seconds"] / max(1, train_images)
    return per


def _reusable_head(path: Path, key: str):
    """(head, its training summary) when the head at `path` was trained with this
    training_key, else (None, None)."""
    if not path.is_file():
        return None, None
    try:
        head, header = load_with_header(path)
    except (ValueError, KeyError):
        return None, None
    training = header.get("training") or {}
    return (head, training) if training.get("key") == key else (None, None)


def json_safe(value):
    """value with NaN/inf floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def report(results: dict) -> str:
    """report.md: the AP table, localization accuracy, timings, maps and what was left out."""
    lines = [f"# cnnxfer: {results.get('task', 'main')} task on {results.get('root', '')}", "",
             f"Split `{results['split']}`, {results['samples']} samples scored, metric "
             f"`{results['metric']}`, k = {results['k']}.", "",
             results.get("table_markdown", ""), ""]
    localization = results.get("localization")
    if localization:
        lines += ["## Localization", "",
                  "Share of test images whose map maximum for a present class falls inside a "
                  f"box of that class: {100 * localization['overall']:.1f}% overall, "
                  f"{100 * localization['mean']:.1f}% mean over classes.", ""]
    timing = results.get("timing") or {}
    if timing:
        lines += ["## Time", "", "| step | seconds |", "| --- | --- |"]
        lines += [f"| {key} | {value:.3f} |" for key, value in timing.items()
                  if isinstance(value, float)]
        lines.append("")
    if results.get("maps"):
        lines += ["## Maps", ""] + [f"![{Path(p).stem}]({p})" for p in results["maps"]] + [""]
    left_out = results.get("left_out_of_ap") or []
    skipped = results.get("skipped") or {}
    if left_out or skipped:
        lines += ["## Left out", ""]
        lines += [f"- `{source}`: {error}" for source, error in skipped.items()]
        lines += [f"- `{source}` (not in the AP)" for source in left_out if source not in skipped]
        lines.append("")
    return "\n".join(lines)
