// Registers the CUDA kernel of cnnxfer::extract_patches (patches.cu) with the dispatcher. Kept
// apart from the kernel so that the .cu file needs no torch headers; built only in CUDA builds.
#include "../patches.h"
#include "../resize_taps.h"
#include "patches_cuda.h"

#include <ATen/ATen.h>
// The stream comes from c10's own header: ATen/cuda/CUDAContext.h would
// also pull in the cuBLAS, cuSPARSE and cuSOLVER headers, which this file does not use.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace cnnxfer {
namespace {

PatchesInputDType to_input_dtype(at::ScalarType type) {
  switch (type) {
    case at::kByte:
      return PatchesInputDType::kUInt8;
    case at::kFloat:
      return PatchesInputDType::kFloat32;
    case at::kDouble:
      return PatchesInputDType::kFloat64;
    case at::kBFloat16:
      return PatchesInputDType::kBFloat16;
    case at::kHalf:
      return PatchesInputDType::kFloat16;
    default:
      // check_extract_patches_args has rejected every other type already.
      TORCH_CHECK_TYPE(false, "extract_patches: the CUDA kernel supports uint8, float32, "
                       "float64, bfloat16 and float16 images, got ", type);
  }
}

PatchesOutputDType to_output_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return PatchesOutputDType::kFloat32;
    case at::kDouble:
      return PatchesOutputDType::kFloat64;
    case at::kBFloat16:
      return PatchesOutputDType::kBFloat16;
    case at::kHalf:
      return PatchesOutputDType::kFloat16;
    default:
      // extract_patches_out_dtype has rejected every other type already.
      TORCH_CHECK_TYPE(false, "extract_patches: the CUDA kernel writes float32, float64, "
                       "bfloat16 or float16, got ", type);
  }
}

at::Tensor extract_patches_cuda(const at::Tensor& images, const at::Tensor& boxes, int64_t size,
                                c10::optional<c10::ArrayRef<double>> mean,
                                c10::optional<c10::ArrayRef<double>> std,
                                c10::optional<at::ScalarType> out_dtype, bool channels_last,
                                bool antialias, bool reverse_channels) {
  TORCH_CHECK(images.is_cuda(), "extract_patches: images must be a CUDA tensor, got one on ",
              images.device());
  TORCH_CHECK(boxes.device() == images.device(),
              "extract_patches: boxes must be on the images' device (", images.device(),
              "), got boxes on ", boxes.device());
  // The checks read the boxes on the host, so a bad box is an error naming its row rather than a
  // patch of NaNs; the copy also gives the kernel its tap-table sizes. It waits for the stream.
  const at::Tensor host_boxes = boxes.cpu();
  std::vector<double> scale, shift;
  check_extract_patches_args(images, host_boxes, size, mean, std, scale, shift);
  const at::ScalarType out_type = extract_patches_out_dtype(out_dtype);
  const PatchesInputDType in_kind = to_input_dtype(images.scalar_type());
  const PatchesOutputDType out_kind = to_output_dtype(out_type);
  // Allocation and launch must target the images' device, not whichever device is current.
  const c10::cuda::CUDAGuard device_guard(images.device());

  const int64_t num_boxes = boxes.size(0), channels = images.size(1);
  at::Tensor out = at::empty(
      {num_boxes, channels, size, size},
      images.options().dtype(out_type).memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;

  PatchesLaunchGeometry g{};
  g.images = images.size(0);
  g.channels = channels;
  g.height = images.size(2);
  g.width = images.size(3);
  for (int d = 0; d < 4; ++d) {
    g.image_stride[d] = images.stride(d);
    g.out_stride[d] = out.stride(d);
  }
  g.boxes = num_boxes;
  g.size = size;
  const at::Tensor host_rows = host_boxes.contiguous();
  const int64_t* row = host_rows.const_data_ptr<int64_t>();
  int64_t widest = 1, tallest = 1;
  for (int64_t k = 0; k < num_boxes; ++k, row += 5) {
    widest = std::max(widest, row[3] - row[1]);
    tallest = std::max(tallest, row[4] - row[2]);
  }
  // max_resize_taps grows with the input length, so the largest box bounds every box.
  g.max_taps_x = max_resize_taps(widest, size, antialias);
  g.max_taps_y = max_resize_taps(tallest, size, antialias);
  g.antialias = antialias;
  g.reverse_channels = reverse_channels;

  // Kept alive until the launch is enqueued; the caching allocator orders its reuse after the
  // kernel on this stream.
  at::Tensor scale_shift;
  if (channels <= kPatchesInlineChannels) {
    std::copy(scale.begin(), scale.end(), g.scale);
    std::copy(shift.begin(), shift.end(), g.shift);
    g.scale_shift_device = nullptr;
  } else {
    std::vector<double> both(scale);
    both.insert(both.end(), shift.begin(), shift.end());
    scale_shift = at::tensor(both, at::TensorOptions().dtype(at::kDouble)).to(images.device());
    g.scale_shift_device = scale_shift.const_data_ptr<double>();
  }

  const at::Tensor device_boxes = boxes.contiguous();
  const cudaError_t err = launch_extract_patches(
      images.const_data_ptr(), device_boxes.const_data_ptr<int64_t>(), out.mutable_data_ptr(),
      in_kind, out_kind, g, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "extract_patches: CUDA kernel launch failed: ",
              cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnxfer, CUDA, m) {
  m.impl("extract_patches", &extract_patches_cuda);
}

}  // namespace cnnxfer
