"""Conv-block networks (AlexNet, CaffeNet, ZFNet, VGG-11..19, OverFeat and imported chains):
architectures, the module and its engine, weight files, ONNX import and the input convention
(preprocessing) that goes with a set of weights.

    from cnnxfer import nets
    net = nets.network("alexnet", seed=0)                 # BVLC layout, random weights
    net = nets.network("vgg16", seed=0)                   # layers conv1_1 .. fc8
    net = nets.weights.load("alexnet.safetensors")        # or .pth (torchvision), .onnx
    fc7 = net(batch, layer="fc7")                         # [N, 4096]

Built on cnnxfer.ops; nothing here decodes images or knows about patches. The ONNX importer
(nets.onnx_import) imports onnx, so it is loaded only when used.
"""
from ..ops.precision import compute_dtype, cpu_has_native_bf16
from . import weights
from .architecture import (
                           CONV_LAYERS,
                           FC_LAYERS,
                           NAMES,
                           Architecture,
                           ConvBlock,
                           architecture,
                           default_preprocessing,
)
from .network import BACKENDS, AlexNet, ConvNet, alexnet, network
from .preprocessing import CAFFE, TORCHVISION, Preprocessing
from .state import WeightsError

__all__ = ["ConvNet", "network", "AlexNet", "alexnet", "Architecture", "ConvBlock",
           "architecture", "NAMES", "default_preprocessing", "CONV_LAYERS", "FC_LAYERS",
           "BACKENDS", "Preprocessing", "CAFFE", "TORCHVISION", "WeightsError", "weights",
           "compute_dtype", "cpu_has_native_bf16"]
