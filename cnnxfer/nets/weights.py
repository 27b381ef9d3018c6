"""Pretrained weights in, and out: safetensors (cnnxfer's own format), torchvision state_dict
files (AlexNet, VGG-11/13/16/19 and their batch-norm variants) and ONNX model-zoo graphs.
Nothing is ever downloaded: every path is one the user names.

    net = cnnxfer.weights.load("alexnet.pth")          # torchvision AlexNet state_dict
    net = cnnxfer.weights.load("vgg16.pth")            # torchvision VGG-16: conv1_1 .. fc8
    cnnxfer.weights.save(net, "alexnet.safetensors")   # weights + architecture + preprocessing
    net = cnnxfer.weights.load("alexnet.safetensors")

A cnnxfer safetensors file holds the tensors under the module's names (conv1.weight ...
fc8.bias) and, in its metadata, the architecture and the preprocessing as JSON, so the input
convention travels with the weights.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from .architecture import NAMES, Architecture, architecture
from .network import ConvNet
from .preprocessing import TORCHVISION, Preprocessing
from .state import WeightsError, load_into

FORMAT = "cnnxfer.alexnet/1"
_ARCH_KEY, _PREP_KEY, _FORMAT_KEY = "cnnxfer.architecture", "cnnxfer.preprocessing", "format"

# torchvision's VGG configurations by their number of convs (all 3x3).
_VGG_BY_CONVS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}
_BATCH_NORM_EPS = 1e-5  # torchvision's BatchNorm2d default, which its VGG _bn models use


def load(path: str | os.PathLike, *, preprocessing: Preprocessing | None = None,
         backend: str = "engine", name: str | None = None) -> ConvNet:
    """A network with the weights stored at `path`, chosen by its suffix:

    - ``.safetensors``: cnnxfer's format (architecture and preprocessing in its metadata). A
      safetensors file without that metadata is read as a bare state_dict (see below).
    - ``.pth`` / ``.pt``: a state_dict saved with torch.save, loaded with weights_only=True (no
      code from the file runs). torchvision AlexNet and VGG names (features.0.weight ...)
      build the "torchvision" or "vgg11".."vgg19" layout with its ImageNet preprocessing
      (torchvision_names); cnnxfer names need `name`.
    - ``.onnx``: a model-zoo graph of the family (cnnxfer.nets.onnx_import.from_onnx).

    Args:
        preprocessing: overrides the input convention stored with (or implied by) the weights.
        backend: "engine" (default) or "reference".
        name: architecture for bare cnnxfer-named state_dicts, one of architecture.NAMES
            (widths are read from the tensors).
    Raises:
        FileNotFoundError; WeightsError listing missing, unexpected and mis-shaped tensors (with
        both shapes) and tensors holding NaN or inf.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_import import from_onnx  # imports onnx: only for .onnx files
        return from_onnx(path, preprocessing=preprocessing, backend=backend)
    if suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
        if metadata.get(_FORMAT_KEY) == FORMAT:
            arch = Architecture.from_dict(json.loads(metadata[_ARCH_KEY]))
            stored = Preprocessing.from_dict(json.loads(metadata[_PREP_KEY]))
            return from_state_dict(tensors, arch=arch, preprocessing=preprocessing or stored,
                                   backend=backend, source=str(path))
        return from_state_dict(tensors, name=name, preprocessing=preprocessing, backend=backend,
                               source=str(path))
    if suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle errors, non-tensor objects refused by weights_only
            raise WeightsError(f"{str(path)!r} is not a state_dict that loads with "
                               f"weights_only=True: {error}") from error
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # common checkpoint wrapping
        if not isinstance(state, dict):
            raise WeightsError(f"{str(path)!r} holds a {type(state).__name__}, expected a "
                               f"state_dict (a dict of name -> tensor)")
        return from_state_dict(state, name=name, preprocessing=preprocessing, backend=backend,
                               source=str(path))
    raise ValueError(f"path must end in .safetensors, .pth, .pt or .onnx, got {str(path)!r}")


def fingerprint(path: str | os.PathLike) -> str:
    """The identity of a weights file: the first 16 hex digits of its contents' SHA-256. Feature
    files and heads record it, so that a file moved or renamed is still recognized, and a
    different network saved under the same name is not (hashing 240 MB takes ~0.3 s)."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def save(net: ConvNet, path: str | os.PathLike) -> None:
    """Writes net's weights (float32 as held), architecture and preprocessing as safetensors."""
    from safetensors.torch import save_file

    if not isinstance(net, ConvNet):
        raise TypeError(f"net must be a cnnxfer.nets.ConvNet, got {type(net).__name__}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    metadata = {_FORMAT_KEY: FORMAT, _ARCH_KEY: json.dumps(net.arch.to_dict()),
                _PREP_KEY: json.dumps(net.preprocessing.to_dict())}
    save_file(tensors, str(path), metadata=metadata)


def convert(source: str | os.PathLike, destination: str | os.PathLike, **load_options) -> ConvNet:
    """Reads weights in any supported format and writes them as cnnxfer safetensors."""
    if Path(destination).suffix.lower() != ".safetensors":
        raise ValueError(f"destination must end in .safetensors, got {str(destination)!r}")
    net = load(source, **load_options)
    save(net, destination)
    return net


def from_state_dict(state: dict, *, arch: Architecture | None = None, name: str | None = None,
                    preprocessing: Preprocessing | None = None, backend: str = "engine",
                    source: str = "state_dict") -> ConvNet:
    """A network holding `state` (cnnxfer or torchvision parameter names).

    The architecture is `arch` if given; else it is read from the tensors' shapes on top of
    architecture(name) (torchvision names imply the layout: torchvision_names).
    """
    bad_keys = [k for k, v in state.items() if not isinstance(k, str)
                or not isinstance(v, torch.Tensor)]
    if bad_keys:
        raise WeightsError(f"{source}: expected a dict of name -> tensor; these entries are not "
                           f"tensors: {', '.join(map(str, bad_keys[:8]))}")
    torchvision_layout = any(key.startswith(("features.", "classifier.")) for key in state)
    aliases = {}
    if torchvision_layout:
        detected, names = torchvision_names(state, source)
        state = _fold_batch_norms(state, names)
        aliases = {f"{ours}.{leaf}": f"{theirs}.{leaf}" for theirs, ours in names.items()
                   if not ours.startswith("bn:") for leaf in ("weight", "bias")}
        state = {_renamed(k, names): v for k, v in state.items()}
        name = name or detected
        preprocessing = preprocessing or TORCHVISION
    if arch is None:
        if name is None:
            raise WeightsError(f"{source}: the architecture is not stored with these weights; "
                               f"pass name= one of {', '.join(NAMES)}")
        arch = _architecture_from_shapes(name, state, source)
    net = ConvNet(arch, preprocessing, backend=backend)
    load_into(net, state, source=source, aliases=aliases)
    return net


def torchvision_names(state: dict, source: str = "state_dict") -> tuple[str, dict[str, str]]:
    """(architecture name, {torchvision prefix: cnnxfer layer}) of a torchvision AlexNet or VGG
    state_dict: "torchvision" for AlexNet (five convs, the first 11x11), "vgg11".."vgg19" by
    the number of 3x3 convs, their BatchNorm2d (the _bn variants) noted under "bn:" prefixes.
    The pools are checked where the Sequential's indices show them (an index gap after a
    conv's ReLU), so another chain under these names is refused rather than misread."""
    def indices(container: str, dims: int) -> list[int]:
        return sorted(int(key.split(".")[1]) for key, value in state.items()
                      if key.startswith(f"{container}.") and key.endswith(".weight")
                      and key.count(".") == 2 and key.split(".")[1].isdigit()
                      and value.dim() == dims)

    convs, linears = indices("features", 4), indices("classifier", 2)
    if not convs or not linears:
        raise WeightsError(f"{source}: torchvision names (features.*, classifier.*) but no "
                           f"conv weights under features.N or no linear ones under "
                           f"classifier.N")
    kernel = state[f"features.{convs[0]}.weight"].shape[-1]
    batch_norm = f"features.{convs[0] + 1}.running_mean" in state
    if len(convs) == 5 and kernel == 11 and not batch_norm:
        name = "torchvision"
    elif kernel == 3 and len(convs) in _VGG_BY_CONVS:
        name = _VGG_BY_CONVS[len(convs)]
    else:
        raise WeightsError(f"{source}: torchvision names, but not AlexNet (5 convs, the first "
                           f"11x11) nor VGG-11/13/16/19 (8, 10, 13 or 16 3x3 convs): found "
                           f"{len(convs)} convs, the first {kernel}x{kernel}")
    arch = architecture(name)
    step = 3 if batch_norm else 2  # conv [, BatchNorm2d], ReLU, then the next conv or a pool
    gaps = [b - a for a, b in zip(convs, convs[1:])]
    pooled = [gap == step + 1 for gap in gaps]
    expected = [block.pool is not None for block in arch.convs[:-1]]
    if pooled != expected or any(gap not in (step, step + 1) for gap in gaps):
        raise WeightsError(f"{source}: the convs at features indices {convs} do not have "
                           f"{name}'s pools after {arch.conv_names()[:-1]} "
                           f"({[n for n, p in zip(arch.conv_names(), expected) if p]})")
    names = {f"features.{i}": layer for i, layer in zip(convs, arch.conv_names())}
    names.update({f"classifier.{i}": layer for i, layer in zip(linears, arch.fc_names())})
    if batch_norm:
        names.update({f"features.{i + 1}": f"bn:{layer}"
                      for i, layer in zip(convs, arch.conv_names())})
    return name, names


def _fold_batch_norms(state: dict, names: dict[str, str]) -> dict:
    """state with each BatchNorm2d (names "bn:<conv>") folded into the conv before it: at
    inference BN(conv(x)) = conv'(x) with w' = w * s, b' = (b - mean) * s + beta per output
    channel, s = gamma / sqrt(var + eps). The BN tensors leave the state."""
    folds = {prefix: layer[3:] for prefix, layer in names.items() if layer.startswith("bn:")}
    if not folds:
        return state
    state = dict(state)
    convs = {layer: prefix for prefix, layer in names.items()}
    for prefix, layer in folds.items():
        bn = {leaf: state.pop(f"{prefix}.{leaf}", None)
              for leaf in ("weight", "bias", "running_mean", "running_var")}
        state.pop(f"{prefix}.num_batches_tracked", None)
        if any(value is None for value in bn.values()):
            raise WeightsError(f"batch norm {prefix} after {layer} lacks "
                               f"{[leaf for leaf, v in bn.items() if v is None]}")
        conv = convs[layer]
        weight = state[f"{conv}.weight"].double()
        bias = state.get(f"{conv}.bias", torch.zeros(weight.shape[0])).double()
        scale = bn["weight"].double() / (bn["running_var"].double() + _BATCH_NORM_EPS).sqrt()
        state[f"{conv}.weight"] = (weight * scale[:, None, None, None]).float()
        state[f"{conv}.bias"] = ((bias - bn["running_mean"].double()) * scale
                                 + bn["bias"].double()).float()
    return state


def _renamed(key: str, names: dict[str, str]) -> str:
    prefix, _, leaf = key.rpartition(".")
    return f"{names[prefix]}.{leaf}" if prefix in names else key


def _architecture_from_shapes(name: str, state: dict, source: str) -> Architecture:
    """architecture(name) with the conv filter counts, FC widths and class count of `state`
    (so width variants load); everything else about the shapes is then checked by load_into.
    Widths are read from the biases (else the weights), so one mis-shaped weight is reported as
    itself rather than shifting every shape after it."""
    base = architecture(name)

    def width(layer: str, default: int | None) -> int | None:
        for key in (f"{layer}.bias", f"{layer}.weight"):
            if key in state and state[key].dim() >= 1:
                return int(state[key].shape[0])
        return default

    convs = tuple(replace(block, out_channels=width(layer, block.out_channels))
                  for layer, block in zip(base.conv_names(), base.convs))
    hidden = base.fc_names()[:len(base.fc)]
    fc = tuple(width(layer, default) for layer, default in zip(hidden, base.fc))
    num_classes = width(base.fc_names()[len(base.fc)], None)
    return replace(base, convs=convs, fc=fc, num_classes=num_classes)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise WeightsError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    return tensors, metadata
