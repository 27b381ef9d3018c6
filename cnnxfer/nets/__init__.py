"""AlexNet-family networks: architectures, the module and its engine, weight files, ONNX import
and the input convention (preprocessing) that goes with a set of weights.

    from cnnxfer import nets
    net = nets.alexnet("alexnet", seed=0)                 # BVLC layout, random weights
    net = nets.weights.load("alexnet.safetensors")        # or .pth (torchvision), .onnx
    fc7 = net(batch, layer="fc7")                         # [N, 4096]

Built on cnnxfer.ops; nothing here decodes images or knows about patches. The ONNX importer
(nets.onnx_import) imports onnx, so it is loaded only when used.
"""
from ..ops.precision import compute_dtype, cpu_has_native_bf16
from . import weights
from .alexnet import BACKENDS, AlexNet, alexnet
from .architecture import (
                           CONV_LAYERS,
                           FC_LAYERS,
                           Architecture,
                           ConvBlock,
                           architecture,
                           default_preprocessing,
)
from .preprocessing import CAFFE, TORCHVISION, Preprocessing
from .state import WeightsError

__all__ = ["AlexNet", "alexnet", "Architecture", "ConvBlock", "architecture",
           "default_preprocessing", "CONV_LAYERS", "FC_LAYERS", "BACKENDS", "Preprocessing",
           "CAFFE", "TORCHVISION", "WeightsError", "weights", "compute_dtype",
           "cpu_has_native_bf16"]
