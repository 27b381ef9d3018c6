"""The adaptation layers of Oquab et al. (section 3.1): new layers trained on the target task on
top of a frozen network's features.

    head = AdaptationHead(4096, ["cat", "dog"], layer="fc7", network="alexnet.safetensors")
    logits = head(fc7)                       # [N, 4096] -> [N, 3]: cat, dog, background
    probs = head.probabilities(fc7)          # softmax, eval mode
    head.save("head.safetensors"); head = AdaptationHead.load("head.safetensors")

FCa has 2048 units, a ReLU and dropout 0.5; FCb has one output per target class plus one for
the background, read through a softmax. With `trunk`, the head also holds trainable copies of the
network's FC layers between the features' layer and fc7 (the paper's variants that fine-tune
FC6 and FC7): the features are then conv5 (flattened) or fc6 activations, and each trunk layer is
Linear + ReLU + dropout 0.5, as in AlexNet's own training.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..ops.dropout import dropout

FORMAT = "cnnxfer.head/1"
_HEADER_KEY = "cnnxfer.head"
# The layers a trunk can start after, and the FC layers it then holds (up to fc7).
TRUNKS = {"conv5": ("fc6", "fc7"), "fc6": ("fc7",), "fc7": ()}


class Dropout(nn.Module):
    """nn.Dropout through ops.dropout (p = 0.5 drawn from random bytes on CPUs)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AdaptationHead(nn.Module):
    """FCa (hidden units, ReLU, dropout) -> FCb (len(classes) + 1 logits, the last one the
    background), optionally after trainable trunk layers.

    Args:
        in_features: D, the length of a patch's feature vector (4096 for AlexNet's fc7).
        classes: the target class names, in output order.
        hidden: FCa's width (2048 in the paper).
        dropout: dropout probability after FCa and after each trunk layer (0.5).
        layer: the network layer the features come from ("fc7" for a plain head).
        network: the weights file the features came from, as given (for people).
        network_sha256: that file's fingerprint (nets.weights.fingerprint): a head is refused
            on features of another network.
        trunk: trunk layers' initial weights, {"fc6": (weight, bias), "fc7": ...} in order;
            empty for a plain head.
    forward(x [N, D] float) -> logits [N, C + 1] in the parameters' dtype (float32).
    """

    def __init__(self, in_features: int, classes: Sequence[str], *, hidden: int = 2048,
                 dropout: float = 0.5, layer: str = "fc7", network: str = "",
                 network_sha256: str = "",
                 trunk: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        classes = tuple(classes)
        if not classes or not all(isinstance(c, str) and c for c in classes):
            raise ValueError(f"classes must be a non-empty list of names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, got {classes!r}")
        for name, value in (("in_features", in_features), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.classes, self.layer, self.network = classes, layer, network
        self.network_sha256 = network_sha256
        self.hidden, self.dropout_p = hidden, float(dropout)
        self.trunk_layers = tuple((trunk or {}).keys())
        trunk_modules, width = [], in_features
        for name, (weight, bias) in (trunk or {}).items():
            if weight.dim() != 2 or weight.shape[1] != width:
                raise ValueError(f"trunk layer {name} must take {width} inputs, got weight of "
                                 f"shape {tuple(weight.shape)}")
            linear = nn.Linear(width, weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(weight)
                linear.bias.copy_(bias)
            trunk_modules += [linear, nn.ReLU(inplace=True), Dropout(dropout)]
            width = weight.shape[0]
        self.in_features = in_features
        self.trunk = nn.Sequential(*trunk_modules)
        self.fca = nn.Linear(width, hidden)
        self.fcb = nn.Linear(hidden, len(classes) + 1)
        self.drop = Dropout(dropout)

    @property
    def num_classes(self) -> int:
        """C, the target classes (the output has C + 1 columns: the last is the background)."""
        return len(self.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be [N, {self.in_features}] features of layer "
                             f"{self.layer!r}, got {tuple(x.shape)}")
        x = self.trunk(x.to(self.fca.weight.dtype))
        return self.fcb(self.drop(torch.relu(self.fca(x))))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
        """y(C | P): softmax over the C + 1 outputs, [N, C + 1] float32, computed in eval mode
        (no dropout) in batches of batch_size rows, whatever mode the head is in."""
        was_training = self.training
        self.eval()
        try:
            parts = [torch.softmax(self(x[i:i + batch_size]).float(), dim=1)
                     for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was_training)
        if not parts:
            return torch.empty((0, self.num_classes + 1))
        return torch.cat(parts)

    def config(self) -> dict:
        """What load() needs besides the tensors (JSON-safe)."""
        return {"format": FORMAT, "classes": list(self.classes), "layer": self.layer,
                "network": self.network, "network_sha256": self.network_sha256,
                "in_features": self.in_features,
                "hidden": self.hidden, "dropout": self.dropout_p,
                "trunk": list(self.trunk_layers)}

    def save(self, path: str | os.PathLike, **extra) -> None:
        """Writes the parameters (float32) and config() (+ extra JSON-safe fields, such as the
        training settings) as safetensors."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
        tensors = {k: v.detach().cpu().float().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata={_HEADER_KEY: json.dumps({**self.config(),
                                                                         **extra})})

    @classmethod
    def load(cls, path: str | os.PathLike) -> AdaptationHead:
        """A head written by save(); its config (classes, layer, network...) is restored."""
        head, _ = load_with_header(path)
        return head


def load_with_header(path: str | os.PathLike) -> tuple[AdaptationHead, dict]:
    """(head, the whole stored header, training settings included) from a saved head."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head file not found: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = (handle.metadata() or {}).get(_HEADER_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    if header is None:
        raise ValueError(f"{str(path)!r} is not a cnnxfer head (no {_HEADER_KEY!r} metadata); "
                         f"expected a file written by `cnnxfer train`")
    header = json.loads(header)
    if header.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r}: unknown head format {header.get('format')!r}, "
                         f"expected {FORMAT!r}")
    trunk = {}
    for index, name in enumerate(header["trunk"]):
        key = f"trunk.{3 * index}"
        trunk[name] = (tensors[f"{key}.weight"], tensors[f"{key}.bias"])
    head = AdaptationHead(header["in_features"], header["classes"], hidden=header["hidden"],
                          dropout=header["dropout"], layer=header["layer"],
                          network=header["network"],
                          network_sha256=header.get("network_sha256", ""), trunk=trunk)
    head.load_state_dict(tensors)
    return head, header


def check_network(head: AdaptationHead, sha256: str | None, what: str) -> None:
    """Refuses to use `head` on features of a network other than the one it was trained on
    (`what` names where sha256 came from, for the message). Unknown fingerprints pass."""
    if sha256 and head.network_sha256 and sha256 != head.network_sha256:
        raise ValueError(f"the head was trained on features of {head.network!r} (weights "
                         f"fingerprint {head.network_sha256}), but {what} has fingerprint "
                         f"{sha256}: features of another network")


def check_finetune_layer(layer: str) -> str:
    """layer, when FC layers follow it up to fc7 that fine-tuning can train (conv5 or fc6)."""
    if not TRUNKS.get(layer):
        raise ValueError(f"fine-tuning FC6 and FC7 needs features of layer conv5 or fc6 "
                         f"(cnnxfer extract --layer conv5), got layer {layer!r}")
    return layer


def trunk_from_network(net, layer: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The trainable copies of net's FC layers after `layer` up to fc7 (fine-tuning from conv5
    or fc6 features); {} for fc7 features."""
    if layer not in TRUNKS:
        raise ValueError(f"fine-tuning FC6 and FC7 needs features of layer conv5 or fc6 "
                         f"(cnnxfer extract --layer conv5), got layer {layer!r}")
    return {name: (getattr(net, name).weight.detach().float().clone(),
                   getattr(net, name).bias.detach().float().clone()) for name in TRUNKS[layer]}
