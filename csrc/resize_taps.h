// The taps of one output coordinate when a length-`in` axis is resized to `out` samples, exactly as
// F.interpolate(mode="bilinear", align_corners=False) computes them, with and without antialias.
// Free of torch headers and usable in CUDA device code, so every backend resamples identically.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CNNXFER_HOST_DEVICE __host__ __device__
#else
#define CNNXFER_HOST_DEVICE
#endif

namespace cnnxfer {

// Most taps an output coordinate can have when shrinking `in` to `out` with antialias (the
// triangle filter spans 2 * in / out input samples, plus one for rounding); 2 without it.
CNNXFER_HOST_DEVICE inline int64_t max_resize_taps(int64_t in, int64_t out, bool antialias) {
  if (!antialias || in <= out) return antialias ? 3 : 2;
  return (2 * in + out - 1) / out + 2;
}

// Writes the first input index of output coordinate i to *first and its weights to weights[0..n),
// returns n (>= 1). weights needs max_resize_taps(in, out, antialias) slots.
//   plain bilinear: src = max(scale * (i + 0.5) - 0.5, 0), taps floor(src) and the next one
//     (clamped to the last sample), weights 1 - frac and frac (upsample_bilinear2d);
//   antialias: a triangle filter of half-width max(scale, 1) centred at scale * (i + 0.5), its
//     weights normalized to sum 1 (_upsample_bilinear2d_aa).
template <typename T>
CNNXFER_HOST_DEVICE inline int64_t resize_taps(int64_t i, int64_t in, int64_t out, bool antialias,
                                               int64_t* first, T* weights) {
  const T scale = static_cast<T>(in) / static_cast<T>(out);
  if (!antialias) {
    T src = scale * (static_cast<T>(i) + T(0.5)) - T(0.5);
    if (src < T(0)) src = T(0);
    int64_t i0 = static_cast<int64_t>(src);
    if (i0 > in - 1) i0 = in - 1;
    T frac = src - static_cast<T>(i0);
    if (frac < T(0)) frac = T(0);
    if (frac > T(1)) frac = T(1);
    *first = i0;
    if (i0 < in - 1) {
      weights[0] = T(1) - frac;
      weights[1] = frac;
      return 2;
    }
    weights[0] = T(1);  // the last sample: both taps are the same one
    return 1;
  }
  const T support = scale >= T(1) ? scale : T(1);
  const T inverse_scale = scale >= T(1) ? T(1) / scale : T(1);
  const T center = scale * (static_cast<T>(i) + T(0.5));
  int64_t lo = static_cast<int64_t>(center - support + T(0.5));
  if (lo < 0) lo = 0;
  int64_t hi = static_cast<int64_t>(center + support + T(0.5));
  if (hi > in) hi = in;
  T total = 0;
  for (int64_t j = lo; j < hi; ++j) {
    T x = (static_cast<T>(j) - center + T(0.5)) * inverse_scale;
    x = x < T(0) ? -x : x;
    const T w = x < T(1) ? T(1) - x : T(0);
    weights[j - lo] = w;
    total += w;
  }
  if (total != T(0)) {
    for (int64_t j = lo; j < hi; ++j) weights[j - lo] /= total;
  }
  *first = lo;
  return hi - lo;
}

}  // namespace cnnxfer
