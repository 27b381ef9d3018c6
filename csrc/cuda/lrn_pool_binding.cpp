// Registers the CUDA kernel of cnnxfer::relu_lrn_maxpool (lrn_pool.cu) with the dispatcher.
// Kept apart from the kernel so that the .cu file needs no torch headers; built only in CUDA builds.
#include "../lrn_pool.h"
#include "lrn_pool_cuda.h"

#include <ATen/ATen.h>
// The stream comes from c10's own header: ATen/cuda/CUDAContext.h would
// also pull in the cuBLAS, cuSPARSE and cuSOLVER headers, which this file does not use.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace cnnxfer {
namespace {

LrnPoolDType to_lrn_pool_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return LrnPoolDType::kFloat32;
    case at::kDouble:
      return LrnPoolDType::kFloat64;
    case at::kHalf:
      return LrnPoolDType::kFloat16;
    case at::kBFloat16:
      return LrnPoolDType::kBFloat16;
    default:
      // check_relu_lrn_maxpool_args admits every floating type; the kernel has only these four.
      TORCH_CHECK_TYPE(false, "relu_lrn_maxpool: the CUDA kernel supports float32, float64, "
                       "float16 and bfloat16, got ", type);
  }
}

at::Tensor relu_lrn_maxpool_cuda(const at::Tensor& x, int64_t size, double alpha, double beta,
                                 double k, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                 c10::IntArrayRef padding, bool ceil_mode, bool pool_first,
                                 bool relu) {
  const LrnPoolGeometry g =
      check_relu_lrn_maxpool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode);
  TORCH_CHECK(x.is_cuda(), "relu_lrn_maxpool: x must be a CUDA tensor, got one on ", x.device());
  const LrnPoolDType dtype = to_lrn_pool_dtype(x.scalar_type());
  // Allocation and launch must target x's device, not whichever device is current.
  const c10::cuda::CUDAGuard device_guard(x.device());

  // Same rule as the CPU kernel: an NHWC-strided input (and only that) gives a channels_last output.
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  at::Tensor y = at::empty({g.batch, g.channels, g.out_height, g.out_width},
                           x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;

  LrnPoolLaunchGeometry lg{};
  lg.batch = g.batch;
  lg.channels = g.channels;
  lg.height = g.height;
  lg.width = g.width;
  lg.out_height = g.out_height;
  lg.out_width = g.out_width;
  lg.kernel_h = g.kernel_h;
  lg.kernel_w = g.kernel_w;
  lg.stride_h = g.stride_h;
  lg.stride_w = g.stride_w;
  lg.pad_top = g.pad_top;
  lg.pad_left = g.pad_left;
  for (int d = 0; d < 4; ++d) {
    lg.x_stride[d] = x.stride(d);
    lg.y_stride[d] = y.stride(d);
  }
  lg.size = size;
  lg.alpha = alpha;
  lg.beta = beta;
  lg.k = k;
  lg.pool_first = pool_first;
  lg.relu = relu;

  const cudaError_t err = launch_relu_lrn_maxpool(x.const_data_ptr(), y.mutable_data_ptr(), dtype,
                                                  lg, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "relu_lrn_maxpool: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnxfer, CUDA, m) {
  m.impl("relu_lrn_maxpool", &relu_lrn_maxpool_cuda);
}

}  // namespace cnnxfer
