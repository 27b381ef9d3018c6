"""The engine's faces: cnnxfer's ops with their argument checks, backend choice, fake kernels and
autograd, and beside them `reference`, the plain-PyTorch meaning of each op.

    from cnnxfer import ops
    y = ops.relu_lrn_maxpool(x)                       # fused ReLU + LRN + max-pool
    z = ops.conv_block(x, weight, bias, padding=2)    # conv + the fused epilogue
    z = ops.conv_block(x, weight, bias, padding=2, backend="triton")  # one kernel (GPU)
    batch = ops.extract_patches(image, boxes)         # [K, 3, 224, 224] network inputs
    ops.reference.relu_lrn_maxpool(x)                 # the spec

Each op is a real torch op (torch.ops.cnnxfer.*), defined by the compiled library, which loads on
the first op call (or load_library()); importing this package does not need it.
"""
from . import reference
from .boxes import check_box_table, check_boxes
from .checks import BACKENDS
from .conv_block import conv_block, conv_block_choices
from .layers import LRN, MaxPool
from .library import ExtensionError
from .library import load as load_library
from .lrn_pool import relu_lrn_maxpool, triton_lrn_pool_op
from .patches import extract_patches
from .precision import compute_dtype, cpu_has_native_bf16

__all__ = ["relu_lrn_maxpool", "conv_block", "conv_block_choices", "extract_patches",
           "triton_lrn_pool_op", "LRN", "MaxPool", "BACKENDS", "load_library", "ExtensionError",
           "compute_dtype",
           "cpu_has_native_bf16", "check_boxes", "check_box_table", "reference"]
