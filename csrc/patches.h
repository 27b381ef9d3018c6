// cnnxfer::extract_patches: crop, resize (bilinear, optionally antialiased), normalize and cast one
// patch per box, in one pass. Meaning: cnnxfer/ops/reference.py extract_patches.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include <vector>

namespace cnnxfer {

// Checks every argument, naming it, its value and what was expected; boxes must be on the CPU
// here (kernels on other devices check a host copy). Returns the per-channel (scale, shift) with
// which value * scale + shift = (value - mean) / std, in output-channel order.
void check_extract_patches_args(const at::Tensor& images, const at::Tensor& boxes, int64_t size,
                                const c10::optional<c10::ArrayRef<double>>& mean,
                                const c10::optional<c10::ArrayRef<double>>& std,
                                std::vector<double>& scale, std::vector<double>& shift);

at::ScalarType extract_patches_out_dtype(const c10::optional<at::ScalarType>& out_dtype);

}  // namespace cnnxfer
