// Declares cnnxfer::relu_lrn_maxpool and checks its arguments; kernels live in cpu/ and cuda/.
#include "lrn_pool.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>

namespace cnnxfer {

LrnPoolGeometry check_relu_lrn_maxpool_args(const at::Tensor& x, int64_t size, double alpha,
                                            double beta, double k, c10::IntArrayRef kernel_size,
                                            c10::IntArrayRef stride, c10::IntArrayRef padding,
                                            bool ceil_mode) {
  TORCH_CHECK_VALUE(x.dim() == 4, "relu_lrn_maxpool: x must be a 4-d (N, C, H, W) tensor, got ",
                    x.dim(), " dimensions with shape ", x.sizes());
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
                       dtype == at::kHalf,
                   "relu_lrn_maxpool: x must be float32, float64, bfloat16 or float16, got ",
                   dtype);
  TORCH_CHECK_VALUE(size > 0 && size % 2 == 1,
                    "relu_lrn_maxpool: size (the LRN window) must be a positive odd integer, got ",
                    size);
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha >= 0,
                    "relu_lrn_maxpool: alpha must be a finite number >= 0, got ", alpha);
  TORCH_CHECK_VALUE(std::isfinite(beta) && beta >= 0,
                    "relu_lrn_maxpool: beta must be a finite number >= 0, got ", beta);
  TORCH_CHECK_VALUE(std::isfinite(k) && k >= 0,
                    "relu_lrn_maxpool: k must be a finite number >= 0, got ", k);
  TORCH_CHECK_VALUE(kernel_size.size() == 2 && kernel_size[0] > 0 && kernel_size[1] > 0,
                    "relu_lrn_maxpool: kernel_size must be two positive integers, got ",
                    kernel_size);
  TORCH_CHECK_VALUE(stride.size() == 2 && stride[0] > 0 && stride[1] > 0,
                    "relu_lrn_maxpool: stride must be two positive integers, got ", stride);
  TORCH_CHECK_VALUE(padding.size() == 4,
                    "relu_lrn_maxpool: padding must be (top, left, bottom, right), got ", padding);
  static const char* const sides[4] = {"top", "left", "bottom", "right"};
  for (int i = 0; i < 4; ++i) {
    const int64_t window = kernel_size[i % 2];
    TORCH_CHECK_VALUE(padding[i] >= 0 && padding[i] <= window / 2, "relu_lrn_maxpool: padding ",
                      sides[i], " must lie in [0, kernel_size // 2] = [0, ", window / 2,
                      "], got padding (top, left, bottom, right) = ", padding);
  }
  LrnPoolGeometry g{};
  g.batch = x.size(0);
  g.channels = x.size(1);
  g.height = x.size(2);
  g.width = x.size(3);
  g.kernel_h = kernel_size[0];
  g.kernel_w = kernel_size[1];
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_top = padding[0];
  g.pad_left = padding[1];
  g.pad_bottom = padding[2];
  g.pad_right = padding[3];
  g.ceil_mode = ceil_mode;
  g.out_height = pooled_length(g.height, g.kernel_h, g.stride_h, g.pad_top, g.pad_bottom, ceil_mode);
  g.out_width = pooled_length(g.width, g.kernel_w, g.stride_w, g.pad_left, g.pad_right, ceil_mode);
  TORCH_CHECK_VALUE(g.out_height > 0 && g.out_width > 0,
                    "relu_lrn_maxpool: the pool window ", kernel_size,
                    " is larger than the padded input (H, W) = (", g.height + g.pad_top +
                    g.pad_bottom, ", ", g.width + g.pad_left + g.pad_right, ")");
  return g;
}

at::Tensor relu_lrn_maxpool(const at::Tensor& x, int64_t size, double alpha, double beta,
                            double k, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, bool ceil_mode, bool pool_first, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cnnxfer::relu_lrn_maxpool", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t, double, double, double,
                                         c10::IntArrayRef, c10::IntArrayRef, c10::IntArrayRef,
                                         bool, bool, bool)>();
  return op.call(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, pool_first,
                 relu);
}

TORCH_LIBRARY_FRAGMENT(cnnxfer, m) {
  m.def(
      "relu_lrn_maxpool(Tensor x, int size, float alpha, float beta, float k, int[2] kernel_size, "
      "int[2] stride, int[4] padding, bool ceil_mode, bool pool_first, bool relu) -> Tensor");
}

}  // namespace cnnxfer
