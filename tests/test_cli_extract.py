"""`cnnxfer extract`, `info` and `convert`, run in-process through cnnxfer.cli.main."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cnnxfer import PatchFeatureExtractor, nets, weights
from cnnxfer.cli import main
from cnnxfer.features import load_features


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    net = nets.alexnet("alexnet", width=0.25, input_size=224, seed=0)
    weights_path = folder / "small.safetensors"
    weights.save(net, weights_path)
    rng = np.random.default_rng(0)
    images = []
    for index, (height, width) in enumerate([(40, 60), (50, 40)]):
        path = folder / f"image{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        images.append(path)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"nothing")
    return folder, weights_path, images, broken


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_extract_writes_features_and_boxes_and_skips_bad_files(files, suffix, capsys):
    folder, weights_path, images, broken = files
    out = folder / f"features{suffix}"
    status = main(["extract", "--weights", str(weights_path), str(images[0]), str(broken),
                   str(images[1]), "-o", str(out), "--layer", "fc6", "--quiet"])
    assert status == 0
    captured = capsys.readouterr()
    assert f"skipped {broken}: cannot decode image" in captured.err
    assert "2 images" in captured.out and "1 skipped" in captured.out
    results, header = load_features(out)
    assert [r.source for r in results] == [str(images[0]), str(images[1])]
    assert header["layer"] == "fc6" and header["skipped"][0]["source"] == str(broken)
    extractor = PatchFeatureExtractor(weights.load(weights_path), layer="fc6")
    for result, path in zip(results, images):
        features, boxes = extractor(path)
        assert torch.equal(result.boxes, boxes)
        assert torch.allclose(result.features, features, rtol=1e-5, atol=1e-6)


def test_extract_bf16_conv_layer(files):
    folder, weights_path, images, _ = files
    out = folder / "conv.safetensors"
    assert main(["extract", "--weights", str(weights_path), str(images[0]), "-o", str(out),
                 "--layer", "conv4", "--conv-pooling", "max", "--dtype", "bfloat16",
                 "--quiet"]) == 0
    (result,), header = load_features(out)
    assert result.features.dtype == torch.bfloat16
    assert result.features.shape[1] == 96 and header["conv_pooling"] == "max"


def test_extract_user_errors_exit_2_with_a_message(files, capsys):
    folder, weights_path, images, _ = files
    assert main(["extract", "--weights", str(folder / "none.safetensors"), str(images[0]),
                 "-o", str(folder / "x.npz")]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert main(["extract", "--weights", str(weights_path), str(images[0]),
                 "-o", str(folder / "x.txt")]) == 2
    assert "output must end in .safetensors or .npz" in capsys.readouterr().err
    assert main(["extract", "--weights", str(weights_path), str(images[0]),
                 "-o", str(folder / "x.npz"), "--layer", "fc9"]) == 2
    assert "layer must be one of" in capsys.readouterr().err


def test_extract_with_only_bad_files_fails(files, capsys):
    folder, weights_path, _, broken = files
    out = folder / "none.npz"
    assert main(["extract", "--weights", str(weights_path), str(broken), "-o", str(out),
                 "--quiet"]) == 1
    results, header = load_features(out)
    assert results == [] and len(header["skipped"]) == 1


def test_info_and_convert(files, capsys, tmp_path):
    _, weights_path, _, _ = files
    assert main(["info", str(weights_path)]) == 0
    out = capsys.readouterr().out
    assert "alexnet" in out and "BGR" in out and "mean [104.0, 117.0, 123.0]" in out
    assert "conv5  64x6x6" in out and "fc7    1024" in out
    converted = tmp_path / "copy.safetensors"
    assert main(["convert", str(weights_path), str(converted)]) == 0
    assert weights.load(converted).arch == weights.load(weights_path).arch


def test_bare_state_dict_needs_and_takes_name(tmp_path, capsys):
    net = nets.alexnet("caffenet", width=0.125, seed=1)
    bare = tmp_path / "bare.pth"
    torch.save(net.state_dict(), bare)
    assert main(["info", str(bare)]) == 2
    assert "pass name=" in capsys.readouterr().err
    out = tmp_path / "named.safetensors"
    assert main(["convert", str(bare), str(out), "--name", "caffenet"]) == 0
    assert weights.load(out).arch == net.arch


def test_extract_to_a_folder_writes_each_image_and_resumes(files, tmp_path, capsys):
    _, weights_path, images, broken = files
    twin = tmp_path / "twin"
    twin.mkdir()
    same_stem = twin / images[0].name  # another image0.png: must not overwrite the first
    same_stem.write_bytes(images[1].read_bytes())
    out = tmp_path / "features"
    out.mkdir()
    arguments = ["extract", "--weights", str(weights_path), str(images[0]), str(broken),
                 str(same_stem), "-o", str(out), "--quiet"]
    assert main(arguments) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image0-1.safetensors", "image0.safetensors"]
    (first,), header = load_features(out / "image0.safetensors")
    (second,), _ = load_features(out / "image0-1.safetensors")
    assert first.source == str(images[0]) and second.source == str(same_stem)
    assert header["layer"] == "fc7"
    extractor = PatchFeatureExtractor(weights.load(weights_path))
    assert torch.allclose(second.features, extractor(images[1])[0], rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    stamp = (out / "image0.safetensors").stat().st_mtime_ns
    assert main(arguments) == 0  # a rerun: both finished images are skipped, the broken retried
    captured = capsys.readouterr()
    assert "2 images already in" in captured.out and "skipped " in captured.err
    assert (out / "image0.safetensors").stat().st_mtime_ns == stamp
    assert main(arguments + ["--layer", "fc6"]) == 0  # other settings: extracted again
    assert load_features(out / "image0.safetensors")[1]["layer"] == "fc6"


def test_extract_shared_mode_on_the_aligned_grid(files, tmp_path):
    """--mode shared --grid aligned: the same features as the library's extractor with those
    settings, both recorded in the file's header and in a store's settings."""
    from cnnxfer import store
    from cnnxfer.features.shared import network_grid

    folder, weights_path, images, _ = files
    out = tmp_path / "shared.safetensors"
    with warnings.catch_warnings():  # AlexNet's conv5 cells (195 px) fit its 224 px patches
        warnings.simplefilter("error")
        assert main(["extract", "--weights", str(weights_path), str(images[0]), "-o", str(out),
                     "--mode", "shared", "--grid", "aligned", "--quiet"]) == 0
    (result,), header = load_features(out)
    assert header["mode"] == "shared" and header["grid_name"] == "aligned"
    net = weights.load(weights_path)
    features, boxes = PatchFeatureExtractor(net, mode="shared",
                                            grid=network_grid(net, "aligned"))(images[0])
    assert torch.equal(result.boxes, boxes) and torch.equal(result.features, features)
    folder_store = tmp_path / "store"
    assert main(["extract", "--weights", str(weights_path), *map(str, images), "--store",
                 str(folder_store), "--grid", "aligned", "--workers", "0", "--quiet"]) == 0
    grid = store.open(folder_store).settings["grid"]
    assert grid["name"] == "aligned" and grid["total_stride"] == 32
    assert grid["input_size"] == 224
