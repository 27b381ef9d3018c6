// Declares cnnxfer::extract_patches and checks its arguments; kernels live in cpu/ and cuda/.
#include "patches.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>

namespace cnnxfer {

void check_extract_patches_args(const at::Tensor& images, const at::Tensor& boxes, int64_t size,
                                const c10::optional<c10::ArrayRef<double>>& mean,
                                const c10::optional<c10::ArrayRef<double>>& std,
                                std::vector<double>& scale, std::vector<double>& shift) {
  TORCH_CHECK_VALUE(images.dim() == 4, "extract_patches: images must be [N, C, H, W], got shape ",
                    images.sizes());
  const at::ScalarType dtype = images.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kByte || dtype == at::kFloat || dtype == at::kDouble ||
                       dtype == at::kBFloat16 || dtype == at::kHalf,
                   "extract_patches: images must be uint8 or floating, got ", dtype);
  TORCH_CHECK_VALUE(size > 0, "extract_patches: size must be positive, got ", size);
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 5,
                    "extract_patches: boxes must be [K, 5] rows (image, x0, y0, x1, y1), got shape ",
                    boxes.sizes());
  TORCH_CHECK_TYPE(boxes.scalar_type() == at::kLong, "extract_patches: boxes must be int64, got ",
                   boxes.scalar_type());
  const int64_t channels = images.size(1);
  for (const auto& [name, values] : {std::pair{"mean", mean}, std::pair{"std", std}}) {
    if (values.has_value()) {
      TORCH_CHECK_VALUE(static_cast<int64_t>(values->size()) == channels, "extract_patches: ",
                        name, " must have one value per channel (", channels, "), got ", *values);
      for (double v : *values) {
        TORCH_CHECK_VALUE(std::isfinite(v), "extract_patches: ", name,
                          " must be finite, got ", *values);
      }
    }
  }
  if (std.has_value()) {
    for (double v : *std) {
      TORCH_CHECK_VALUE(v != 0, "extract_patches: std must not contain 0, got ", *std);
    }
  }
  scale.assign(channels, 1.0);
  shift.assign(channels, 0.0);
  for (int64_t c = 0; c < channels; ++c) {
    const double s = std.has_value() ? 1.0 / (*std)[c] : 1.0;
    scale[c] = s;
    shift[c] = mean.has_value() ? -(*mean)[c] * s : 0.0;
  }
  if (boxes.device().is_cpu()) {
    const at::Tensor b = boxes.contiguous();
    const int64_t* p = b.const_data_ptr<int64_t>();
    const int64_t n = images.size(0), height = images.size(2), width = images.size(3);
    for (int64_t i = 0; i < b.size(0); ++i) {
      const int64_t* r = p + 5 * i;
      TORCH_CHECK_VALUE(r[0] >= 0 && r[0] < n, "extract_patches: boxes[", i, "] points at image ",
                        r[0], " but there are ", n, " images");
      TORCH_CHECK_VALUE(r[1] >= 0 && r[2] >= 0 && r[3] <= width && r[4] <= height &&
                            r[3] > r[1] && r[4] > r[2],
                        "extract_patches: boxes[", i, "] = (x0, y0, x1, y1) = (", r[1], ", ", r[2],
                        ", ", r[3], ", ", r[4], ") must have x0 < x1 <= ", width,
                        " and y0 < y1 <= ", height, " with x0, y0 >= 0 (image ", r[0], ")");
    }
  }
}

at::ScalarType extract_patches_out_dtype(const c10::optional<at::ScalarType>& out_dtype) {
  const at::ScalarType t = out_dtype.value_or(at::kFloat);
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf,
                   "extract_patches: out_dtype must be float32, float64, bfloat16 or float16, got ",
                   t);
  return t;
}

TORCH_LIBRARY_FRAGMENT(cnnxfer, m) {
  m.def(
      "extract_patches(Tensor images, Tensor boxes, int size, float[]? mean, float[]? std, "
      "ScalarType? out_dtype, bool channels_last, bool antialias, bool reverse_channels) -> Tensor");
}

}  // namespace cnnxfer
