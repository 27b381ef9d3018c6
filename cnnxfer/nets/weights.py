"""Pretrained weights in, and out: safetensors (cnnxfer's own format), torchvision state_dict
files and ONNX model-zoo graphs. Nothing is ever downloaded: every path is one the user names.

    net = cnnxfer.weights.load("alexnet.pth")          # torchvision AlexNet state_dict
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

from .alexnet import AlexNet
from .architecture import CONV_LAYERS, FC_LAYERS, Architecture, architecture
from .preprocessing import TORCHVISION, Preprocessing
from .state import WeightsError, load_into

FORMAT = "cnnxfer.alexnet/1"
_ARCH_KEY, _PREP_KEY, _FORMAT_KEY = "cnnxfer.architecture", "cnnxfer.preprocessing", "format"

# torchvision.models.AlexNet's parameter names -> cnnxfer's.
TORCHVISION_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8",
}


def load(path: str | os.PathLike, *, preprocessing: Preprocessing | None = None,
         backend: str = "engine", name: str | None = None) -> AlexNet:
    """A network with the weights stored at `path`, chosen by its suffix:

    - ``.safetensors``: cnnxfer's format (architecture and preprocessing in its metadata). A
      safetensors file without that metadata is read as a bare state_dict (see below).
    - ``.pth`` / ``.pt``: a state_dict saved with torch.save, loaded with weights_only=True (no
      code from the file runs). torchvision AlexNet names (features.0.weight ...) build the
      "torchvision" layout with its ImageNet preprocessing; cnnxfer names need `name`.
    - ``.onnx``: a model-zoo graph of the family (cnnxfer.nets.onnx_import.from_onnx).

    Args:
        preprocessing: overrides the input convention stored with (or implied by) the weights.
        backend: "engine" (default) or "reference".
        name: architecture for bare cnnxfer-named state_dicts: "alexnet", "caffenet" or
            "torchvision" (widths are read from the tensors).
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


def save(net: AlexNet, path: str | os.PathLike) -> None:
    """Writes net's weights (float32 as held), architecture and preprocessing as safetensors."""
    from safetensors.torch import save_file

    if not isinstance(net, AlexNet):
        raise TypeError(f"net must be a cnnxfer.nets.AlexNet, got {type(net).__name__}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    metadata = {_FORMAT_KEY: FORMAT, _ARCH_KEY: json.dumps(net.arch.to_dict()),
                _PREP_KEY: json.dumps(net.preprocessing.to_dict())}
    save_file(tensors, str(path), metadata=metadata)


def convert(source: str | os.PathLike, destination: str | os.PathLike, **load_options) -> AlexNet:
    """Reads weights in any supported format and writes them as cnnxfer safetensors."""
    if Path(destination).suffix.lower() != ".safetensors":
        raise ValueError(f"destination must end in .safetensors, got {str(destination)!r}")
    net = load(source, **load_options)
    save(net, destination)
    return net


def from_state_dict(state: dict, *, arch: Architecture | None = None, name: str | None = None,
                    preprocessing: Preprocessing | None = None, backend: str = "engine",
                    source: str = "state_dict") -> AlexNet:
    """A network holding `state` (cnnxfer or torchvision parameter names).

    The architecture is `arch` if given; else it is read from the tensors' shapes on top of
    architecture(name) (torchvision names imply name="torchvision").
    """
    bad_keys = [k for k, v in state.items() if not isinstance(k, str)
                or not isinstance(v, torch.Tensor)]
    if bad_keys:
        raise WeightsError(f"{source}: expected a dict of name -> tensor; these entries are not "
                           f"tensors: {', '.join(map(str, bad_keys[:8]))}")
    torchvision_layout = any(key.startswith(("features.", "classifier.")) for key in state)
    aliases = {}
    if torchvision_layout:
        aliases = {f"{ours}.{leaf}": f"{theirs}.{leaf}" for theirs, ours in
                   TORCHVISION_NAMES.items() for leaf in ("weight", "bias")}
        state = {_rename_torchvision(k): v for k, v in state.items()}
        name = name or "torchvision"
        preprocessing = preprocessing or TORCHVISION
    if arch is None:
        if name is None:
            raise WeightsError(f"{source}: the architecture is not stored with these weights; "
                               f"pass name='alexnet', 'caffenet' or 'torchvision'")
        arch = _architecture_from_shapes(name, state, source)
    net = AlexNet(arch, preprocessing, backend=backend)
    load_into(net, state, source=source, aliases=aliases)
    return net


def _rename_torchvision(key: str) -> str:
    prefix, _, leaf = key.rpartition(".")
    return f"{TORCHVISION_NAMES[prefix]}.{leaf}" if prefix in TORCHVISION_NAMES else key


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
                  for layer, block in zip(CONV_LAYERS, base.convs))
    fc = tuple(width(layer, default) for layer, default in zip(FC_LAYERS[:2], base.fc))
    num_classes = width("fc8", None)
    return replace(base, convs=tuple(convs), fc=fc, num_classes=num_classes)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise WeightsError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    return tensors, metadata
