"""What the subcommands share: dtype names and the --name option's help."""
from __future__ import annotations

import argparse

import torch

from ..features.grids import GRIDS
from ..nets.architecture import NAMES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

NAME_HELP = (f"architecture of a bare state_dict with cnnxfer names ({', '.join(NAMES)}); "
             f"stored or recognized weights (cnnxfer safetensors, torchvision AlexNet/VGG, "
             f"ONNX) need none")


def _number(text: str, parse, expected: str, ok) -> int | float:
    """text parsed by `parse` (int or float), or argparse's usage error 'expected ..., got ...'
    for a non-number or a value that fails `ok`."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count: a clear usage error for 0, negatives and non-numbers."""
    return _number(text, int, "a positive int", lambda v: v > 0)


def device(text: str) -> str:
    """argparse type of --device: a torch device that exists here."""
    import torch

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a device such as cpu or cuda, got "
                                         f"{text!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA GPU (torch "
                                         f"{torch.__version__})")
    if parsed.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda, got {text!r}")
    return text


def positive_float(text: str) -> float:
    """argparse type of a rate or factor: a clear usage error for 0, negatives and non-numbers."""
    return _number(text, float, "a positive number", lambda v: 0 < v < float("inf"))


def at_least_one(text: str) -> float:
    """argparse type of a factor >= 1."""
    value = positive_float(text)
    if value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type of a share in [0, 1]."""
    return _number(text, float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def held_out_share(text: str) -> float:
    """argparse type of the share of images held out: in [0, 1) (some must be left to train)."""
    value = fraction(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of a count that may be 0."""
    return _number(text, int, "an int >= 0", lambda v: v >= 0)


def scales(text: str) -> tuple[float, ...]:
    """argparse type of the grid's scales: comma-separated λ's, each >= 1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers >= 1 (e.g. 1,1.3,1.6), got {text!r}") from None
    if not values or any(not v >= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected scales >= 1, got {text!r}")
    return values


def class_names(text: str) -> tuple[str, ...]:
    """argparse type of --classes: comma-separated names, at least one."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, got {text!r}")
    return names


def add_dataset_options(parser, *, classes: bool = True) -> None:
    """--task and --classes: which samples and label columns of a VOC tree."""
    parser.add_argument("--task", choices=("main", "action"), default="main",
                        help="main: classify images; action: classify persons (main)")
    if not classes:
        return
    parser.add_argument("--classes", type=class_names,
                        help="comma-separated class names (default: from the tree's "
                             "ImageSets files, else its annotations)")


def add_feature_options(parser, *, layer: bool = True) -> None:
    """How features are computed when missing: layer (unless the head decides it), grid, dtype,
    device."""
    if layer:
        parser.add_argument("--layer", default="fc7",
                            help="features' layer: fc7, or conv5/fc6 with --finetune (fc7)")
    parser.add_argument("--scales", type=scales, default=None,
                        help="the grid's scales, comma-separated (default: the paper's nine)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--device", type=device, default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--mode", choices=("per_patch", "shared"), default="per_patch",
                        help="per_patch (the paper's) or shared convolutions (see extract)")
    add_grid_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_grid_option(parser) -> None:
    parser.add_argument("--grid", choices=GRIDS, default="paper",
                        help="paper: the paper's grid (about 500 patches, 65%% overlap); "
                             "aligned: steps of whole cells of the network's last conv map, so "
                             "that --mode shared cuts most windows exactly (see the README)")


def feature_settings(args, layer: str | None = None):
    """FeatureSettings from the options of add_feature_options (`layer` overrides --layer)."""
    from ..transfer import FeatureSettings

    options = dict(layer=layer or args.layer, dtype=DTYPES[args.dtype], device=args.device,
                   mode=args.mode, grid=args.grid)
    if args.scales is not None:
        options["scales"] = args.scales
    return FeatureSettings(**options)


def add_scoring_options(parser) -> None:
    """How test samples are scored and evaluated: the metric, k, and how many maps are drawn."""
    parser.add_argument("--metric", choices=("voc07", "area"),
                        help="11-point AP (VOC2007) or area (VOC2010+); default from the year "
                             "in the folder's name, else voc07")
    parser.add_argument("-k", type=positive_float, default=5.0,
                        help="image score = mean over patches of y^k (5)")
    parser.add_argument("--maps", type=non_negative_int, default=4,
                        help="test images to draw localization maps for (4)")


def add_training_options(parser) -> None:
    """The adaptation layers' training settings (cnnxfer.transfer.TrainConfig)."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=positive_int, default=10)
    group.add_argument("--batch-size", type=positive_int, default=256)
    group.add_argument("--lr", type=positive_float, default=0.01, help="initial learning rate")
    group.add_argument("--momentum", type=fraction, default=0.9)
    group.add_argument("--weight-decay", type=float, default=5e-4)
    group.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    group.add_argument("--balance", choices=("loss", "none"), default="loss",
                       help="class-weighted loss (the background dominates) or none")
    group.add_argument("--validation", type=held_out_share, default=0.1,
                       help="share of the images held out for early stopping (0.1)")
    group.add_argument("--patience", type=positive_int, default=3)
    group.add_argument("--hidden", type=positive_int, default=2048, help="FCa's width (2048)")
    group.add_argument("--background-fraction", type=fraction, default=0.1,
                       help="share of background patches kept for training (0.1)")
    group.add_argument("--enlarge", type=at_least_one, default=1.5,
                       help="--task action: a person's patches are those at least half inside "
                            "its box enlarged by this factor (1.5)")
    group.add_argument("--finetune", action="store_true",
                       help="also train FC6 and FC7 (needs --layer conv5 or fc6 features)")
    group.add_argument("--seed", type=int, default=0)


def training_settings(args):
    from ..transfer import LabelSettings, TrainConfig
    from ..transfer.head import check_finetune_layer

    if args.finetune:  # before any feature is computed
        check_finetune_layer(args.layer)

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay,
                         schedule=args.schedule, balance=args.balance,
                         validation_fraction=args.validation,
                         patience=args.patience, hidden=args.hidden, seed=args.seed,
                         device=args.device)
    return config, LabelSettings(background_fraction=args.background_fraction, seed=args.seed,
                                 enlarge=args.enlarge)
