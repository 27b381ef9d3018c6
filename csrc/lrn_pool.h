// cnnxfer::relu_lrn_maxpool: ReLU, local response normalization across channels and max-pooling,
// fused. Meaning (cnnxfer/ops/reference.py):
//   lrn_pool order:  max_pool2d(local_response_norm(relu(x)))
//   pool_lrn order:  local_response_norm(max_pool2d(relu(x)))   (CaffeNet, GoogLeNet)
// This header holds what every backend shares: the pooling geometry and the argument checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace cnnxfer {

// Output length of one pooled axis. Same rule as PyTorch's max_pool2d, generalised to asymmetric
// padding: in ceil mode the last window is dropped when it would start inside the trailing padding.
inline int64_t pooled_length(int64_t input, int64_t kernel, int64_t stride, int64_t pad_before,
                             int64_t pad_after, bool ceil_mode) {
  const int64_t span = input + pad_before + pad_after - kernel;
  if (span < 0) return 0;  // the window does not fit: the caller reports it
  int64_t out = (ceil_mode ? (span + stride - 1) : span) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= input + pad_before) --out;
  return out;
}

struct LrnPoolGeometry {
  int64_t batch, channels, height, width;
  int64_t out_height, out_width;
  int64_t kernel_h, kernel_w, stride_h, stride_w;
  int64_t pad_top, pad_left, pad_bottom, pad_right;
  bool ceil_mode;
};

// Validates every argument (naming it, its value and what was expected) and returns the geometry.
// Shared by the CPU and CUDA kernels so that C++ callers get the same errors as Python ones.
LrnPoolGeometry check_relu_lrn_maxpool_args(const at::Tensor& x, int64_t size, double alpha,
                                            double beta, double k, c10::IntArrayRef kernel_size,
                                            c10::IntArrayRef stride, c10::IntArrayRef padding,
                                            bool ceil_mode);

// The op through the dispatcher, for libtorch programs (csrc built with CMake).
// padding is (top, left, bottom, right).
at::Tensor relu_lrn_maxpool(const at::Tensor& x, int64_t size = 5, double alpha = 1e-4,
                            double beta = 0.75, double k = 1.0,
                            c10::IntArrayRef kernel_size = {3, 3},
                            c10::IntArrayRef stride = {2, 2},
                            c10::IntArrayRef padding = {0, 0, 0, 0}, bool ceil_mode = false,
                            bool pool_first = false, bool relu = true);

}  // namespace cnnxfer
