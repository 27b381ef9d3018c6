"""cnnxfer.nets.onnx_import.from_onnx against onnxruntime on the model-zoo graphs of conv-block
networks: bvlc_alexnet, and the deeper vgg19 and zfnet512.

The onnx package ships those graphs with their weights replaced by ConstantOfShape nodes (every
weight 0.02). The fixtures swap them for seeded random initializers so that a wrong layer shows
in the numbers, run onnxruntime once, and the tests compare cnnxfer's layers with its outputs.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from cnnxfer.nets.onnx_import import OnnxImportError, from_onnx

ort = pytest.importorskip("onnxruntime")

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
LIGHT_ALEXNET = os.path.join(LIGHT, "light_bvlc_alexnet.onnx")
# Caffe-scale inputs (mean-subtracted pixels) make the LRN matter: its sum of squares is ~1 then.
PIXEL_SCALE = 60.0


def light_model() -> onnx.ModelProto:
    return onnx.load(LIGHT_ALEXNET)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def consumer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if tensor in n.input)


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy whose ConstantOfShape weights are random initializers of the same shapes: He-style
    weights (std sqrt(2 / fan_in)) keep activations at the input's scale, biases are small."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    kept = []
    for n in out.graph.node:
        if n.op_type != "ConstantOfShape":
            kept.append(n)
            continue
        shape = [int(d) for d in shapes[n.input[0]]]
        if len(shape) == 1:  # a bias
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
        out.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
    del out.graph.node[:]
    out.graph.node.extend(kept)
    # The shapes are unused now (onnxruntime warns about each): drop them, from the inputs too,
    # where IR version 3 lists initializers.
    for field in (out.graph.initializer, out.graph.input):
        kept = [t for t in field if not t.name.endswith("__SHAPE")]
        del field[:]
        field.extend(kept)
    return out


def tensors(model: onnx.ModelProto, last_conv: str = "conv5") -> dict[str, str]:
    """Graph tensors holding cnnxfer's last conv, fc7 and fc8 outputs."""
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    return {last_conv: reshape.input[0], "fc7": consumer(model, gemms[1].output[0]).output[0],
            "fc8": gemms[2].output[0]}


def run_onnxruntime(model: onnx.ModelProto, path, x: np.ndarray, last_conv: str = "conv5",
                    image: str = "data_0") -> dict[str, np.ndarray]:
    """The last conv, fc7 and fc8 of `model` for images x [N, 3, 224, 224]; the graph's batch
    dim (and its Reshape) is fixed at 1, so one image per run."""
    names = tensors(model, last_conv)
    with_outputs = onnx.ModelProto()
    with_outputs.CopyFrom(model)
    for name in names.values():
        with_outputs.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                       None))
    onnx.save(with_outputs, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = [session.run(list(names.values()), {image: one[None]}) for one in x]
    return {layer: np.concatenate([run[i] for run in runs]) for i, layer in enumerate(names)}


def assert_matches(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    """float32 agreement relative to the layer's largest value."""
    assert tuple(actual.shape) == expected.shape, what
    error = np.abs(actual.detach().numpy() - expected).max()
    scale = np.abs(expected).max()
    assert scale > 0 and error <= 1e-4 * scale, (f"{what}: max abs error {error:.3g}, "
                                                 f"max abs value {scale:.3g}")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """(model with random weights, its path, input batch, onnxruntime's conv5/fc7/fc8)."""
    folder = tmp_path_factory.mktemp("onnx")
    model = with_random_weights(light_model())
    path = folder / "alexnet.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    x *= PIXEL_SCALE
    return model, path, torch.from_numpy(x), run_onnxruntime(model, folder / "outputs.onnx", x)


def test_architecture_read_from_graph(zoo):
    model, path, _, _ = zoo
    arch = from_onnx(path).arch
    assert arch.name == "bvlc_alexnet" and arch.input_size == 224
    assert [b.out_channels for b in arch.convs] == [96, 256, 384, 384, 256]
    assert [b.kernel_size for b in arch.convs] == [11, 5, 3, 3, 3]
    assert [b.groups for b in arch.convs] == [1, 2, 1, 2, 2]
    assert [b.lrn is not None for b in arch.convs] == [True, True, False, False, False]
    assert [b.pool is not None for b in arch.convs] == [True, True, False, False, True]
    assert arch.convs[0].order == arch.convs[1].order == "lrn_pool"
    lrn = arch.convs[0].lrn
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)
    assert arch.convs[4].pool.padding == (0, 0, 1, 1) and not arch.convs[4].pool.ceil_mode
    assert arch.fc == (4096, 4096) and arch.num_classes == 1000
    assert arch.conv5_shape() == (256, 6, 6)


@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_layers_match_onnxruntime(zoo, backend):
    _, path, x, expected = zoo
    net = from_onnx(path, backend=backend)
    assert net.backend == backend
    assert net.preprocessing.channel_order == "BGR" and net.preprocessing.input_size == 224
    for layer in ("conv5", "fc7", "fc8"):
        assert_matches(net(x, layer), expected[layer], f"{backend} {layer}")


def test_a_wrong_network_does_not_match(zoo):
    """The comparison can fail: conv1's LRN beta 0.75 -> 0.7, or conv5's pool pads swapped from
    (bottom, right) to (top, left), must show."""
    model, _, x, expected = zoo
    beta = onnx.ModelProto()
    beta.CopyFrom(model)
    next(a for a in node(beta, "n2").attribute if a.name == "beta").f = 0.7
    with pytest.raises(AssertionError, match="max abs error"):
        assert_matches(from_onnx(beta)(x, "conv5"), expected["conv5"], "beta 0.7")
    pads = onnx.ModelProto()
    pads.CopyFrom(model)
    next(a for a in node(pads, "n14").attribute if a.name == "pads").ints[:] = [1, 1, 0, 0]
    net = from_onnx(pads)
    assert net.arch.convs[4].pool.padding == (1, 1, 0, 0)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_matches(net(x, "conv5"), expected["conv5"], "pads swapped")


def test_equivalent_gemm_spellings_give_the_same_network(zoo):
    """fc8 as transB=0 with alpha and beta folded in: B' = W.T / 2, alpha = 2, C' = 2 C, beta =
    0.5, and Flatten instead of Reshape."""
    model, _, x, expected = zoo
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    fc8 = node(edited, "n22")
    weights = {t.name: t for t in edited.graph.initializer}
    for name, rewrite in ((fc8.input[1], lambda w: w.T / 2), (fc8.input[2], lambda b: b * 2)):
        value = rewrite(numpy_helper.to_array(weights[name])).astype(np.float32)
        weights[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
    del fc8.attribute[:]
    fc8.attribute.extend([helper.make_attribute("transB", 0), helper.make_attribute("alpha", 2.0),
                          helper.make_attribute("beta", 0.5)])
    reshape = node(edited, "n15")
    reshape.CopyFrom(helper.make_node("Flatten", [reshape.input[0]], list(reshape.output), "n15"))
    assert_matches(from_onnx(edited)(x, "fc8"), expected["fc8"], "fc8 after the rewrite")


def test_loads_from_a_model_proto(zoo):
    model, _, x, expected = zoo
    net = from_onnx(model, backend="reference")
    assert_matches(net(x[:1], "fc8"), expected["fc8"][:1], "fc8 from a ModelProto")


def test_pool_before_lrn_and_headless_graphs():
    """MaxPool before LRN gives order "pool_lrn" (CaffeNet); a graph that ends at fc7's Relu
    gives a network without fc8. The light model's weights (all 0.02) are enough here."""
    model = light_model()
    lrn, pool = node(model, "n2"), node(model, "n3")
    relu_out, pool_out = lrn.input[0], pool.output[0]
    lrn.input[0], lrn.output[0] = "pooled", pool_out
    pool.input[0], pool.output[0] = relu_out, "pooled"
    keep = [n for n in model.graph.node if n.name not in ("n21", "n22", "n23")]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    net = from_onnx(model)
    assert net.arch.convs[0].order == "pool_lrn" and net.arch.convs[1].order == "lrn_pool"
    assert net.arch.num_classes is None and net.layers[-1] == "fc7"
    assert float(net.fc7.bias[0].detach()) == pytest.approx(0.02)


def edited(edit) -> onnx.ModelProto:
    model = light_model()
    edit(model)
    return model


def replace_node(name, op_type, **attributes):
    def edit(model):
        old = node(model, name)
        old.CopyFrom(helper.make_node(op_type, list(old.input), list(old.output), name,
                                      **attributes))
    return edit


def set_attribute(name, attribute, value):
    def edit(model):
        n = node(model, name)
        kept = [a for a in n.attribute if a.name != attribute]
        del n.attribute[:]
        n.attribute.extend(kept + [helper.make_attribute(attribute, value)])
    return edit


def insert_after(name, op_type):
    """Insert a node of op_type between node `name` and its consumer."""
    def edit(model):
        before = node(model, name)
        after = consumer(model, before.output[0])
        after.input[0] = "inserted"
        nodes = list(model.graph.node)
        nodes.insert(nodes.index(before) + 1,
                     helper.make_node(op_type, [before.output[0]], ["inserted"], "extra"))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return edit


def drop_conv3(model):
    """conv3 and its Relu removed: conv4 reads conv2's pool."""
    pool2, conv4 = node(model, "n7"), node(model, "n10")
    conv4.input[0] = pool2.output[0]
    keep = [n for n in model.graph.node if n.name not in ("n8", "n9")]
    del model.graph.node[:]
    model.graph.node.extend(keep)


@pytest.mark.parametrize("edit, names", [
    (replace_node("n5", "Selu"), ["'n5'", "Selu", "Relu"]),
    (insert_after("n9", "Abs"), ["'extra'", "Abs"]),
    (set_attribute("n8", "dilations", [2, 2]), ["'n8'", "Conv", "dilations"]),
    (set_attribute("n3", "auto_pad", "SAME_UPPER"), ["'n3'", "MaxPool", "auto_pad"]),
    (set_attribute("n0", "strides", [4, 2]), ["'n0'", "Conv", "square stride"]),
    (set_attribute("n4", "pads", [2, 1, 2, 1]), ["'n4'", "Conv", "padding"]),
    (set_attribute("n2", "size", 4), ["'n2'", "LRN", "odd"]),
    # four convs make a chain the importer reads; conv4's grouped weight then cannot take
    # conv2's 256 channels, and the error names the graph's tensor
    (drop_conv3, ["mis-shaped conv3.weight (conv4_w_0)", "[384, 128, 3, 3]"]),
    (replace_node("n22", "Relu"), ["'n22'", "Relu", "Gemm"]),
], ids=["selu", "abs", "dilations", "auto_pad", "strides", "pads", "lrn_size", "four_convs",
        "no_fc8_gemm"])
def test_unmappable_graphs_name_the_node(edit, names):
    with pytest.raises(OnnxImportError) as info:
        from_onnx(edited(edit))
    for name in names:
        assert name in str(info.value)


def test_unnamed_node_is_named_by_its_output():
    def edit(model):
        replace_node("n5", "Selu")(model)
        node(model, "n5").name = ""
    with pytest.raises(OnnxImportError, match=r"node 'r5' \(Selu\)"):
        from_onnx(edited(edit))


def set_shape(name, shape):
    def edit(model):
        shapes = {t.name: t for t in model.graph.initializer}
        shapes[name].CopyFrom(numpy_helper.from_array(np.array(shape, np.int64), name))
    return edit


def test_wrong_weight_shapes_are_listed():
    with pytest.raises(OnnxImportError) as info:
        from_onnx(edited(set_shape("fc7_w_0__SHAPE", [4096, 4000])))
    message = str(info.value)
    assert "fc7_w_0" in message and "[4096, 4000]" in message and "[4096, 4096]" in message
    with pytest.raises(OnnxImportError) as info:
        from_onnx(edited(set_shape("conv4_w_0__SHAPE", [384, 192, 5, 5])))
    assert "conv4_w_0" in str(info.value) and "[384, 192, 5, 5]" in str(info.value)
    assert "[384, 192, 3, 3]" in str(info.value)


def test_fc6_width_must_fit_conv5():
    with pytest.raises(OnnxImportError) as info:
        from_onnx(edited(set_shape("fc6_w_0__SHAPE", [4096, 9000])))
    message = str(info.value)
    assert "'n16' (Gemm)" in message and "9000" in message and "9216" in message


def test_nan_weight_is_named():
    def edit(model):
        fill = next(a for a in node_by_output(model, "conv3_b_0").attribute if a.name == "value")
        fill.t.CopyFrom(numpy_helper.from_array(np.array([np.nan], np.float32)))
    with pytest.raises(OnnxImportError, match="conv3_b_0.*NaN"):
        from_onnx(edited(edit))


def node_by_output(model, output):
    return next(n for n in model.graph.node if output in n.output)


def test_missing_and_garbage_files(tmp_path):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        from_onnx(missing)
    for name, data in (("garbage.onnx", b"\x00\x01 this is not a protobuf"), ("empty.onnx", b"")):
        garbage = tmp_path / name
        garbage.write_bytes(data)
        with pytest.raises(OnnxImportError, match=name):
            from_onnx(str(garbage))


def test_preprocessing_is_kept_and_checked():
    from dataclasses import replace

    from cnnxfer.nets.preprocessing import CAFFE

    mine = replace(CAFFE, input_size=224, mean=(100.0, 110.0, 120.0))
    assert from_onnx(light_model(), preprocessing=mine).preprocessing == mine
    with pytest.raises(ValueError, match="227"):
        from_onnx(light_model(), preprocessing=CAFFE)


# ------------------------------------------------------------------ deeper chains: VGG-19, ZFNet

def narrowed(model: onnx.ModelProto, divide: int = 8) -> onnx.ModelProto:
    """The graph with every weight's channel counts (and the classes, and the Reshape's target)
    divided by `divide`: the zoo graph's ops and attributes as they are, at a width that
    onnxruntime and the reference run in a fraction of a second."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if tensor.name.endswith("__SHAPE"):
            dims = [int(d) for d in value]
            dims[0] //= divide
            if len(dims) >= 2 and dims[1] != 3:  # not the image's three channels
                dims[1] //= divide
        elif tensor.name == "OC2_DUMMY_1":  # the Reshape's [1, C * H * W]
            dims = [int(value[0]), int(value[1]) // divide]
        elif tensor.name.endswith(("_w_0", "_b_0")):  # a weight stored as it is
            keep = tuple(slice(0, n // divide if axis == 0 or (axis == 1 and n != 3) else n)
                         for axis, n in enumerate(value.shape))
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value[keep]),
                                                    tensor.name))
            continue
        else:
            continue
        tensor.CopyFrom(numpy_helper.from_array(np.array(dims, dtype=value.dtype), tensor.name))
    # IR version 3 lists the initializers among the inputs, with their shapes: follow them
    shapes = {t.name: list(t.dims) for t in out.graph.initializer}
    for graph_input in out.graph.input:
        if graph_input.name in shapes:
            dims = graph_input.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[graph_input.name]):
                dim.dim_value = size
    return out


DEEP_GRAPHS = {  # graph: (its image input, the last conv's name in cnnxfer, the layer names)
    "light_vgg19.onnx": ("data_0", "conv5_4", ("conv1_1", "conv1_2", "conv2_1")),
    "light_zfnet512.onnx": ("gpu_0/data_0", "conv5", ("conv1", "conv2", "conv3")),
}


@pytest.fixture(scope="module", params=sorted(DEEP_GRAPHS))
def deep_zoo(request, tmp_path_factory):
    """(graph file name, narrowed model with random weights, its path, inputs, onnxruntime's
    last conv / fc7 / fc8)."""
    image, last_conv, _ = DEEP_GRAPHS[request.param]
    folder = tmp_path_factory.mktemp("deep_onnx")
    model = with_random_weights(narrowed(onnx.load(os.path.join(LIGHT, request.param))), seed=2)
    path = folder / request.param
    onnx.save(model, path)
    x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    x *= PIXEL_SCALE
    expected = run_onnxruntime(model, folder / "outputs.onnx", x, last_conv, image)
    return request.param, model, path, torch.from_numpy(x), expected


@pytest.mark.parametrize("backend", ["engine", "reference"])
def test_deep_graphs_match_onnxruntime(deep_zoo, backend):
    name, _, path, x, expected = deep_zoo
    _, last_conv, first_layers = DEEP_GRAPHS[name]
    net = from_onnx(path, backend=backend)
    assert net.layers[:3] == first_layers and net.arch.last_conv == last_conv
    assert net.layers[-3:] == ("fc6", "fc7", "fc8")
    for layer in (last_conv, "fc7", "fc8"):
        assert_matches(net(x, layer), expected[layer], f"{name} {backend} {layer}")


def test_deep_graphs_architectures():
    """What the importer reads from the graphs (narrowed 8x, so their widths are too)."""
    vgg = from_onnx(narrowed(onnx.load(os.path.join(LIGHT, "light_vgg19.onnx")))).arch
    assert vgg.naming == "stages" and len(vgg.convs) == 16
    assert [b.pool is not None for b in vgg.convs] == [False, True, False, True] + (
        [False] * 3 + [True]) * 3
    assert {(b.kernel_size, b.stride, b.padding) for b in vgg.convs} == {(3, 1, 1)}
    assert vgg.fc_input_shape() == (64, 7, 7) and vgg.fc == (512, 512)
    zf = from_onnx(narrowed(onnx.load(os.path.join(LIGHT, "light_zfnet512.onnx")))).arch
    assert zf.naming == "sequential" and [b.out_channels for b in zf.convs] == [
        12, 32, 64, 64, 64]
    assert zf.fc == (512, 128) and zf.num_classes == 125  # fc7 narrower than fc6
    assert [b.order for b in zf.convs[:2]] == ["lrn_pool"] * 2
    assert [b.kernel_size for b in zf.convs] == [7, 5, 3, 3, 3]
    assert [b.stride for b in zf.convs] == [2, 2, 1, 1, 1]
    assert zf.convs[0].lrn.k == 2.0 and zf.fc_input_shape() == (64, 6, 6)
