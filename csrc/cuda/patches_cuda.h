// Plain C++ interface of the CUDA kernel of cnnxfer::extract_patches.
//
// Deliberately free of torch types: the kernel (patches.cu) is compiled by nvcc without any torch
// header, so it can be compiled and checked on machines whose torch has no CUDA build headers; only
// the binding (patches_binding.cpp) sees both this header and torch.
#pragma once

// cudaStream_t and cudaError_t; an unscoped enum such as cudaError_t cannot be forward-declared.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace cnnxfer {

enum class PatchesInputDType : int { kUInt8, kFloat32, kFloat64, kBFloat16, kFloat16 };
enum class PatchesOutputDType : int { kFloat32, kFloat64, kBFloat16, kFloat16 };

// Channel counts up to this pass their normalization by value, inside the kernel's parameters;
// more channels need scale_shift_device.
constexpr int kPatchesInlineChannels = 16;

// Everything the kernel needs besides the pointers, in elements (not bytes). Strides are the
// tensors' own, so any image layout works, and the output may be NCHW or channels_last.
struct PatchesLaunchGeometry {
  int64_t images, channels, height, width;  // N, C, H, W
  int64_t image_stride[4];                  // n, c, h, w
  int64_t boxes;                            // K
  int64_t size;                             // patches are size x size
  int64_t out_stride[4];                    // k, c, i, j of the [K, C, size, size] output
  // The most taps any box needs along x / y: cnnxfer::max_resize_taps(widest box width, size,
  // antialias) and the same for the tallest box (resize_taps.h). They size the kernel's
  // shared-memory tap tables; a box needing more than a table holds (an antialiased shrink by
  // more than ~30x) takes a slower table-free path, compiled into a kernel variant that is
  // launched only when these say it may be needed, or when they are <= 0 (unknown). A box that
  // needs more than these say is undefined: its patch may come out as NaN.
  int64_t max_taps_x, max_taps_y;
  bool antialias;
  bool reverse_channels;  // output channel c reads input channel C - 1 - c
  // Output channel c is value * scale[c] + shift[c], in output-channel order
  // (check_extract_patches_args); read from here when channels <= kPatchesInlineChannels.
  double scale[kPatchesInlineChannels];
  double shift[kPatchesInlineChannels];
  // Otherwise a device array of 2 * channels doubles, all scales then all shifts; it must stay
  // valid until the kernel has run on `stream`.
  const double* scale_shift_device;
};

// Enqueues the kernel on `stream` and returns cudaGetLastError() (cudaSuccess when the output is
// empty and nothing is launched; cudaErrorInvalidValue for a bad dtype, size < 1, or more than
// kPatchesInlineChannels channels without scale_shift_device). images and out are device pointers
// to elements of their dtypes, out must not overlap images; boxes_device points at K contiguous
// int64 rows (image, x0, y0, x1, y1), which the caller has checked (check_extract_patches_args on
// a host copy): a row that would read outside its image gives a patch of NaNs instead.
cudaError_t launch_extract_patches(const void* images, const int64_t* boxes_device, void* out,
                                   PatchesInputDType in_dtype, PatchesOutputDType out_dtype,
                                   const PatchesLaunchGeometry& g, cudaStream_t stream);

}  // namespace cnnxfer
