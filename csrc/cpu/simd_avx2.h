// AVX2 + FMA building blocks for the CPU kernels (8 floats per vector). Included only when the
// compiler targets them (x86-64-v3: Intel since Haswell, AMD since Zen); every user keeps a
// portable loop beside it. AVX2 rather than AVX-512 because it is what the machines this project
// is built and tested on have in common, so every line here runs in the test suite.
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CNNXFER_HAVE_AVX2 1
#include <immintrin.h>

#include <cstdint>

namespace cnnxfer::simd {

constexpr int64_t kFloats = 8;

// All-ones in lanes [0, n), for maskload and blends of a partial vector.
inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < kFloats ? n : kFloats)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Loads n <= 8 floats (lanes past n read as 0, and are not touched in memory).
inline __m256 load(const float* p, int64_t n) {
  return n >= kFloats ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_lanes(n));
}

// Stores the first n <= 8 lanes. A partial store is a load, blend and full store rather than a
// masked store (microcoded and slow on several x86 cores), so p[0, 8) must be addressable and
// private to this thread: every buffer it is used on carries kFloats values of slack.
inline void store(float* p, __m256 v, int64_t n) {
  if (n >= kFloats) {
    _mm256_storeu_ps(p, v);
  } else {
    const __m256 keep = _mm256_loadu_ps(p);
    _mm256_storeu_ps(p, _mm256_blendv_ps(keep, v, _mm256_castsi256_ps(first_lanes(n))));
  }
}

// max(a, b) where a NaN in either operand wins, as torch.max_pool2d: maxps returns its second
// operand when either is NaN, so a NaN already in `a` is put back with a blend.
inline __m256 max_nan(__m256 a, __m256 b) {
  return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

// 1/sqrt(d) for normal positive d: the 12-bit estimate and one Newton step (about 1e-7 relative
// error), several times cheaper than sqrt + div. d = +inf yields NaN here; callers fix it up.
inline __m256 rsqrt_newton(__m256 d) {
  const __m256 r = _mm256_rsqrt_ps(d);
  const __m256 half_d_r = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_set1_ps(0.5f)), r);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(half_d_r, r, _mm256_set1_ps(1.5f)));
}

inline __m256 zero_where_inf(__m256 d, __m256 value) {
  const __m256 is_inf = _mm256_cmp_ps(d, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ);
  return _mm256_andnot_ps(is_inf, value);
}

// d^-1/2 and d^-3/4 (= r * r * rsqrt(r), r = d^-1/2) for d normal positive or +inf (-> 0).
inline __m256 pow_minus_half(__m256 d) { return zero_where_inf(d, rsqrt_newton(d)); }
inline __m256 pow_minus_three_quarters(__m256 d) {
  const __m256 r = rsqrt_newton(d);
  return zero_where_inf(d, _mm256_mul_ps(_mm256_mul_ps(r, r), rsqrt_newton(r)));
}

// Eight uint16 lanes from p, of which only the first n (< 8) exist (the rest read as 0), and the
// reverse. A partial 16-bit vector goes through a small buffer: AVX2 has no 16-bit masked moves.
inline __m128i load_u16_partial(const uint16_t* p, int64_t n) {
  alignas(16) uint16_t tmp[kFloats] = {};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}
inline void store_u16_partial(uint16_t* p, __m128i v, int64_t n) {
  alignas(16) uint16_t tmp[kFloats];
  _mm_store_si128(reinterpret_cast<__m128i*>(tmp), v);
  for (int64_t i = 0; i < n; ++i) p[i] = tmp[i];
}
inline __m128i load_u16(const uint16_t* p, int64_t n) {
  return n >= kFloats ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                      : load_u16_partial(p, n);
}
inline void store_u16(uint16_t* p, __m128i v, int64_t n) {
  if (n >= kFloats) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
  } else {
    store_u16_partial(p, v, n);
  }
}

// bfloat16 <-> float. A bf16 is the top half of a float; rounding to bf16 is to nearest even, and
// NaN stays a (quiet) NaN, as c10::BFloat16 does it.
inline __m256 load_bf16(const uint16_t* p, int64_t n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16(p, n)), 16));
}

inline void store_bf16(uint16_t* p, __m256 v, int64_t n) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i result = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), is_nan);
  // pack the low halves of the eight 32-bit lanes into eight uint16
  const __m256i packed = _mm256_packus_epi32(result, result);  // per 128-bit lane
  store_u16(p, _mm_unpacklo_epi64(_mm256_castsi256_si128(packed),
                                   _mm256_extracti128_si256(packed, 1)), n);
}

inline __m256 load_fp16(const uint16_t* p, int64_t n) { return _mm256_cvtph_ps(load_u16(p, n)); }

inline void store_fp16(uint16_t* p, __m256 v, int64_t n) {
  store_u16(p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), n);
}

// Transposes the 8x8 block rows[0..8) in place: rows[i][j] <-> rows[j][i].
inline void transpose8x8(__m256 rows[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(rows[0], rows[1]), t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
  const __m256 t2 = _mm256_unpacklo_ps(rows[2], rows[3]), t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
  const __m256 t4 = _mm256_unpacklo_ps(rows[4], rows[5]), t5 = _mm256_unpackhi_ps(rows[4], rows[5]);
  const __m256 t6 = _mm256_unpacklo_ps(rows[6], rows[7]), t7 = _mm256_unpackhi_ps(rows[6], rows[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  rows[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  rows[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  rows[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  rows[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  rows[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  rows[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  rows[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  rows[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

}  // namespace cnnxfer::simd
#endif
