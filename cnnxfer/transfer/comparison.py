"""The paper's comparison in one call (what `cnnxfer demo` runs): a world, a source network, and
four rows of average precision on the target's test split.

    results = compare("cnnxfer-demo", DemoSettings(seed=0))

Rows: transfer_patches (the method: the pretrained network's FC7 on every grid patch, adaptation
layers trained on the labelled patches, image score = mean of y^k), scratch (the same layout
trained on the target's training patches alone), transfer_whole_image (one FC7 per image), chance
(random scores). With `weights` and `voc`, the same comparison on a real network and VOCdevkit
tree (no world is generated and nothing is pretrained).

Writes OUT/results.json ({"rows": {row: {"map", "ap"}}, "seconds": {stage: s}, ...}),
OUT/report.md (the table, the stage times, patches/s, the machine) and the transfer row's folder
(OUT/transfer: its devkit files and localization maps).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..data import load_split, mean_average_precision, toyvoc
from ..features.grids import PAPER_SCALES
from ..nets import weights as weight_files
from ..ops.precision import cpu_model_and_flags
from .baselines import chance_scores, scratch_scores, whole_image_scores
from .dataset_features import FeatureSettings
from .pretrain import PretrainConfig, pretrain
from .recipe import json_safe, run_voc
from .training import TrainConfig

ROWS = ("transfer_patches", "scratch", "transfer_whole_image", "chance")


@dataclass(frozen=True)
class DemoSettings:
    """The world's size, the source network's training, the grid and the head's training. The
    defaults keep a cold run of `cnnxfer demo` within 5 minutes on a 2-core CPU; they were
    chosen on the training split and the source task, never on the test split."""

    seed: int = 0
    images: int = 200
    size: tuple[int, int] = (160, 120)
    source_images: int = 4000
    source_size: int = 64  # the source images' side, which is the network's input size
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    scales: tuple[float, ...] = PAPER_SCALES
    head_epochs: int = 10
    hidden: int = 1024
    scratch_epochs: int = 12
    device: str = "cpu"
    mode: str = "per_patch"  # the transfer row's features: per patch, or shared convolutions
    grid: str = "paper"  # the transfer row's grid: the paper's, or "aligned" to the net's cells
    # the rows to compute; transfer_patches always runs (on a real VOCdevkit tree, scratch is
    # the costly one: a whole network trained on every labelled patch)
    rows: tuple[str, ...] = ROWS

    def __post_init__(self):
        unknown = [row for row in self.rows if row not in ROWS]
        if unknown or "transfer_patches" not in self.rows:
            raise ValueError(f"rows: expected transfer_patches and any of {', '.join(ROWS[1:])};"
                             f" got {', '.join(self.rows) or 'none'}")


def _world(out: Path, settings: DemoSettings, progress: bool):
    """The generated world in out/world, reused when world.json says it was made alike."""
    folder = out / "world"
    wanted = {"seed": settings.seed, "images": settings.images, "size": list(settings.size),
              "source_images": settings.source_images,
              "source_size": settings.source_size}
    recorded = folder / "world.json"
    if recorded.is_file():
        made = json.loads(recorded.read_text())
        if all(made.get(k) == v for k, v in wanted.items()):
            return toyvoc.World(folder / toyvoc.TREE_NAME, folder / "source.safetensors"), True
    return toyvoc.generate(folder, seed=settings.seed, images=settings.images,
                           size=settings.size, source_images=settings.source_images,
                           source_size=settings.source_size, progress=progress), False


def compare(out: str | Path, settings: DemoSettings = DemoSettings(), *,
            weights: str | Path | None = None, voc: str | Path | None = None,
            progress: bool = True) -> dict:
    """Runs the comparison and writes OUT/results.json and OUT/report.md; returns the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds, notes = {}, {}
    start = time.perf_counter()
    if voc is None:
        world, reused = _world(out, settings, progress)
        seconds["world"] = time.perf_counter() - start
        notes["world"] = "reused" if reused else "generated"
        root = world.root
    else:
        root = Path(voc)
    if weights is None:
        if voc is not None:
            raise ValueError("--voc needs --weights: a network for that tree")
        begin = time.perf_counter()
        config = PretrainConfig(**{**asdict(settings.pretrain), "seed": settings.seed,
                                   "device": settings.device})
        net, summary = pretrain(world.source, config, progress=progress)
        seconds["pretrain"] = time.perf_counter() - begin
        weights = summary["path"]
        notes["pretrain"] = ("reused from the cache" if summary["cached"] else "trained") + (
            f"; source accuracy {summary['val_accuracy']:.3f} on held-out images"
            if summary.get("val_accuracy") is not None else "")
    else:
        net = weight_files.load(weights)
    train = load_split(root, "trainval")
    test = load_split(root, "test", classes=train.classes, ignore_unknown=True)
    labels = test.labels()
    scores = {}

    begin = time.perf_counter()
    transfer = run_voc(root, weights, out / "transfer",
                       settings=FeatureSettings(scales=tuple(settings.scales),
                                                device=settings.device, mode=settings.mode,
                                                grid=settings.grid),
                       config=TrainConfig(epochs=settings.head_epochs, hidden=settings.hidden,
                                          seed=settings.seed, device=settings.device),
                       maps=4, progress=progress)
    seconds["transfer_patches"] = time.perf_counter() - begin
    timing = transfer["timing"]
    patches = timing["features_train_patches"] + timing["features_test_patches"]
    feature_seconds = timing["features_train_seconds"] + timing["features_test_seconds"]
    rows = {"transfer_patches": {"map": transfer["map"], "ap": transfer["ap"]}}

    scratch = None
    if "scratch" in settings.rows:
        begin = time.perf_counter()
        scores["scratch"], scratch = scratch_scores(train, test, like=net,
                                                    scales=settings.scales,
                                                    epochs=settings.scratch_epochs,
                                                    seed=settings.seed,
                                                    cache=out / "scratch.safetensors",
                                                    progress=progress)
        seconds["scratch"] = time.perf_counter() - begin
        notes["scratch"] = "network reused" if scratch.pop("cached") else "network trained"
    if "transfer_whole_image" in settings.rows:
        begin = time.perf_counter()
        scores["transfer_whole_image"] = whole_image_scores(train, test, net, seed=settings.seed,
                                                            hidden=settings.hidden,
                                                            progress=progress)
        seconds["transfer_whole_image"] = time.perf_counter() - begin
    if "chance" in settings.rows:
        scores["chance"] = chance_scores(test, seed=settings.seed)
    for name, table in scores.items():
        result = mean_average_precision(table, labels, test.classes, "voc07").to_dict()
        rows[name] = {"map": result["map"], "ap": result["ap"]}
    seconds["total"] = time.perf_counter() - start
    results = {"rows": {name: rows[name] for name in ROWS if name in rows}, "seconds": seconds,
               "classes": list(test.classes), "metric": "voc07", "notes": notes,
               # patches computed by this run (none when every feature file was reused)
               "patches_per_second": patches / feature_seconds if patches else None,
               "images": {"trainval": len(train.images), "test": len(test.images)},
               "scratch": scratch, "machine": machine(), "settings": json_safe(asdict(settings))}
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
    (out / "report.md").write_text(report(results))
    return results


def machine() -> str:
    """The CPU model and its AVX-512 / AMX flags, the threads, torch; the GPU if one is used."""
    model, flags = cpu_model_and_flags()
    wanted = sorted(f for f in flags if f.startswith(("avx512_bf16", "amx")) or f == "avx2")
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{model} ({' '.join(wanted) or 'no AVX-512/AMX'}), {torch.get_num_threads()} "
            f"threads, torch {torch.__version__}{gpu}")


def table(results: dict) -> str:
    """The rows as a markdown table: AP x 100 per class and the mean."""
    classes = results["classes"]
    lines = ["| row | " + " | ".join(classes) + " | mAP |",
             "| --- |" + " ---: |" * (len(classes) + 1)]
    for name, row in results["rows"].items():
        cells = [f"{100 * row['ap'][c]:.1f}" if row["ap"].get(c) is not None else "n/a"
                 for c in classes]
        mean = f"{100 * row['map']:.1f}" if row["map"] is not None else "n/a"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def report(results: dict) -> str:
    lines = ["# cnnxfer demo: transfer of mid-level features", "",
             f"Machine: {results['machine']}.", "",
             f"Average precision (VOC07 11-point) on the test split ({results['images']['test']} "
             f"images; trained on {results['images']['trainval']}).", "",
             table(results), "", "## Time", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {stage} | {value:.1f} |" for stage, value in results["seconds"].items()]
    if results.get("patches_per_second"):
        lines += ["", f"Patch features: {results['patches_per_second']:.0f} patches/s."]
    for stage, note in results.get("notes", {}).items():
        lines.append(f"- {stage}: {note}")
    lines += ["", "Localization maps of a few test images: `transfer/maps/`; the devkit result "
              "files of the method: `transfer/`.", ""]
    return "\n".join(lines)
