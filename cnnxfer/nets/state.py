"""Copying a state_dict into a network after checking every tensor: one error lists every
missing, unexpected and mis-shaped tensor by name, another every tensor holding NaN or inf.
Shared by the weight files (weights.py) and the ONNX importer (onnx_import.py).
"""
from __future__ import annotations

import torch

from .network import ConvNet


class WeightsError(ValueError):
    """Weights that do not fit the network: each problem tensor is listed by name."""


def load_into(net: ConvNet, state: dict, *, source: str = "state_dict",
              aliases: dict[str, str] | None = None,
              error: type[WeightsError] = WeightsError) -> None:
    """Copies `state` into net after checking every name, shape and value; one error lists every
    missing, unexpected and mis-shaped tensor, another every tensor holding NaN or inf.
    aliases: cnnxfer name -> the name in the user's file, shown beside it in errors.
    error: the WeightsError subclass raised (the ONNX importer raises OnnxImportError)."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    aliases = aliases or {}
    label = lambda key: f"{key} ({aliases[key]})" if aliases.get(key, key) != key else key  # noqa: E731
    problems = []
    for key in expected:
        if key not in state:
            problems.append(f"  missing {label(key)}: expected shape {list(expected[key])}")
        elif tuple(state[key].shape) != expected[key]:
            problems.append(f"  mis-shaped {label(key)}: expected {list(expected[key])}, got "
                            f"{list(state[key].shape)}")
    for key in state:
        if key not in expected:
            problems.append(f"  unexpected {label(key)}: shape {list(state[key].shape)}")
    if problems:
        raise error(f"{source} does not fit {net.arch.name} ({len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}):\n" + "\n".join(problems))
    not_finite = [k for k in expected if state[k].is_floating_point()
                  and not bool(torch.isfinite(state[k]).all())]
    if not_finite:
        raise error(f"{source}: {', '.join(map(label, not_finite))} "
                    f"{'holds' if len(not_finite) == 1 else 'hold'} NaN or inf")
    with torch.no_grad():
        for key, param in net.state_dict(keep_vars=True).items():
            param.copy_(state[key].to(param.dtype))
