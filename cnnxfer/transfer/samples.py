"""From a VOC image set and its feature files to training labels and to scores per sample.

The samples are images for the classification task ("main") and persons for the action task.
Per image, the patches are the boxes stored in its feature file (the grid it was extracted with).

- main: each patch is labelled by transfer.label_patches from the image's objects of the known
  classes (difficult flags included). An image's score for class c is image_scores over all its
  patches.
- action: the patches of a person are transfer.patches_in_box of its box (enlarged). They are
  labelled with the person's action when it has exactly one (a person flagged with several, or
  with none, is scored but not trained on; a patch shared by persons of different actions is
  left out); the patches of no person are background, subsampled as in label_patches. A
  person's score is image_scores over its patches.

The background subsample of an image is seeded by the run's seed and the image's id, so it does
not depend on the order or the company an image comes in.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data.voc import VOCImage, VOCSplit
from . import feature_access
from .feature_access import FeatureHandle
from .labels import DEFAULT_ENLARGE, label_patches, patches_in_box
from .patch_data import LabelledImage
from .scores import PAPER_K, image_scores


def image_seed(seed: int, image_id: str) -> int:
    """The labelling seed of one image: the run's seed mixed with the image's id."""
    return (seed * 1_000_003 + zlib.crc32(image_id.encode())) % (2**63)


def main_labels(image: VOCImage, patches: torch.Tensor, classes: Sequence[str], *,
                background_fraction: float = 0.1, seed: int = 0) -> torch.Tensor:
    """LongTensor [K]: the label of each patch of `image` (label_patches on its objects of
    `classes`; objects of other classes are ignored)."""
    column = {name: c for c, name in enumerate(classes)}
    objects = [obj for obj in image.objects if obj.name in column]
    boxes = torch.tensor([obj.box for obj in objects], dtype=torch.int64).reshape(-1, 4)
    return label_patches(patches, boxes, [column[obj.name] for obj in objects],
                         num_classes=len(classes),
                         difficult=[obj.difficult for obj in objects],
                         background_fraction=background_fraction,
                         seed=image_seed(seed, image.id))


def person_patches(image: VOCImage, patches: torch.Tensor, object_position: int, *,
                   enlarge: float = DEFAULT_ENLARGE) -> torch.Tensor:
    """bool [K]: the patches of the person image.objects[object_position]."""
    return patches_in_box(patches, image.objects[object_position].box, enlarge=enlarge,
                          width=image.width, height=image.height)


def action_labels(image: VOCImage, patches: torch.Tensor, persons: Sequence[int],
                  actions: Sequence[str], *, enlarge: float = DEFAULT_ENLARGE,
                  background_fraction: float = 0.1, seed: int = 0) -> torch.Tensor:
    """LongTensor [K]: action index for the patches of a person with one action, len(actions)
    for kept background (patches of no person), -1 for the rest (see the module docstring).
    persons: positions in image.objects of the image's action samples."""
    unset = -2
    labels = torch.full((patches.shape[0],), unset, dtype=torch.int64)
    for position in persons:
        flags = image.objects[position].actions
        done = [a for a, name in enumerate(actions) if flags.get(name, False)]
        mine = person_patches(image, patches, position, enlarge=enlarge)
        target = done[0] if len(done) == 1 else -1
        fresh = mine & (labels == unset)
        clash = mine & (labels != unset) & (labels != target)
        labels[fresh] = target
        labels[clash] = -1
    background = labels == unset
    # label_patches with no boxes is exactly the background subsample of the main task
    kept = label_patches(patches[background], torch.empty((0, 4), dtype=torch.int64), [],
                         num_classes=len(actions), background_fraction=background_fraction,
                         seed=image_seed(seed, image.id))
    labels[background] = kept
    return labels


def check_extent(image: VOCImage, patches: torch.Tensor) -> None:
    """Raises ValueError when the patches of `image` (a paper grid, whose last patches touch
    the right and bottom borders) do not span the size its annotation gives: the JPEG decodes
    to another size than <size> says, and boxes and patches would not line up."""
    if patches.numel() == 0:
        return
    extent = (int(patches[:, 2].max()), int(patches[:, 3].max()))
    if extent != (image.width, image.height):
        raise ValueError(f"image {image.id} ({image.path}): its patches span "
                         f"{extent[0]}x{extent[1]} pixels but its annotation says "
                         f"{image.width}x{image.height}: the JPEG and the XML disagree")


def labelled_images(split: VOCSplit, feature_paths: dict[str, FeatureHandle], *,
                    background_fraction: float = 0.1, seed: int = 0,
                    enlarge: float = DEFAULT_ENLARGE,
                    skipped: dict[str, str] | None = None) -> list[LabelledImage]:
    """A LabelledImage per image of the split that has features (feature_paths: image path ->
    file; images without one, e.g. unreadable ones, are left out). An image whose patches do
    not fit its annotation (check_extent) is left out too, and reported in `skipped`
    (image path -> why) when given, else raised."""
    by_image: dict[int, list[int]] = {}
    if split.task == "action":
        for i, j in split.persons():
            by_image.setdefault(i, []).append(j)
    out = []
    for i, image in enumerate(split.images):
        path = feature_paths.get(str(image.path))
        if path is None:
            continue
        patches = feature_access.boxes(path)
        try:
            check_extent(image, patches)
        except ValueError as error:
            if skipped is None:
                raise
            skipped[str(image.path)] = str(error)
            continue
        if split.task == "main":
            labels = main_labels(image, patches, split.classes,
                                 background_fraction=background_fraction, seed=seed)
        else:
            labels = action_labels(image, patches, by_image.get(i, []), split.classes,
                                   enlarge=enlarge, background_fraction=background_fraction,
                                   seed=seed)
        out.append(LabelledImage(path, labels))
    return out


@dataclass
class SplitScores:
    """Scores of a split's samples (images for "main", persons for "action"), [S, C] float32,
    and which samples could not be scored (their image has no features); `kept` is a bool [S]
    mask of the scored ones."""

    scores: torch.Tensor
    kept: torch.Tensor


def score_split(split: VOCSplit, feature_paths: dict[str, FeatureHandle], head, *,
                k: float = PAPER_K,
                enlarge: float = DEFAULT_ENLARGE, on_image=None,
                skipped: dict[str, str] | None = None) -> SplitScores:
    """Scores every sample of the split: image_scores of the head's class probabilities (the
    background column dropped) over the sample's patches. on_image(image, boxes, probs) is
    called for each image scored (maps, progress bars). An image whose patches do not fit its
    annotation (check_extent) is not scored, and is reported in `skipped` when given."""
    classes = len(split.classes)
    if split.task == "main":
        samples = [(i, None) for i in range(len(split.images))]
    else:
        samples = split.persons()
    scores = torch.zeros((len(samples), classes), dtype=torch.float32)
    kept = torch.zeros(len(samples), dtype=torch.bool)
    rows_of: dict[int, list[tuple[int, int | None]]] = {}
    for row, (i, j) in enumerate(samples):
        rows_of.setdefault(i, []).append((row, j))
    for i, image in enumerate(split.images):
        path = feature_paths.get(str(image.path))
        if path is None or i not in rows_of:
            continue
        result = feature_access.load(path)
        try:
            check_extent(image, result.boxes)
        except ValueError as error:
            if skipped is None:
                raise
            skipped[str(image.path)] = str(error)
            continue
        probs = head.probabilities(result.features)[:, :classes]
        for row, j in rows_of[i]:
            if j is None:
                scores[row] = image_scores(probs, k)
            else:
                mine = person_patches(image, result.boxes, j, enlarge=enlarge)
                scores[row] = image_scores(probs[mine], k)
            kept[row] = True
        if on_image is not None:
            on_image(image, result.boxes, probs)
    return SplitScores(scores, kept)
