"""Conv-block networks from ONNX graphs (model-zoo bvlc_alexnet, caffenet, zfnet512, vgg16/19
and the like).

    net = cnnxfer.nets.onnx_import.from_onnx("bvlc_alexnet.onnx")  # a ConvNet, weights loaded
    fc7 = net(batch, layer="fc7")                                  # [N, 4096]

The graph must be one chain from the image input:

    N x (Conv -> Relu [-> LRN] [-> MaxPool], LRN and MaxPool in either order)
    -> Reshape or Flatten -> M x (Gemm -> Relu) [-> Gemm [-> Softmax]]

(N >= 1, M >= 0, at least one Gemm) with Dropout (identity at inference) allowed anywhere. The
Softmax is dropped: the last Gemm without a Relu is the class layer and gives the logits. The
layers are named conv1_1 .. (Architecture naming "stages") when the graph's conv weights are
named so (the zoo's VGG), else conv1..convN, fc(N+1)...

Weights may be graph initializers, Constant nodes or ConstantOfShape nodes (the onnx package's
light test models fill their weights that way). Anything else raises
OnnxImportError naming the node, its op type and what was expected: the importer never guesses.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..ops.layers import LRN, MaxPool
from .architecture import Architecture, ConvBlock
from .network import ConvNet
from .preprocessing import CAFFE, Preprocessing
from .state import WeightsError, load_into

__all__ = ["OnnxImportError", "from_onnx"]

# The attributes each mapped op may carry; any other one might change the meaning, so it is
# refused. Relu, Dropout and Softmax are not listed: whatever they carry (old opsets' is_test,
# consumed_inputs, Softmax's axis) does not change what the network computes.
_ATTRIBUTES = {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "MaxPool": {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order",
                "strides"},
    "LRN": {"alpha", "beta", "bias", "size"},
    "Gemm": {"alpha", "beta", "transA", "transB", "broadcast"},
    "Reshape": {"shape", "allowzero"},
    "Flatten": {"axis"},
}


class OnnxImportError(WeightsError):
    """The graph is not a conv-block network cnnxfer can run, or its weights are unusable."""


def from_onnx(path_or_model: str | os.PathLike | onnx.ModelProto, *,
              preprocessing: Preprocessing | None = None, backend: str = "engine") -> ConvNet:
    """A ConvNet built from an ONNX graph, with the graph's weights.

    Args:
        path_or_model: a .onnx file or an onnx.ModelProto.
        preprocessing: the input convention of the weights; default: CAFFE (BGR, mean pixel
            subtracted, as the ONNX model zoo's Caffe conversions) at the graph's input size.
        backend: "engine" or "reference" (see cnnxfer.nets.ConvNet).

    Returns:
        A ConvNet with arch.name = the graph's name, arch.input_size = the side of the graph's
        [N, 3, S, S] input, every conv and Gemm loaded (AlexNet: conv1..conv5, fc6, fc7 and fc8
        when the last Gemm has no Relu). net(x) returns the class layer's logits: the graph's
        trailing Softmax is not applied.

    Raises:
        FileNotFoundError: no file at the path.
        OnnxImportError: not an ONNX file, a node the importer cannot map, or weights of the wrong
            shape or with NaN/inf.
        ValueError: preprocessing.input_size differs from the graph's input size.
    """
    model, source = _load(path_or_model)
    graph = model.graph
    constants = _constants(graph)
    image, side = _image_input(graph, constants, source, preprocessing)
    convs, gemms, has_classes, conv_weights, fc_weights, flatten = _walk(graph, image, constants)
    fc_out = [weight[1].shape[0] for weight, _ in fc_weights]
    hidden = fc_out[:-1] if has_classes else fc_out
    arch = Architecture(name=graph.name or "onnx", convs=tuple(convs), fc=tuple(hidden),
                        num_classes=fc_out[-1] if has_classes else None, input_size=side,
                        adaptive_pool=None)
    if _named_in_stages(arch, conv_weights):
        arch = replace(arch, naming="stages")
    _check_fc_input(arch, flatten, gemms[0], fc_weights[0][0])
    net = ConvNet(arch, preprocessing or replace(CAFFE, input_size=side), backend=backend)
    weights = {}
    for layer, pair in zip(arch.layers(), conv_weights + fc_weights):
        weights[f"{layer}.weight"], weights[f"{layer}.bias"] = pair
    # A copy of each array: initializer arrays may be read-only views of the protobuf's bytes.
    state = {name: torch.from_numpy(np.array(value, dtype=np.float32, order="C"))
             for name, (_, value) in weights.items()}
    aliases = {name: onnx_name for name, (onnx_name, _) in weights.items()}
    load_into(net, state, source=source, aliases=aliases, error=OnnxImportError)
    return net


# ------------------------------------------------------------------------- loading and constants

def _load(path_or_model) -> tuple[onnx.ModelProto, str]:
    """The model and a name for it in messages (the path, or the graph's name)."""
    if isinstance(path_or_model, onnx.ModelProto):
        model, source = path_or_model, f"ONNX graph {path_or_model.graph.name or '(unnamed)'!r}"
    elif isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "no ONNX file at this path", path)
        try:
            model = onnx.load(path)
        except Exception as error:  # protobuf's DecodeError, a bad external-data reference, ...
            raise OnnxImportError(f"{path} is not an ONNX model: {error}") from error
        source = path
    else:
        raise TypeError(f"path_or_model must be a path or an onnx.ModelProto, got "
                        f"{type(path_or_model).__name__}")
    # Protobuf parses an empty (or lucky) file as an empty model, so look for a graph too.
    if not model.graph.node:
        raise OnnxImportError(f"{source} is not an ONNX model with a graph (no nodes)")
    return model, source


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every tensor known without running the network: initializers, Constant and ConstantOfShape
    outputs (nodes come in topological order, so a ConstantOfShape's shape is known first)."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            (attribute,) = node.attribute  # exactly one value_* attribute, per the spec
            value = onnx.helper.get_attribute_value(attribute)
            values[node.output[0]] = (numpy_helper.to_array(value)
                                      if isinstance(value, onnx.TensorProto) else np.array(value))
        elif node.op_type == "ConstantOfShape" and node.input[0] in values:
            fill = np.zeros(1, np.float32)  # the spec's default value: a float32 zero
            for attribute in node.attribute:
                if attribute.name == "value":
                    fill = numpy_helper.to_array(attribute.t).reshape(-1)
            shape = [int(d) for d in values[node.input[0]].reshape(-1)]
            values[node.output[0]] = np.full(shape, fill[0], dtype=fill.dtype)
    return values


def _image_input(graph, constants, source, preprocessing) -> tuple[str, int]:
    """The one graph input that is not a weight (IR < 4 lists initializers as inputs too) and the
    side S of its [N, 3, S, S] shape (from `preprocessing` when the graph leaves S open)."""
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise OnnxImportError(f"{source}: expected one image input, found "
                              f"{[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    name = inputs[0].name
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise OnnxImportError(f"{source}: input {name!r} has shape {shape}; expected "
                              f"[N, 3, S, S]")
    side = shape[2]
    if preprocessing is not None and side is not None and preprocessing.input_size != side:
        raise ValueError(f"preprocessing.input_size={preprocessing.input_size} but the graph's "
                         f"input {name!r} is {side}x{side}")
    if side is None:
        if preprocessing is None:
            raise OnnxImportError(f"{source}: input {name!r} has no fixed size {shape}; pass "
                                  f"preprocessing= with the input_size the weights expect")
        side = preprocessing.input_size
    return name, side


# ------------------------------------------------------------------------- the chain

def _describe(node: onnx.NodeProto) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _fail(node: onnx.NodeProto, expected: str) -> OnnxImportError:
    return OnnxImportError(f"{_describe(node)}: expected {expected}")


def _attributes(node: onnx.NodeProto) -> dict:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    unknown = set(values) - _ATTRIBUTES.get(node.op_type, set(values))
    if unknown:
        raise _fail(node, f"none of the attributes {sorted(unknown)}")
    if values.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _fail(node, f"auto_pad NOTSET (explicit pads), got {values['auto_pad']!r}")
    if any(d != 1 for d in values.get("dilations", ())):
        raise _fail(node, f"dilations 1, got {list(values['dilations'])}")
    return values


def _constant(node, index: int, constants, what: str) -> tuple[str, np.ndarray] | None:
    """(ONNX name, float32 array) of the node's input `index`, None when the input is absent."""
    if index >= len(node.input) or not node.input[index]:
        return None
    name = node.input[index]
    if name not in constants:
        raise _fail(node, f"its {what} {name!r} to be a constant (initializer, Constant or "
                          f"ConstantOfShape), not computed from the image")
    value = constants[name]
    if not np.issubdtype(value.dtype, np.floating):
        raise _fail(node, f"a floating-point {what}, got {name!r} of dtype {value.dtype}")
    return name, np.asarray(value, dtype=np.float32)


def _square(node, values: list, what: str) -> int:
    if len(values) != 2 or values[0] != values[1]:
        raise _fail(node, f"a square {what} (the same on both axes), got {list(values)}")
    return int(values[0])


def _f32(value: float) -> float:
    # ONNX float attributes are float32: 1e-4 arrives as 9.99999974737875e-05. The shortest
    # decimal that rounds to the same float32 is the value the exporter meant.
    return float(str(np.float32(value)))


def _walk(graph, image: str, constants):
    """Follow the chain from `image`. Returns the ConvBlocks, the Gemm nodes, whether the last
    Gemm is a class layer (no Relu after it), the conv and the Gemm weights as lists of
    ((ONNX name, float32 weight), (ONNX name, float32 bias)) in order, and (the Reshape/Flatten
    node, its target shape or None)."""
    # One list of the node objects: protobuf may hand out a new wrapper on each access, and the
    # stray-node check below compares identities.
    nodes = [n for n in graph.node if n.op_type not in ("Constant", "ConstantOfShape")]
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    convs: list[dict] = []  # ConvBlock keyword arguments, one per block
    gemms: list = []
    conv_weights: list = []  # per conv: ((ONNX name, weight), (ONNX name, bias))
    fc_weights: list = []  # per Gemm: the same
    flatten = None
    state = "start"  # start, conv (before its Relu), block, flat, gemm (before its Relu), fc, end
    visited = set()
    tensor, channels, last = image, 3, None
    while consumers.get(tensor):
        if len(consumers[tensor]) != 1:
            raise OnnxImportError(f"tensor {tensor!r} feeds {len(consumers[tensor])} nodes ("
                                  f"{', '.join(_describe(n) for n in consumers[tensor])}); "
                                  f"expected a single chain from the image to the output")
        node = last = consumers[tensor][0]
        visited.add(id(node))
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise _fail(node, f"an op of the default ONNX domain, got domain {node.domain!r}")
        if node.input[0] != tensor:
            raise _fail(node, f"{tensor!r} as its first (data) input, got inputs "
                              f"{list(node.input)}")
        attributes = _attributes(node)
        block = convs[-1] if convs else {}
        if op == "Conv" and state in ("start", "block"):
            block, weight, bias = _conv(node, attributes, constants, channels,
                                        f"conv layer {len(convs) + 1}")
            convs.append(block)
            conv_weights.append((weight, bias))
            channels = block["out_channels"]
            state = "conv"
        elif op == "Relu" and state in ("conv", "gemm"):
            state = "block" if state == "conv" else "fc"
        elif op == "LRN" and state == "block" and "lrn" not in block:
            size = int(attributes["size"])
            if size % 2 == 0:
                # ONNX centres an even window differently from torch's local_response_norm.
                raise _fail(node, f"an odd LRN size, got {size}")
            block["lrn"] = LRN(size, alpha=_f32(attributes.get("alpha", 1e-4)),
                               beta=_f32(attributes.get("beta", 0.75)),
                               k=_f32(attributes.get("bias", 1.0)))  # ONNX's bias is the k
            block["order"] = "pool_lrn" if "pool" in block else "lrn_pool"
        elif op == "MaxPool" and state == "block" and "pool" not in block:
            block["pool"] = _max_pool(node, attributes)
        elif op in ("Reshape", "Flatten") and state == "block":
            if op == "Flatten" and attributes.get("axis", 1) != 1:
                raise _fail(node, f"axis=1 (flatten to [N, C*H*W]), got axis={attributes['axis']}")
            shape = None
            if op == "Reshape":
                shape = attributes.get("shape")  # opset < 5 keeps the shape in an attribute
                if shape is None:
                    if node.input[1] not in constants:
                        raise _fail(node, f"a constant target shape, {node.input[1]!r} is computed")
                    shape = constants[node.input[1]]
                shape = [int(d) for d in np.reshape(shape, -1)]
            flatten = (node, shape)
            state = "flat"
        elif op == "Gemm" and state in ("flat", "fc"):
            fc_weights.append(_gemm(node, attributes, constants, f"Gemm {len(gemms) + 1}"))
            gemms.append(node)
            state = "gemm"
        elif op == "Softmax" and state == "gemm":
            state = "end"
        elif op == "Dropout" and state != "end":
            pass
        else:
            raise _fail(node, _EXPECTED[state])
        tensor = node.output[0]
    stray = [n for n in nodes if id(n) not in visited]
    if stray:
        raise _fail(stray[0], f"only nodes on the chain from input {image!r}; this one is not "
                              f"on it")
    if last is None:
        raise OnnxImportError(f"input {image!r} feeds no node")
    if state not in ("fc", "gemm", "end"):
        raise _fail(last, "the graph to end with its FC layers: Gemm -> Relu for each hidden "
                          "one [-> Gemm [-> Softmax]] (the class layer without Relu: it gives "
                          f"the logits); it ends here after {len(convs)} Conv and {len(gemms)} "
                          f"Gemm")
    return ([ConvBlock(**kwargs) for kwargs in convs], gemms, state != "fc", conv_weights,
            fc_weights, flatten)


def _named_in_stages(arch: Architecture, conv_weights: list) -> bool:
    """Whether the graph names its conv weights by stage (conv1_1_w .. conv5_3_w, as the zoo's
    VGG does): then the network's layers are named so too."""
    staged = replace(arch, naming="stages").conv_names()
    return all(f"{name}_" in f"{onnx_name}_"  # conv1_1 in conv1_1_w_0, not in conv1_10_w_0
               for name, ((onnx_name, _), _) in zip(staged, conv_weights))


_EXPECTED = {
    "start": "a Conv (conv1) on the image input",
    "conv": "a Relu after the Conv",
    "block": "LRN or MaxPool (each at most once per block), the next Conv, or Reshape/Flatten "
             "after the last one",
    "flat": "a Gemm (the first FC layer) after the flatten",
    "gemm": "a Relu after the Gemm (or a Softmax after fc8)",
    "fc": "the next Gemm or the end of the graph",
    "end": "nothing after the Softmax",
}


def _conv(node, attributes, constants, channels: int, name: str):
    """ConvBlock keyword arguments and the (ONNX name, value) of the weight [out, in / group,
    k, k] and the bias [out]; `channels` is the number of input channels."""
    weight_name, weight = _constant(node, 1, constants, "weight")
    groups = int(attributes.get("group", 1))
    if weight.ndim != 4 or channels % groups or weight.shape[0] % groups:
        raise _fail(node, f"a 4-d weight [out, {channels} / group, k, k] with out and {channels} "
                          f"divisible by group={groups}, got {list(weight.shape)}")
    kernel = _square(node, attributes.get("kernel_shape", weight.shape[2:]), "kernel")
    stride = _square(node, attributes.get("strides", (1, 1)), "stride")
    pads = list(attributes.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4 or len(set(pads)) != 1:  # ConvBlock (and nn.Conv2d) pad symmetrically
        raise _fail(node, f"the same padding on all four sides, got pads={pads}")
    block = dict(out_channels=weight.shape[0], kernel_size=kernel, stride=stride,
                 padding=int(pads[0]), groups=groups)
    bias = _constant(node, 2, constants, "bias") or _zeros(weight.shape[0], name)
    return block, (weight_name, weight), bias


def _max_pool(node, attributes) -> MaxPool:
    kernel = [int(k) for k in attributes["kernel_shape"]]
    stride = [int(s) for s in attributes.get("strides", (1, 1))]
    # ONNX pads [x1_begin, x2_begin, x1_end, x2_end] = (top, left, bottom, right), cnnxfer's order.
    pads = tuple(int(p) for p in attributes.get("pads", (0, 0, 0, 0)))
    if len(kernel) != 2 or len(stride) != 2 or len(pads) != 4:
        raise _fail(node, f"a 2-d max-pool, got kernel_shape={kernel}, strides={stride}, "
                          f"pads={list(pads)}")
    if any(not 0 <= p <= k // 2 for p, k in zip(pads, kernel * 2)):
        raise _fail(node, f"pads in [0, kernel // 2] on each side, got pads={list(pads)} for "
                          f"kernel_shape={kernel}")
    return MaxPool(kernel[0] if kernel[0] == kernel[1] else tuple(kernel),
                   stride[0] if stride[0] == stride[1] else tuple(stride),
                   pads[0] if len(set(pads)) == 1 else pads,
                   ceil_mode=bool(attributes.get("ceil_mode", 0)))


def _gemm(node, attributes, constants, name) -> tuple[tuple[str, np.ndarray], ...]:
    """Y = alpha * A @ B' + beta * C as nn.Linear's (weight [out, in], bias [out]), each as
    (ONNX name, value)."""
    if attributes.get("transA", 0):
        raise _fail(node, "transA=0 (the activations as A)")
    weight_name, weight = _constant(node, 1, constants, "weight")
    if weight.ndim != 2:
        raise _fail(node, f"a 2-d weight, got {weight_name!r} of shape {list(weight.shape)}")
    if not attributes.get("transB", 0):
        weight = np.ascontiguousarray(weight.T)  # B is [in, out]; nn.Linear's weight [out, in]
    # Fold the scalars in: alpha * (x @ W') + beta * c == x @ (alpha * W)' + (beta * c).
    weight = weight * np.float32(attributes.get("alpha", 1.0))
    bias = _constant(node, 2, constants, "bias")
    if bias is None:
        return (weight_name, weight), _zeros(weight.shape[0], name)
    bias_name, bias = bias
    if bias.size != weight.shape[0] or bias.ndim > 2:
        raise _fail(node, f"a bias of {weight.shape[0]} values ([out] or [1, out]), got "
                          f"{bias_name!r} of shape {list(bias.shape)}")
    return (weight_name, weight), (bias_name, bias.reshape(-1) * np.float32(
        attributes.get("beta", 1.0)))


def _zeros(n: int, layer: str) -> tuple[str, np.ndarray]:
    return f"(none: zero bias for {layer})", np.zeros(n, np.float32)


# ------------------------------------------------------------------------- checks and copying

def _check_fc_input(arch: Architecture, flatten, first_fc, first_fc_weight) -> None:
    try:
        c, h, w = arch.fc_input_shape()
    except ValueError as error:
        raise OnnxImportError(str(error)) from None
    weight_name, weight = first_fc_weight
    fc, conv = arch.fc_names()[0], arch.last_conv
    if weight.shape[1] != c * h * w:
        raise OnnxImportError(f"{_describe(first_fc)}: {fc} weight {weight_name!r} takes "
                              f"{weight.shape[1]} inputs but {conv} gives {c}x{h}x{w} = "
                              f"{c * h * w} for a {arch.input_size}x{arch.input_size} input")
    node, shape = flatten
    if shape is not None and (len(shape) != 2 or shape[1] not in (-1, c * h * w)):
        raise _fail(node, f"a reshape to [N, {c * h * w}] or [N, -1], got {shape}")
