// AVX-512 building blocks for the CPU kernels. Only included when the compiler targets AVX-512
// (__AVX512F__); every user keeps a portable loop beside it.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

namespace cnnxfer::simd {

constexpr int64_t kFloats = 16;

// Lanes [0, n) of a 16-lane vector (all of them when n >= 16).
inline __mmask16 first_lanes(int64_t n) {
  return n >= kFloats ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}

// max(a, b) where a NaN in either operand wins, as torch.max_pool2d: maxps alone returns its
// second operand when either is NaN, so a NaN already in `a` must be kept by masking.
inline __m512 max_nan(__m512 a, __m512 b) {
  const __mmask16 a_is_number = _mm512_cmp_ps_mask(a, a, _CMP_ORD_Q);
  return _mm512_mask_max_ps(a, a_is_number, a, b);
}

// 1/sqrt(d) for normal positive d (and +inf -> 0): the 14-bit estimate plus one Newton step, a few
// ulp from the correctly rounded value and several times cheaper than sqrt + div.
inline __m512 rsqrt(__m512 d) {
  const __m512 r = _mm512_rsqrt14_ps(d);
  const __m512 half_d_r = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_set1_ps(0.5f)), r);
  const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(half_d_r, r, _mm512_set1_ps(1.5f)));
  // Newton's step turns inf * 0 into NaN; d = +inf must give 0 as 1/sqrt does.
  const __mmask16 is_inf = _mm512_cmp_ps_mask(d, _mm512_set1_ps(__builtin_inff()), _CMP_EQ_OQ);
  return _mm512_mask_blend_ps(is_inf, refined, _mm512_setzero_ps());
}

// d^-0.75 = r * sqrt(r), r = 1/sqrt(d); sqrt(r) = r * rsqrt(r). Requires d >= a normal k > 0.
inline __m512 pow_minus_three_quarters(__m512 d) {
  const __m512 r = rsqrt(d);
  const __m512 sqrt_r = _mm512_mul_ps(r, rsqrt(r));
  const __mmask16 is_inf = _mm512_cmp_ps_mask(d, _mm512_set1_ps(__builtin_inff()), _CMP_EQ_OQ);
  return _mm512_mask_blend_ps(is_inf, _mm512_mul_ps(r, sqrt_r), _mm512_setzero_ps());
}

// Even lanes of the 32 floats at p (p[0], p[2], ..., p[30]), reading only the first
// 2 * n_out - 1 of them.
inline __m512 load_even(const float* p, int64_t n_out) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const int64_t needed = 2 * n_out - 1;
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(needed), p);
  const __m512 hi = needed > kFloats ? _mm512_maskz_loadu_ps(first_lanes(needed - kFloats),
                                                             p + kFloats)
                                     : _mm512_setzero_ps();
  return _mm512_permutex2var_ps(lo, even, hi);
}

}  // namespace cnnxfer::simd
#endif  // __AVX512F__
