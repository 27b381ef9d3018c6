// Conversions between the tensor dtypes and float vectors, shared by the CPU kernels. AVX2 paths
// when the compiler targets them (simd_avx2.h), plain casts otherwise.
#pragma once

#include "simd_avx2.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace cnnxfer {

#if defined(CNNXFER_HAVE_AVX2)
// Eight values of the tensor's dtype <-> eight floats.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const c10::BFloat16* p) {
  return simd::load_bf16(reinterpret_cast<const uint16_t*>(p), simd::kFloats);
}
inline __m256 load8(const c10::Half* p) {
  return simd::load_fp16(reinterpret_cast<const uint16_t*>(p), simd::kFloats);
}
// The first n <= 8 values (lanes past n read as 0; nothing past p[n) is read).
inline __m256 load_partial(const float* p, int64_t n) { return simd::load(p, n); }
inline __m256 load_partial(const c10::BFloat16* p, int64_t n) {
  return simd::load_bf16(reinterpret_cast<const uint16_t*>(p), n);
}
inline __m256 load_partial(const c10::Half* p, int64_t n) {
  return simd::load_fp16(reinterpret_cast<const uint16_t*>(p), n);
}
inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store8(c10::BFloat16* p, __m256 v) {
  simd::store_bf16(reinterpret_cast<uint16_t*>(p), v, simd::kFloats);
}
inline void store8(c10::Half* p, __m256 v) {
  simd::store_fp16(reinterpret_cast<uint16_t*>(p), v, simd::kFloats);
}
#endif

// dst[i] = out_t(src[i]) for i < n, with round-to-nearest-even for bf16/fp16 as the casts do.
template <typename out_t, typename acc_t>
inline void store_converted(const acc_t* src, out_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float> &&
                (std::is_same_v<out_t, float> || std::is_same_v<out_t, c10::BFloat16> ||
                 std::is_same_v<out_t, c10::Half>)) {
    for (; i + simd::kFloats <= n; i += simd::kFloats) store8(dst + i, _mm256_loadu_ps(src + i));
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<out_t>(src[i]);
}

}  // namespace cnnxfer
