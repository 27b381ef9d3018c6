"""Pascal VOC trees (cnnxfer.data.voc): annotations, boxes, labels, action persons, result files
and the errors of malformed trees, on small trees written in the devkit's formats."""
import re
from pathlib import Path

import pytest
import torch

from cnnxfer.data import (
    VOC_ACTIONS,
    VOC_CLASSES,
    VOCError,
    find_classes,
    load_split,
    read_annotation,
    voc_box,
    write_results,
)

from voc_trees import write_voc_tree

IMAGES = [
    {"id": "000001", "objects": [
        {"name": "cat", "box": (1, 2, 30, 40), "truncated": True},
        {"name": "dog", "box": ("10.0", 5, 64, 48)},  # a float coordinate, as some files have
    ]},
    {"id": "000002", "size": (50, 40), "objects": [
        {"name": "cat", "box": (5, 5, 20, 20), "difficult": True},  # only a difficult cat
    ]},
    {"id": "000003", "objects": []},  # no objects at all: valid, every label -1
]


@pytest.fixture
def tree(tmp_path):
    return write_voc_tree(tmp_path / "VOC2007", IMAGES)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


def test_voc_box_by_hand():
    # VOC's (1, 1, 1, 1) is the top-left pixel alone: cnnxfer (0, 0, 1, 1)
    assert voc_box(1, 1, 1, 1) == (0, 0, 1, 1)
    assert voc_box(48, 240, 195, 371) == (47, 239, 195, 371)
    # floats as written in some files, rounded to the nearest integer (halves up)
    assert voc_box("273.0", " 12 ", 300.4, "300.5") == (272, 11, 300, 301)
    with pytest.raises(ValueError, match="ymin must be a number .*got 'abc'"):
        voc_box(1, "abc", 3, 4)
    with pytest.raises(ValueError, match="xmax must be a finite pixel coordinate"):
        voc_box(1, 1, float("inf"), 4)


def test_reading_a_tree(tree):
    split = load_split(tree, "trainval")
    assert split.ids == ["000001", "000002", "000003"] and split.task == "main"
    assert split.classes == ("cat", "dog") and split.skipped == []
    first, second, third = split.images
    assert first.path == tree / "JPEGImages" / "000001.jpg" and first.path.is_file()
    assert (first.width, first.height) == (64, 48) and (second.width, second.height) == (50, 40)
    cat, dog = first.objects
    # x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax
    assert cat.box == (0, 1, 30, 40) and dog.box == (9, 4, 64, 48)
    assert (cat.name, cat.truncated, cat.difficult, cat.index, cat.actions) == \
        ("cat", True, False, 1, {})
    assert (dog.name, dog.truncated, dog.difficult, dog.index) == ("dog", False, False, 2)
    assert second.objects[0].difficult and third.objects == ()
    assert all(type(v) is int for v in cat.box + dog.box)  # "10.0" in the file, an int here


def test_labels_from_files_and_from_annotations_agree(tree, tmp_path):
    expected = torch.tensor([[1, 1],     # a cat and a dog
                             [0, -1],    # only a difficult cat: 0
                             [-1, -1]],  # no objects
                            dtype=torch.int8)
    labels = load_split(tree, "trainval").labels()
    assert labels.dtype == torch.int8 and torch.equal(labels, expected)
    bare = write_voc_tree(tmp_path / "bare", IMAGES, write_class_files=False)
    split = load_split(bare, "trainval")
    assert split.classes == ("cat", "dog") and torch.equal(split.labels(), expected)
    # the devkit reads the label files: they win where they exist
    edit(tree / "ImageSets/Main/dog_trainval.txt", "000003 -1", "000003  1")
    assert load_split(tree, "trainval").labels()[:, 1].tolist() == [1, -1, 1]


def test_other_class_names(tmp_path):
    images = [{"id": "a", "objects": [{"name": "square", "box": (1, 1, 8, 8)}]},
              {"id": "b", "objects": [{"name": "circle", "box": (3, 3, 9, 9)},
                                      {"name": "square", "box": (2, 2, 5, 5), "difficult": True}]}]
    root = write_voc_tree(tmp_path / "shapes", images, split="train")
    split = load_split(root, "train")
    assert split.classes == ("circle", "square")
    assert split.labels().tolist() == [[-1, 1], [1, 0]]
    # a class list must name every class present (a misspelt one would silently be negative)
    with pytest.raises(VOCError, match=r"b\.xml: object 1 is a 'circle', not one of the classes"):
        load_split(root, "train", classes=["square"])
    kept = load_split(root, "train", classes=["square"], ignore_unknown=True)
    assert kept.labels().tolist() == [[1], [0]] and len(kept.images[1].objects) == 2


def test_find_classes(tmp_path):
    images = [{"id": "x", "objects": [{"name": n, "box": (1, 1, 4, 4)} for n in VOC_CLASSES]}]
    voc = write_voc_tree(tmp_path / "voc", images, classes=list(reversed(VOC_CLASSES)))
    assert find_classes(voc, "trainval") == VOC_CLASSES  # from the files, in devkit order
    bare = write_voc_tree(tmp_path / "bare", images[:1], write_class_files=False)
    assert find_classes(bare, "trainval") == VOC_CLASSES  # from the annotations
    # label files name the classes even when no image has an object of one
    few = write_voc_tree(tmp_path / "few", [{"id": "y", "objects": []}], classes=["zebra", "ant"])
    assert find_classes(few, "trainval") == ("ant", "zebra")
    assert load_split(few, "trainval").labels().tolist() == [[-1, -1]]
    # two splits of one tree: a label file of one split is no class of the other
    write_voc_tree(few, [{"id": "y", "objects": []}], split="val", classes=["bee"])
    assert find_classes(few, "val") == ("bee",)
    assert find_classes(few, "trainval") == ("ant", "zebra")


def test_two_splits_share_images(tree):
    write_voc_tree(tree, IMAGES[1:], split="val")
    assert load_split(tree, "val").ids == ["000002", "000003"]
    assert load_split(tree, "trainval").ids == ["000001", "000002", "000003"]


ACTION_IMAGES = [
    {"id": "2012_000001", "size": (60, 50), "objects": [
        {"name": "person", "box": (1, 1, 30, 50), "actions": {"jumping": True, "running": True}},
        {"name": "dog", "box": (31, 20, 60, 50)},
        {"name": "person", "box": (20, 5, 40, 45), "actions": {"phoning": True, "other": False}},
    ]},
    {"id": "2012_000002", "objects": [
        {"name": "person", "box": (5, 5, 20, 40), "actions": {"other": True}},
    ]},
]


def test_action_persons_and_labels(tmp_path):
    root = write_voc_tree(tmp_path / "VOC2012", ACTION_IMAGES, task="action",
                          classes=list(VOC_ACTIONS))
    listing = (root / "ImageSets/Action/trainval.txt").read_text().split("\n")
    assert listing[:3] == ["2012_000001 1", "2012_000001 3", "2012_000002 1"]
    split = load_split(root, "trainval", task="action")
    assert split.classes == VOC_ACTIONS  # "other" is no class
    assert split.persons() == [(0, 0), (0, 2), (1, 0)]
    assert split.person_ids() == [("2012_000001", 1), ("2012_000001", 3), ("2012_000002", 1)]
    person = split.images[0].objects[0]
    assert person.actions["jumping"] and not person.actions["walking"]  # 0 flags are written
    assert person.box == (0, 0, 30, 50)
    labels = split.labels()
    assert labels.shape == (3, 10) and labels.dtype == torch.int8
    expected = torch.full((3, 10), -1, dtype=torch.int8)
    expected[0, VOC_ACTIONS.index("jumping")] = expected[0, VOC_ACTIONS.index("running")] = 1
    expected[1, VOC_ACTIONS.index("phoning")] = 1
    assert torch.equal(labels, expected)
    # the same from the annotations alone, with classes from the <actions> flags
    bare = write_voc_tree(tmp_path / "bare", ACTION_IMAGES, task="action", write_class_files=False)
    split = load_split(bare, "trainval", task="action")
    assert split.classes == ("jumping", "phoning", "running")
    assert split.labels().tolist() == [[1, -1, 1], [-1, 1, -1], [-1, -1, -1]]
    # bare "id" lines: every person with actions; "id objindex" lines: only the named ones
    (bare / "ImageSets/Action/ids.txt").write_text("2012_000001\n2012_000002\n")
    assert load_split(bare, "ids", task="action").persons() == [(0, 0), (0, 2), (1, 0)]
    (bare / "ImageSets/Action/one.txt").write_text("2012_000001 3\n")
    one = load_split(bare, "one", task="action", classes=["phoning"])
    assert one.persons() == [(0, 2)] and one.labels().tolist() == [[1]]


def test_action_listing_errors(tmp_path):
    root = write_voc_tree(tmp_path / "VOC2012", ACTION_IMAGES, task="action")
    folder = root / "ImageSets/Action"
    (folder / "dog.txt").write_text("2012_000001 1\n2012_000001 2\n")
    with pytest.raises(VOCError, match=r"dog\.txt:2: object 2 of image '2012_000001' has no "
                                       r"<actions>"):
        load_split(root, "dog", task="action")
    (folder / "far.txt").write_text("2012_000002 4\n")
    with pytest.raises(VOCError, match=r"far\.txt:1: object 4 .* has only 1 objects"):
        load_split(root, "far", task="action")
    (folder / "twice.txt").write_text("2012_000002 1\n2012_000002 1\n")
    with pytest.raises(VOCError, match=r"twice\.txt:2: object 1 .* second time \(first on line 1"):
        load_split(root, "twice", task="action")
    (folder / "bad.txt").write_text("2012_000002 first\n")
    with pytest.raises(VOCError, match=r"bad\.txt:1: .*expected 'id' or 'id objindex'"):
        load_split(root, "bad", task="action")
    edit(folder / "jumping_trainval.txt", "2012_000002 1 -1\n", "")
    with pytest.raises(VOCError, match=r"jumping_trainval\.txt: no label for \('2012_000002', 1\)"):
        load_split(root, "trainval", task="action").labels()


def test_write_results(tmp_path, tree):
    split = load_split(tree, "trainval")
    scores = torch.tensor([[0.5, -1.25], [2.0, 0.0], [1 / 3, 1e-7]])
    paths = write_results(tmp_path / "out" / "results", "test", split.classes, split.ids, scores)
    assert [p.name for p in paths] == ["comp2_cls_test_cat.txt", "comp2_cls_test_dog.txt"]
    assert paths[0].read_text() == "000001 0.500000\n000002 2.000000\n000003 0.333333\n"
    assert paths[1].read_text() == "000001 -1.250000\n000002 0.000000\n000003 0.000000\n"

    persons = [("2012_000001", 1), ("2012_000001", 3)]
    paths = write_results(tmp_path / "act", "val", ["jumping", "phoning"], None,
                          [[0.25, 0.5], [1.0, -2.0]], task="action", persons=persons)
    assert [p.name for p in paths] == ["comp10_action_val_jumping.txt",
                                       "comp10_action_val_phoning.txt"]
    assert paths[1].read_text() == "2012_000001 1 0.500000\n2012_000001 3 -2.000000\n"
    with pytest.raises(ValueError, match=r"scores must be \[N, C\] = \[3, 2\].*got shape \(3,\)"):
        write_results(tmp_path, "test", split.classes, split.ids, [1, 2, 3])
    with pytest.raises(ValueError, match=r"scores\[1, 0\] = nan, expected a finite score"):
        write_results(tmp_path, "test", ["cat"], ["a", "b"], [[1.0], [float("nan")]])
    with pytest.raises(ValueError, match="task='action' needs persons"):
        write_results(tmp_path, "val", ["jumping"], None, [[1.0]], task="action")
    with pytest.raises(ValueError, match=r"persons\[0\] = \('x', 0\), expected"):
        write_results(tmp_path, "val", ["jumping"], None, [[1.0]], task="action",
                      persons=[("x", 0)])
    with pytest.raises(ValueError, match="ids must be None or the persons' image ids"):
        write_results(tmp_path, "val", ["jumping"], ["y"], [[1.0]], task="action",
                      persons=[("x", 1)])


def test_missing_size_reads_the_jpeg_header(tree):
    path = tree / "Annotations/000002.xml"
    edit(path, "<size>", "<nosize>")
    edit(path, "</size>", "</nosize>")
    image = read_annotation(path)
    assert (image.width, image.height) == (50, 40)
    (tree / "JPEGImages/000002.jpg").unlink()
    with pytest.raises(VOCError, match=r"000002\.xml: no <size> .*000002\.jpg is not there"):
        read_annotation(path)


def test_missing_flags_default_to_false_and_image_dir(tree, tmp_path):
    path = tree / "Annotations/000001.xml"
    edit(path, "<truncated>1</truncated>", "")
    edit(path, "<difficult>0</difficult>", "")
    image = read_annotation(path, image_dir=tmp_path / "elsewhere")
    assert image.objects[0].truncated is False and image.objects[0].difficult is False
    assert image.path == tmp_path / "elsewhere" / "000001.jpg"


# The zoo: (what, how to break the tree's image 000002, error type, message pattern).
def _remove(relative):
    return lambda root: (root / relative).unlink()


def _edit(old, new, file="Annotations/000002.xml"):
    return lambda root: edit(root / file, old, new)


ZOO = [
    ("missing image", _remove("JPEGImages/000002.jpg"), VOCError,
     r"trainval\.txt:2: image '000002' has no JPEG: .*000002\.jpg .*not found"),
    ("missing annotation", _remove("Annotations/000002.xml"), VOCError,
     r"trainval\.txt:2: image '000002' has no annotation file .*000002\.xml"),
    ("malformed XML", _edit("</object>", "</objet>"), VOCError,
     r"000002\.xml:24: malformed XML \(mismatched tag: line 24"),  # </objet> is on line 24
    ("box outside", _edit("<xmax>20</xmax>", "<xmax>51</xmax>"), VOCError,
     r"000002\.xml: object 1 \(cat\): box \(xmin, ymin, xmax, ymax\) = \(5, 5, 51, 20\) must "
     r"satisfy 1 <= xmin <= xmax <= width=50"),
    ("box before the first pixel", _edit("<ymin>5</ymin>", "<ymin>0</ymin>"), VOCError,
     r"000002\.xml: object 1 \(cat\): box .*= \(5, 0, 20, 20\)"),
    ("zero-size box", _edit("<xmax>20</xmax>", "<xmax>4</xmax>"), VOCError,
     r"000002\.xml: object 1 \(cat\): box .* \(4, 4, 4, 20\)\)"),
    ("non-numeric coordinate", _edit("<ymax>20</ymax>", "<ymax>twenty</ymax>"), VOCError,
     r"000002\.xml: object 1 \(cat\): ymax must be a number .*'twenty'"),
    ("missing coordinate", _edit("<ymax>20</ymax>", ""), VOCError,
     r"000002\.xml: object 1 \(cat\): <bndbox><ymax> is missing"),
    ("missing bndbox", lambda root: _strip_bndbox(root / "Annotations/000002.xml"), VOCError,
     r"000002\.xml: object 1 \(cat\): <object><bndbox> is missing"),
    ("missing name", _edit("<name>cat</name>", ""), VOCError,
     r"000002\.xml: object 1: <object><name> is missing"),
    ("missing filename", _edit("<filename>000002.jpg</filename>", ""), VOCError,
     r"000002\.xml: <annotation><filename> is missing"),
    ("bad flag", _edit("<difficult>1</difficult>", "<difficult>yes</difficult>"), VOCError,
     r"000002\.xml: object 1 \(cat\): <difficult> = 'yes', expected an integer"),
    ("unknown class", _edit("<name>cat</name>", "<name>cta</name>"), VOCError,
     r"000002\.xml: object 1 is a 'cta', not one of the classes \['cat', 'dog'\]"),
    ("listed twice", _edit("000003\n", "000003\n000002\n", "ImageSets/Main/trainval.txt"),
     VOCError, r"trainval\.txt:4: image '000002' is listed a second time \(first on line 2\)"),
    ("two ids on a line", _edit("000002\n", "000002 000004\n", "ImageSets/Main/trainval.txt"),
     VOCError, r"trainval\.txt:2: '000002 000004', expected one image id"),
]


def _strip_bndbox(path):
    text = path.read_text()
    path.write_text(re.sub(r"<bndbox>.*</bndbox>", "", text, flags=re.S))


@pytest.mark.parametrize("what,breaks,error,pattern", ZOO, ids=[z[0] for z in ZOO])
def test_malformed_tree(tree, what, breaks, error, pattern):
    breaks(tree)
    with pytest.raises(error, match=pattern):
        load_split(tree, "trainval")


@pytest.mark.parametrize("what,breaks,error,pattern", ZOO[:13], ids=[z[0] for z in ZOO[:13]])
def test_skip_keeps_the_good_images(tree, what, breaks, error, pattern):
    breaks(tree)
    split = load_split(tree, "trainval", on_error="skip")
    assert split.ids == ["000001", "000003"]
    assert [s["id"] for s in split.skipped] == ["000002"]
    assert re.search(pattern, split.skipped[0]["error"])
    assert split.labels().tolist() == [[1, 1], [-1, -1]]


def test_listed_image_with_no_files_and_missing_image_sets(tree):
    edit(tree / "ImageSets/Main/trainval.txt", "000003\n", "000003\n\n000099\n")
    with pytest.raises(VOCError, match=r"trainval\.txt:5: image '000099' has no annotation file"):
        load_split(tree, "trainval")
    split = load_split(tree, "trainval", on_error="skip")
    assert split.ids == ["000001", "000002", "000003"]
    assert split.skipped[0]["id"] == "000099"
    with pytest.raises(FileNotFoundError, match=r"VOC image set not found: .*ImageSets/Main/"
                                                r"test\.txt.*expected a VOCdevkit year folder"):
        load_split(tree, "test")
    with pytest.raises(FileNotFoundError, match=r"VOC root folder not found: .*nowhere"):
        load_split(tree / "nowhere", "trainval")
    with pytest.raises(FileNotFoundError, match=r"VOC annotation file not found: .*000099\.xml"):
        read_annotation(tree / "Annotations/000099.xml")


def test_bad_label_files_and_arguments(tree):
    labels = tree / "ImageSets/Main/cat_trainval.txt"
    edit(labels, "000002  0", "000002  2")
    with pytest.raises(VOCError, match=r"cat_trainval\.txt:2: label 2, expected 1, -1 or 0"):
        load_split(tree, "trainval").labels()
    edit(labels, "000002  2\n", "")
    with pytest.raises(VOCError, match=r"cat_trainval\.txt: no label for '000002'"):
        load_split(tree, "trainval").labels()
    edit(labels, "000001  1", "000001")
    with pytest.raises(VOCError, match=r"cat_trainval\.txt:1: '000001', expected '\{id\} "
                                       r"\{label\}'"):
        load_split(tree, "trainval").labels()
    with pytest.raises(ValueError, match="task must be one of .*got 'detection'"):
        load_split(tree, "trainval", task="detection")
    with pytest.raises(ValueError, match="on_error must be one of .*got 'ignore'"):
        load_split(tree, "trainval", on_error="ignore")
    with pytest.raises(ValueError, match="split must be an image set name"):
        load_split(tree, "../trainval")
    with pytest.raises(ValueError, match="classes must not repeat a name"):
        load_split(tree, "trainval", classes=["cat", "cat"])


def test_one_pixel_box_is_valid(tree):
    edit(tree / "Annotations/000002.xml", "<xmax>20</xmax>", "<xmax>5</xmax>")
    assert load_split(tree, "trainval").images[1].objects[0].box == (4, 4, 5, 20)
