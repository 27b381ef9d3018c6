// Plain C++ interface of the CUDA kernel of cnnxfer::relu_lrn_maxpool.
//
// Deliberately free of torch types: the kernel (lrn_pool.cu) is compiled by nvcc without any torch
// header, so it can be compiled and checked on machines whose torch has no CUDA build headers; only
// the binding (lrn_pool_binding.cpp) sees both this header and torch.
#pragma once

// cudaStream_t and cudaError_t; an unscoped enum such as cudaError_t cannot be forward-declared.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace cnnxfer {

enum class LrnPoolDType : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

// Everything the kernel needs, in elements (not bytes). Strides are the tensors' own, so any
// layout works: NCHW, channels_last, or a strided view.
struct LrnPoolLaunchGeometry {
  int64_t batch, channels, height, width;
  int64_t out_height, out_width;
  int64_t kernel_h, kernel_w, stride_h, stride_w;
  // Only the leading pads are needed: the trailing ones already shaped out_height / out_width.
  int64_t pad_top, pad_left;
  int64_t x_stride[4];  // n, c, h, w
  int64_t y_stride[4];  // n, c, h, w
  int64_t size;         // LRN window across channels, odd
  double alpha, beta, k;
  bool pool_first;      // local_response_norm(max_pool2d(.)) instead of max_pool2d(local_response_norm(.))
  bool relu;
};

// Enqueues the kernel on `stream` and returns cudaGetLastError() (cudaSuccess when the output is
// empty and nothing is launched). x and y are device pointers to elements of `dtype`; y must not
// overlap x.
cudaError_t launch_relu_lrn_maxpool(const void* x, void* y, LrnPoolDType dtype,
                                    const LrnPoolLaunchGeometry& g, cudaStream_t stream);

}  // namespace cnnxfer
