"""Pascal VOC: the annotations, image sets and labels of a VOCdevkit year folder, and the
devkit's result files.

A year folder ROOT (e.g. ``VOCdevkit/VOC2007``) holds::

    ROOT/Annotations/{id}.xml                     one per image: size, objects, boxes, flags
    ROOT/JPEGImages/{id}.jpg                      the image
    ROOT/ImageSets/Main/{split}.txt               the split's image ids, one per line
    ROOT/ImageSets/Main/{class}_{split}.txt       "{id} {label}", label 1, -1 or 0 (difficult)
    ROOT/ImageSets/Action/{split}.txt             "{id} {object index}" per person (VOC2012)
    ROOT/ImageSets/Action/{action}_{split}.txt    "{id} {object index} {label}" per person

Boxes: VOC writes 1-based pixel coordinates with both ends inclusive (a box covering only the
top-left pixel is xmin = ymin = xmax = ymax = 1). cnnxfer boxes are (x0, y0, x1, y1), 0-based,
x1/y1 exclusive (``image[..., y0:y1, x0:x1]``, see cnnxfer.ops.boxes). :func:`voc_box` is the one
conversion between the two: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax.

Tasks: "main" is the classification task of VOC2007 (one sample per image, 20 object classes);
"action" is VOC2012's action classification (one sample per annotated person, 10 actions).

Reading never decodes an image: sizes come from the XML (or, when it has none, from the JPEG
header).
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# The devkit's evaluation beside its reader: cnnxfer.voc.average_precision is the documented path.
from .metrics import APTable, average_precision, mean_average_precision  # noqa: F401

__all__ = ["VOC_CLASSES", "VOC_ACTIONS", "TASKS", "VOCError", "VOCObject", "VOCImage", "VOCSplit",
           "voc_box", "read_annotation", "find_classes", "load_split", "write_results"]

# Devkit order, which is alphabetical for both lists.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor")
# VOC2012's actions; "other" (a person doing none of them) is annotated but not evaluated by the
# devkit, so it is no class here either.
VOC_ACTIONS: tuple[str, ...] = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse", "running",
    "takingphoto", "usingcomputer", "walking")
_NOT_AN_ACTION = "other"

TASKS: tuple[str, ...] = ("main", "action")
_FOLDERS = {"main": "Main", "action": "Action"}
_ON_ERROR = ("raise", "skip")
# The devkit's result files: comp2 (classification, any training data) and comp10 (action
# classification, any training data), as the paper's networks are pretrained on ImageNet.
_RESULT_NAMES = {"main": "comp2_cls_{split}_{name}.txt",
                 "action": "comp10_action_{split}_{name}.txt"}


class VOCError(ValueError):
    """A VOC file that does not hold what the devkit's format says; the message names the file,
    with the line or the object index, and what was expected."""


def voc_box(xmin, ymin, xmax, ymax) -> tuple[int, int, int, int]:
    """A VOC box (1-based pixels, both ends inclusive) as a cnnxfer box (x0, y0, x1, y1): 0-based
    pixels, x1/y1 exclusive.

    x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax: the same pixels, so a VOC box with
    xmin == xmax is one pixel wide (x1 - x0 = 1).

    Args:
        xmin, ymin, xmax, ymax: numbers or strings that parse as one. Some annotation files write
            coordinates as floats ("273.0", and a few with fractions); each is rounded to the
            nearest integer, halves up, before the shift.

    Returns:
        (x0, y0, x1, y1) Python ints. No range check here (there is no image size):
        read_annotation checks the box against its image.

    Raises:
        ValueError naming the coordinate and the value when it is not a finite number.
    """
    x0, y0, x1, y1 = (_pixel(name, value) for name, value in
                      (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)))
    return (x0 - 1, y0 - 1, x1, y1)


def _pixel(name: str, value) -> int:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number (a VOC pixel coordinate), got {value!r}") \
            from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite pixel coordinate, got {value!r}")
    return math.floor(number + 0.5)


@dataclass(frozen=True)
class VOCObject:
    """One <object> of an annotation.

    Attributes:
        name: its class, e.g. "cat" (or "person" for an action sample).
        box: (x0, y0, x1, y1) int pixels, 0-based, x1/y1 exclusive (see voc_box).
        difficult, truncated: the annotation's flags (False when absent).
        actions: for a person of VOC2012's action task, action name -> flag, every flag the file
            gives ("other" included); empty for any other object.
        index: the object's 1-based position in its file, as the devkit's Action files count.
    """

    name: str
    box: tuple[int, int, int, int]
    difficult: bool
    truncated: bool
    actions: dict[str, bool]
    index: int


@dataclass(frozen=True)
class VOCImage:
    """One annotated image.

    Attributes:
        id: the image id, the annotation file's name without ".xml" (e.g. "000005").
        path: its JPEG (the annotation's <filename> in JPEGImages).
        width, height: its size in pixels.
        objects: its objects in file order (objects[i].index == i + 1).
    """

    id: str
    path: Path
    width: int
    height: int
    objects: tuple[VOCObject, ...]


def read_annotation(path, *, image_dir=None) -> VOCImage:
    """Parse one VOC annotation file.

    Args:
        path: ROOT/Annotations/{id}.xml.
        image_dir: where the <filename> JPEG lives; default ROOT/JPEGImages (the annotation's
            folder's sibling). The image is not opened, unless the file has no <size> (or a zero
            one), when its size is read from the JPEG header (nothing is decoded).

    Returns:
        VOCImage whose id is the file's stem. Missing <difficult>/<truncated> read as False.

    Raises:
        FileNotFoundError when ``path`` does not exist; VOCError naming the file (and the line, or
        the 1-based object index) for malformed XML, a missing <filename>, <size> (with no
        readable JPEG to fall back on), <name>, <bndbox> or coordinate, a non-numeric coordinate
        or flag, or a box that is empty or leaves the image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation file not found: {str(path)!r}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        line, _ = error.position  # the message (e.g. "mismatched tag: line 24, column 3") has both
        raise VOCError(f"{path}:{line}: malformed XML ({error})") from None
    if root.tag != "annotation":
        raise VOCError(f"{path}: the root element is <{root.tag}>, expected <annotation>")
    filename = _required_text(root, "filename", f"{path}")
    folder = Path(image_dir) if image_dir is not None else path.parent.parent / "JPEGImages"
    image_path = folder / filename
    width, height = _size(root, path, image_path)
    objects = tuple(_object(node, index, path, width, height)
                    for index, node in enumerate(root.findall("object"), start=1))
    return VOCImage(id=path.stem, path=image_path, width=width, height=height, objects=objects)


def _required_text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    text = child.text.strip() if child is not None and child.text else ""
    if not text:
        state = "is empty" if child is not None else "is missing"
        raise VOCError(f"{where}: <{node.tag}><{tag}> {state}, expected a value")
    return text


def _integer(text: str, tag: str, where: str) -> int:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number == int(number)):
        raise VOCError(f"{where}: <{tag}> = {text!r}, expected an integer")
    return int(number)


def _size(root: ET.Element, path: Path, image_path: Path) -> tuple[int, int]:
    size = root.find("size")
    if size is not None:
        where = f"{path}"
        width = _integer(_required_text(size, "width", where), "width", where)
        height = _integer(_required_text(size, "height", where), "height", where)
        if width < 0 or height < 0:
            raise VOCError(f"{path}: <size> is {width}x{height}, expected positive integers")
        if width > 0 and height > 0:
            return width, height
    # No <size> (or, as in a few VOC files, a zero one): the JPEG header holds it, and
    # Image.open reads only the header.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as image:
            return image.size
    except FileNotFoundError:
        raise VOCError(f"{path}: no <size> (or a zero one) and its image {image_path} is not "
                       f"there to read the size from") from None
    except (UnidentifiedImageError, OSError) as error:
        raise VOCError(f"{path}: no <size> (or a zero one) and its image {image_path} has no "
                       f"readable header: {error}") from None


def _flag(node: ET.Element, tag: str, where: str) -> bool:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    return _integer(child.text.strip(), tag, where) != 0


def _object(node: ET.Element, index: int, path: Path, width: int, height: int) -> VOCObject:
    where = f"{path}: object {index}"
    name = _required_text(node, "name", where)
    where = f"{path}: object {index} ({name})"
    bndbox = node.find("bndbox")
    if bndbox is None:
        raise VOCError(f"{where}: <object><bndbox> is missing, expected <xmin> <ymin> <xmax> "
                       f"<ymax>")
    texts = [_required_text(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax")]
    try:
        box = voc_box(*texts)
    except ValueError as error:
        raise VOCError(f"{where}: {error}") from None
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise VOCError(
            f"{where}: box (xmin, ymin, xmax, ymax) = ({', '.join(texts)}) must satisfy "
            f"1 <= xmin <= xmax <= width={width} and 1 <= ymin <= ymax <= height={height} "
            f"(VOC's 1-based inclusive pixels; cnnxfer box (x0, y0, x1, y1) = {box})")
    actions = {}
    node_actions = node.find("actions")
    if node_actions is not None:
        for child in node_actions:
            text = (child.text or "").strip()
            if not text:
                raise VOCError(f"{where}: <actions><{child.tag}> is empty, expected 0 or 1")
            actions[child.tag] = _integer(text, child.tag, where) != 0
    return VOCObject(name=name, box=box, difficult=_flag(node, "difficult", where),
                     truncated=_flag(node, "truncated", where), actions=actions, index=index)


@dataclass
class VOCSplit:
    """The images of one image set of a VOC tree, and their labels.

    Attributes:
        root: the year folder.
        split: the image set's name, e.g. "trainval".
        task: "main" (samples are images) or "action" (samples are persons, see persons()).
        classes: the label columns, object classes or actions.
        images: the images read, in the image set's order (first listing of each id).
        skipped: {"id": ..., "error": ...} for each image left out by on_error="skip".
        listed: task "action": image id -> the 1-based indices of the persons that the image
            set names ("id objindex" lines). An image absent from it (listed by a bare "id" line)
            contributes all its objects with actions.
    """

    root: Path
    split: str
    task: str
    classes: tuple[str, ...]
    images: list[VOCImage]
    skipped: list[dict] = field(default_factory=list)
    listed: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """The image ids, in images' order."""
        return [image.id for image in self.images]

    def persons(self) -> list[tuple[int, int]]:
        """The action samples, as (position in images, position in that image's objects), in
        image order then object order: the persons the image set names, or, for images it
        names by id alone, every object with an <actions> element."""
        out = []
        for i, image in enumerate(self.images):
            named = self.listed.get(image.id)
            for j, obj in enumerate(image.objects):
                if (obj.index in named) if named is not None else bool(obj.actions):
                    out.append((i, j))
        return out

    def person_ids(self) -> list[tuple[str, int]]:
        """The action samples as (image id, 1-based object index): the devkit's names for them,
        as write_results takes them."""
        return [(self.images[i].id, self.images[i].objects[j].index) for i, j in self.persons()]

    def labels(self) -> torch.Tensor:
        """The ground truth, int8.

        task "main": [N, C], per image and class 1 if the image has a non-difficult object of
        the class, 0 if all its objects of the class are difficult, -1 if it has none (the
        devkit's labels). task "action": [P, A] over persons(), 1 if the person's flag for the
        action is set, else -1 (a flag the file does not give counts as not set).

        Where the devkit's label file ImageSets/{Main|Action}/{class}_{split}.txt exists, that
        class's column is read from it, as the devkit's evaluation does; the other columns are
        derived from the annotations as above (the two agree on a devkit tree).

        Raises:
            VOCError naming the label file and line for a malformed line, or the sample it
            lacks.
        """
        if self.task == "main":
            keys = self.ids
            derived = np.full((len(keys), len(self.classes)), -1, dtype=np.int8)
            column = {name: c for c, name in enumerate(self.classes)}
            for i, image in enumerate(self.images):
                for obj in image.objects:
                    c = column.get(obj.name)
                    if c is not None:
                        derived[i, c] = max(derived[i, c], 0 if obj.difficult else 1)
        else:
            persons = self.persons()
            keys = [(self.images[i].id, self.images[i].objects[j].index) for i, j in persons]
            derived = np.array([[1 if self.images[i].objects[j].actions.get(a, False) else -1
                                 for a in self.classes] for i, j in persons],
                               dtype=np.int8).reshape(len(persons), len(self.classes))
        folder = Path(self.root) / "ImageSets" / _FOLDERS[self.task]
        for c, name in enumerate(self.classes):
            path = folder / f"{name}_{self.split}.txt"
            if path.is_file():
                derived[:, c] = _read_label_file(path, self.task, keys)
        return torch.from_numpy(derived)


def _read_label_file(path: Path, task: str, keys: list) -> np.ndarray:
    """One class's labels from a devkit label file, in the order of keys (image ids for "main",
    (id, object index) for "action"). Lines for samples not in keys are ignored (e.g. images
    left out by on_error="skip")."""
    width = 2 if task == "main" else 3
    form = "'{id} {label}'" if task == "main" else "'{id} {object index} {label}'"
    found: dict = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != width:
                raise ValueError
            label = int(parts[-1])
            key = parts[0] if task == "main" else (parts[0], int(parts[1]))
        except ValueError:
            raise VOCError(f"{path}:{number}: {line.strip()!r}, expected {form}") from None
        if label not in (-1, 0, 1):
            raise VOCError(f"{path}:{number}: label {label}, expected 1, -1 or 0")
        if key in found:
            raise VOCError(f"{path}:{number}: {key!r} is labelled a second time")
        found[key] = label
    missing = [key for key in keys if key not in found]
    if missing:
        raise VOCError(f"{path}: no label for {missing[0]!r} ({len(missing)} of the split's "
                       f"{len(keys)} samples lack one)")
    return np.array([found[key] for key in keys], dtype=np.int8)


def find_classes(root, split: str, task: str = "main") -> tuple[str, ...]:
    """The classes of a VOC tree's split.

    From the names of the devkit's label files ImageSets/{Main|Action}/{class}_{split}.txt when
    there are any; otherwise from the split's annotations: the object names ("main") or the
    action flags of its persons ("action"). "other" is never an action class. Sorted
    alphabetically, which for VOC's own names is the devkit's order (VOC_CLASSES and VOC_ACTIONS
    are alphabetical). An empty tuple when the split has no label files and no objects.

    Raises:
        FileNotFoundError for a missing folder or image set; VOCError as load_split.
    """
    _check_choice("task", task, TASKS)
    names = _classes_from_files(_imagesets(Path(root), task), split, task)
    if names:
        return names
    return load_split(root, split, task=task).classes  # derived from the annotations


def _classes_from_files(folder: Path, split: str, task: str) -> tuple[str, ...]:
    suffix = f"_{split}.txt"
    names = {path.name[:-len(suffix)] for path in folder.glob(f"*{suffix}")
             if len(path.name) > len(suffix)}
    if task == "action":
        names.discard(_NOT_AN_ACTION)
    return tuple(sorted(names))


def _classes_from_images(images: Sequence[VOCImage], task: str) -> tuple[str, ...]:
    if task == "main":
        names = {obj.name for image in images for obj in image.objects}
    else:
        names = {action for image in images for obj in image.objects for action in obj.actions}
        names.discard(_NOT_AN_ACTION)
    return tuple(sorted(names))


def load_split(root, split: str, *, task: str = "main", classes: Sequence[str] | None = None,
               on_error: str = "raise", ignore_unknown: bool = False) -> VOCSplit:
    """Read the images of one image set of a VOC tree.

    Args:
        root: the year folder (e.g. VOCdevkit/VOC2007).
        split: the image set, e.g. "trainval" or "test": ImageSets/{Main|Action}/{split}.txt.
        task: "main" (lines "id") or "action" (lines "id objindex", or "id" for every person
            with actions in the image).
        classes: the label columns, used as given; None: find_classes's (label file names, else
            the names in the annotations read).
        on_error: "raise" raises the first bad image's error; "skip" leaves bad images out and
            records them in ``skipped`` as {"id", "error"}. Errors of the image set file itself
            (a malformed or repeated line) always raise.
        ignore_unknown: task "main": an object whose class is not in ``classes`` (given, or read
            from label files) is an error naming its file, index and the known classes, since a
            misspelt class would otherwise be silently negative; True keeps such objects in
            ``objects`` and leaves them out of labels(). Task "action" ignores it (its classes are
            actions, and a flag outside them is simply not a column).

    Returns:
        VOCSplit. An image with no objects is valid (all its labels are -1).

    Raises:
        FileNotFoundError naming the path and the expected layout when ROOT or the image set is
        missing; VOCError naming the image set file and line when a listed image has no
        annotation or no JPEG (or, for "action", the named object is not a person with
        actions), and naming the annotation (and object) for a bad annotation; ValueError for a
        bad argument.
    """
    _check_choice("task", task, TASKS)
    _check_choice("on_error", on_error, _ON_ERROR)
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise ValueError(f"split must be an image set name such as 'trainval', got {split!r}")
    root = Path(root)
    folder = _imagesets(root, task)
    listing = folder / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"VOC image set not found: {str(listing)!r} (expected "
                                f"{_layout(task, split)})")
    entries = _read_listing(listing, task)

    if classes is not None:
        names = _check_classes(classes)
    else:
        names = _classes_from_files(folder, split, task)
    # Derived from the annotations after reading them when there are no label files.
    derive = classes is None and not names
    known = None if derive or task != "main" or ignore_unknown else set(names)

    images, skipped, listed = [], [], {}
    for image_id, (line, objects) in entries.items():
        try:
            image = _read_listed(root, listing, line, image_id)
            if known is not None:
                _check_known(image, known, names, root)
            if objects is not None:
                _check_persons(image, objects, listing)
                listed[image_id] = tuple(sorted(objects))
        except VOCError as error:
            if on_error == "raise":
                raise
            skipped.append({"id": image_id, "error": str(error)})
            continue
        images.append(image)
    if derive:
        names = _classes_from_images(images, task)
    return VOCSplit(root=root, split=split, task=task, classes=names, images=images,
                    skipped=skipped, listed=listed)


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_classes(classes) -> tuple[str, ...]:
    if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
        raise TypeError(f"classes must be a sequence of class names (non-empty str), got "
                        f"{classes!r}")
    names = tuple(classes)
    if len(set(names)) != len(names):
        raise ValueError(f"classes must not repeat a name, got {names}")
    return names


def _layout(task: str, split: str) -> str:
    return (f"a VOCdevkit year folder: ROOT/Annotations/{{id}}.xml, ROOT/JPEGImages/{{id}}.jpg "
            f"and ROOT/ImageSets/{_FOLDERS[task]}/{split}.txt")


def _imagesets(root: Path, task: str) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"VOC root folder not found: {str(root)!r} (expected "
                                f"{_layout(task, '{split}')})")
    return root / "ImageSets" / _FOLDERS[task]


def _read_listing(path: Path, task: str) -> dict[str, tuple[int, dict[int, int] | None]]:
    """An image set file as id -> (line of its first listing, {1-based object index: line} of the
    persons named for it, or None for "all its persons"), in file order."""
    entries: dict[str, tuple[int, dict[int, int] | None]] = {}
    whole: set[str] = set()  # action ids listed by a bare "id" line: all their persons
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if task == "main":
            if len(parts) != 1:
                raise VOCError(f"{path}:{number}: {line.strip()!r}, expected one image id")
            if parts[0] in entries:
                raise VOCError(f"{path}:{number}: image {parts[0]!r} is listed a second time "
                               f"(first on line {entries[parts[0]][0]})")
            entries[parts[0]] = (number, None)
            continue
        if len(parts) > 2 or (len(parts) == 2 and not (parts[1].isdigit() and int(parts[1]) > 0)):
            raise VOCError(f"{path}:{number}: {line.strip()!r}, expected 'id' or 'id objindex' "
                           f"(a 1-based object index)")
        image_id = parts[0]
        first, objects = entries.get(image_id, (number, {}))
        if len(parts) == 1:
            whole.add(image_id)
        else:
            index = int(parts[1])
            if index in objects:
                raise VOCError(f"{path}:{number}: object {index} of image {image_id!r} is "
                               f"listed a second time (first on line {objects[index]})")
            objects[index] = number
        entries[image_id] = (first, objects)
    for image_id in whole:
        entries[image_id] = (entries[image_id][0], None)
    return entries


def _read_listed(root: Path, listing: Path, line: int, image_id: str) -> VOCImage:
    annotation = root / "Annotations" / f"{image_id}.xml"
    if not annotation.is_file():
        raise VOCError(f"{listing}:{line}: image {image_id!r} has no annotation file "
                       f"{annotation}")
    image = read_annotation(annotation)
    if not image.path.is_file():
        raise VOCError(f"{listing}:{line}: image {image_id!r} has no JPEG: {image.path} (the "
                       f"<filename> of {annotation}) not found")
    return image


def _check_known(image: VOCImage, known: set[str], names: tuple[str, ...], root: Path) -> None:
    for obj in image.objects:
        if obj.name not in known:
            annotation = root / "Annotations" / f"{image.id}.xml"
            raise VOCError(f"{annotation}: object {obj.index} is a {obj.name!r}, not one of the "
                           f"classes {list(names)} (pass ignore_unknown=True to leave such "
                           f"objects out of the labels)")


def _check_persons(image: VOCImage, objects: dict[int, int], listing: Path) -> None:
    for index, line in sorted(objects.items()):
        if index > len(image.objects):
            raise VOCError(f"{listing}:{line}: object {index} of image {image.id!r}: its "
                           f"annotation has only {len(image.objects)} objects")
        if not image.objects[index - 1].actions:
            raise VOCError(f"{listing}:{line}: object {index} of image {image.id!r} has no "
                           f"<actions>, expected a person annotated for the action task")


def write_results(folder, split: str, classes: Sequence[str], ids, scores, *,
                  task: str = "main", persons=None) -> list[Path]:
    """Write scores as the devkit's result files, one per class.

    task "main": ``comp2_cls_{split}_{class}.txt``, lines "{id} {score:.6f}" (comp2: the
    classification competition with outside training data, as an ImageNet-pretrained network
    is). task "action": ``comp10_action_{split}_{class}.txt``, lines
    "{id} {object index} {score:.6f}" (comp10, likewise).

    Args:
        folder: where to write (created if missing); existing files are replaced.
        split: the image set scored, e.g. "test".
        classes: the C class names, in column order.
        ids: the N image ids, one per row ("main"); for "action" None, or the per-row image ids,
            which must match persons'.
        scores: [N, C] finite real scores (tensor, array or nested list).
        persons: "action" only: N (image id, 1-based object index) pairs, one per row, e.g.
            VOCSplit.person_ids().

    Returns:
        The files written, in class order.
    """
    _check_choice("task", task, TASKS)
    names = _check_classes(classes)
    if task == "main":
        if persons is not None:
            raise ValueError("persons names the rows of task='action' results; task='main' rows "
                             "are named by ids")
        rows = [str(image_id) for image_id in _sequence("ids", ids)]
    else:
        if persons is None:
            raise ValueError("task='action' needs persons: (image id, object index) per row")
        rows = []
        for r, pair in enumerate(_sequence("persons", persons)):
            try:
                image_id, index = pair
                if int(index) != index or index < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"persons[{r}] = {pair!r}, expected (image id, 1-based object "
                                 f"index)") from None
            rows.append(f"{image_id} {int(index)}")
        if ids is not None:
            ids = [str(image_id) for image_id in _sequence("ids", ids)]
            wrong = [r for r, row in enumerate(rows) if r >= len(ids) or row.split()[0] != ids[r]]
            if wrong or len(ids) != len(rows):
                raise ValueError(f"ids must be None or the persons' image ids row by row, got "
                                 f"{len(ids)} ids for {len(rows)} persons (first mismatch at "
                                 f"row {wrong[0] if wrong else len(rows)})")
    table = _scores(scores, len(rows), len(names))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c, name in enumerate(names):
        path = folder / _RESULT_NAMES[task].format(split=split, name=name)
        path.write_text("".join(f"{row} {score:.6f}\n" for row, score in zip(rows, table[:, c])))
        written.append(path)
    return written


def _sequence(name: str, values) -> list:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence, got the string {values!r}")
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence, got {type(values).__name__}") from None


def _scores(scores, rows: int, columns: int) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    try:
        table = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"scores must be a [N, C] tensor, array or nested list of numbers: "
                        f"{error}") from None
    if table.shape != (rows, columns):
        raise ValueError(f"scores must be [N, C] = [{rows}, {columns}] (one row per sample, one "
                         f"column per class), got shape {table.shape}")
    bad = ~np.isfinite(table)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"scores[{r}, {c}] = {table[r, c]}, expected a finite score")
    return table
