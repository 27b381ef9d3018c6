// CPU kernel of cnnxfer::relu_lrn_maxpool.
//
// One pass over the input: the image is walked row by row; each input row is loaded once (with the
// ReLU and the conversion to the accumulation type), normalized across channels, pooled
// horizontally, and kept in a ring of kernel_h rows; each output row is the element-wise max of the
// ring rows its window covers. Overlapping windows (3x3 stride 2) therefore reuse rows instead of
// recomputing the LRN. Two row layouts follow the input's memory format:
//   planar      [C][W]  (NCHW input): inner loops run along W;
//   interleaved [W][C]  (channels_last input): inner loops run along C.
// Inner loops are plain contiguous loops written for the compiler's auto-vectorizer (the build uses
// -O3 -fno-math-errno and, unless CNNXFER_PORTABLE=1, -march=native); sums and powers are done in
// float for bf16/fp16 inputs and in double for float64.
#include "../lrn_pool.h"
#include "simd_avx2.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace cnnxfer {
namespace {

enum class Layout { kPlanar, kInterleaved };

// max that lets a NaN through, as torch.max_pool2d does.
template <typename T>
inline T max_nan(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// ---------------------------------------------------------------- element-wise row helpers

// acc[i] = max_nan(acc[i], values[i]) for i < n.
template <typename T>
void max_into(T* acc, const T* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = max_nan(acc[i], values[i]);
}

// dst[i] = float(src[i * stride]), with the ReLU (NaN kept) when relu is set.
template <typename scalar_t, typename acc_t>
void load_row(const scalar_t* src, int64_t stride, acc_t* dst, int64_t n, bool relu) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i * stride]);
  if (relu) {
    for (int64_t i = 0; i < n; ++i) dst[i] = dst[i] < acc_t(0) ? acc_t(0) : dst[i];
  }
}

template <typename scalar_t, typename acc_t>
void store_row(const acc_t* src, scalar_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

#if defined(CNNXFER_HAVE_AVX2)
template <>
void max_into<float>(float* acc, const float* values, int64_t n) {
  for (int64_t i = 0; i < n; i += simd::kFloats) {
    const int64_t lanes = n - i;
    simd::store(acc + i, simd::max_nan(simd::load(acc + i, lanes), simd::load(values + i, lanes)),
                lanes);
  }
}

// Contiguous rows of float, bf16 and fp16 convert 8 values at a time; the last n % 8 one by one
// (a partial 16-bit vector would need a bounce through memory, which costs more).
template <typename scalar_t, typename LoadVector>
inline void load_row_avx2(const scalar_t* src, float* dst, int64_t n, bool relu,
                          LoadVector load_vector) {
  int64_t i = 0;
  for (; i + simd::kFloats <= n; i += simd::kFloats) {
    const __m256 v = load_vector(i);
    _mm256_storeu_ps(dst + i, relu ? simd::relu(v) : v);
  }
  for (; i < n; ++i) {
    const float v = static_cast<float>(src[i]);
    dst[i] = relu && v < 0.f ? 0.f : v;
  }
}

template <typename scalar_t, typename StoreVector>
inline void store_row_avx2(const float* src, scalar_t* dst, int64_t n, StoreVector store_vector) {
  int64_t i = 0;
  for (; i + simd::kFloats <= n; i += simd::kFloats) store_vector(i, _mm256_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

template <>
void load_row<float, float>(const float* src, int64_t stride, float* dst, int64_t n, bool relu) {
  if (stride != 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i * stride];
    if (relu) load_row_avx2(dst, dst, n, true, [&](int64_t i) { return _mm256_loadu_ps(dst + i); });
    return;
  }
  load_row_avx2(src, dst, n, relu, [&](int64_t i) { return _mm256_loadu_ps(src + i); });
}

template <>
void load_row<c10::BFloat16, float>(const c10::BFloat16* src, int64_t stride, float* dst,
                                    int64_t n, bool relu) {
  if (stride != 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i * stride]);
    if (relu) load_row_avx2(dst, dst, n, true, [&](int64_t i) { return _mm256_loadu_ps(dst + i); });
    return;
  }
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  load_row_avx2(src, dst, n, relu, [&](int64_t i) { return simd::load_bf16(bits + i, simd::kFloats); });
}

template <>
void load_row<c10::Half, float>(const c10::Half* src, int64_t stride, float* dst, int64_t n,
                                bool relu) {
  if (stride != 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i * stride]);
    if (relu) load_row_avx2(dst, dst, n, true, [&](int64_t i) { return _mm256_loadu_ps(dst + i); });
    return;
  }
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  load_row_avx2(src, dst, n, relu, [&](int64_t i) { return simd::load_fp16(bits + i, simd::kFloats); });
}

template <>
void store_row<c10::BFloat16, float>(const float* src, c10::BFloat16* dst, int64_t n) {
  auto* bits = reinterpret_cast<uint16_t*>(dst);
  store_row_avx2(src, dst, n, [&](int64_t i, __m256 v) { simd::store_bf16(bits + i, v, simd::kFloats); });
}

template <>
void store_row<c10::Half, float>(const float* src, c10::Half* dst, int64_t n) {
  auto* bits = reinterpret_cast<uint16_t*>(dst);
  store_row_avx2(src, dst, n, [&](int64_t i, __m256 v) { simd::store_fp16(bits + i, v, simd::kFloats); });
}
#endif  // CNNXFER_HAVE_AVX2

// ---------------------------------------------------------------- local response normalization

// D^-beta, with exact fast forms for the betas real networks use (0.75 in AlexNet, CaffeNet,
// GoogLeNet): they vectorize, where a pow() call does not.
enum class BetaKind { kThreeQuarters, kHalf, kOne, kGeneral };

template <BetaKind kind, typename T>
inline T inverse_power(T d, T beta) {
  if constexpr (kind == BetaKind::kThreeQuarters) {
    const T r = T(1) / std::sqrt(d);
    return r * std::sqrt(r);
  } else if constexpr (kind == BetaKind::kHalf) {
    return T(1) / std::sqrt(d);
  } else if constexpr (kind == BetaKind::kOne) {
    return T(1) / d;
  } else {
    return std::pow(d, -beta);
  }
}

template <typename T>
struct LrnConstants {
  int64_t size;     // odd window length across channels
  T alpha_over_size;
  T beta;
  T k;
  BetaKind kind;
  // k is a normal positive number, so every denominator is normal or +inf and the approximate
  // reciprocal square roots are accurate (k = 0 allows denormal or zero denominators).
  bool denominators_normal;
};

// LRN across the C rows of a planar block: rows c (stride row_stride), columns [0, length).
// scratch needs C * length values.
template <BetaKind kind, typename T>
void lrn_planar(T* block, int64_t channels, int64_t row_stride, int64_t length, T* scratch,
                const LrnConstants<T>& p) {
  T* squares = scratch;  // [C][length]
  for (int64_t c = 0; c < channels; ++c) {
    const T* v = block + c * row_stride;
    T* s = squares + c * length;
    for (int64_t i = 0; i < length; ++i) s[i] = v[i] * v[i];
  }
  const int64_t half = p.size / 2;
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t first = std::max<int64_t>(0, c - half);
    const int64_t last = std::min<int64_t>(channels - 1, c + half);
    T* v = block + c * row_stride;
    for (int64_t i = 0; i < length; ++i) {
      T sum = 0;
      for (int64_t j = first; j <= last; ++j) sum += squares[j * length + i];
      v[i] *= inverse_power<kind>(p.k + p.alpha_over_size * sum, p.beta);
    }
  }
}

// LRN across the C values of each of `length` interleaved pixels, out of place. `in` points at
// channel 0 of the first pixel; each pixel (stride in_stride) has size/2 zeros on both sides of
// its C channels, so every window is read whole, straight from the values.
template <BetaKind kind, typename T>
void lrn_interleaved(const T* in, int64_t in_stride, T* out, int64_t out_stride,
                     int64_t channels, int64_t length, const LrnConstants<T>& p) {
  const int64_t half = p.size / 2;
  for (int64_t i = 0; i < length; ++i) {
    const T* v = in + i * in_stride;
    T* o = out + i * out_stride;
    for (int64_t c = 0; c < channels; ++c) {
      T sum = 0;
      for (int64_t t = -half; t <= half; ++t) sum += v[c + t] * v[c + t];
      o[c] = v[c] * inverse_power<kind>(p.k + p.alpha_over_size * sum, p.beta);
    }
  }
}

#if defined(CNNXFER_HAVE_AVX2)
// D^-beta on 8 lanes for the betas with closed forms (kind != kGeneral).
template <BetaKind kind>
inline __m256 inverse_power_avx2(__m256 d, bool denominators_normal) {
  const __m256 one = _mm256_set1_ps(1.f);
  if constexpr (kind == BetaKind::kThreeQuarters) {
    if (denominators_normal) return simd::pow_minus_three_quarters(d);
    const __m256 r = _mm256_div_ps(one, _mm256_sqrt_ps(d));
    return _mm256_mul_ps(r, _mm256_sqrt_ps(r));
  } else if constexpr (kind == BetaKind::kHalf) {
    if (denominators_normal) return simd::pow_minus_half(d);
    return _mm256_div_ps(one, _mm256_sqrt_ps(d));
  } else {
    return _mm256_div_ps(one, d);
  }
}

template <BetaKind kind>
void lrn_planar_avx2(float* block, int64_t channels, int64_t row_stride, int64_t length,
                     float* scratch, const LrnConstants<float>& p) {
  float* squares = scratch;  // [C][length]
  for (int64_t c = 0; c < channels; ++c) {
    const float* v = block + c * row_stride;
    float* sq = squares + c * length;
    for (int64_t i = 0; i < length; i += simd::kFloats) {
      const __m256 x = simd::load(v + i, length - i);
      simd::store(sq + i, _mm256_mul_ps(x, x), length - i);
    }
  }
  const int64_t half = p.size / 2;
  const __m256 k = _mm256_set1_ps(p.k);
  const __m256 scale = _mm256_set1_ps(p.alpha_over_size);
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t first = std::max<int64_t>(0, c - half);
    const int64_t last = std::min<int64_t>(channels - 1, c + half);
    float* v = block + c * row_stride;
    for (int64_t i = 0; i < length; i += simd::kFloats) {
      const int64_t lanes = length - i;
      __m256 sum = _mm256_setzero_ps();
      for (int64_t j = first; j <= last; ++j) {
        sum = _mm256_add_ps(sum, simd::load(squares + j * length + i, lanes));
      }
      // lanes past the end hold d = k: harmless for every form of the power, and not stored
      const __m256 d = _mm256_fmadd_ps(scale, sum, k);
      simd::store(v + i, _mm256_mul_ps(simd::load(v + i, lanes),
                                       inverse_power_avx2<kind>(d, p.denominators_normal)),
                  lanes);
    }
  }
}

// Sum of squares over the window [-half, half] around v[0..lanes): two independent chains.
// kHalf > 0 fixes the window at compile time (size 5, every AlexNet-family net, is kHalf = 2).
template <int kHalf>
inline __m256 window_sum_of_squares(const float* v, int64_t half, int64_t lanes) {
  const int64_t h = kHalf > 0 ? kHalf : half;
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t t = -h;
  for (; t + 1 <= h; t += 2) {
    const __m256 a = simd::load(v + t, lanes), b = simd::load(v + t + 1, lanes);
    even = _mm256_fmadd_ps(a, a, even);
    odd = _mm256_fmadd_ps(b, b, odd);
  }
  if (t <= h) {
    const __m256 a = simd::load(v + t, lanes);
    even = _mm256_fmadd_ps(a, a, even);
  }
  return _mm256_add_ps(even, odd);
}

template <BetaKind kind, int kHalf>
void lrn_interleaved_avx2_impl(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                               int64_t channels, int64_t length, const LrnConstants<float>& p) {
  const int64_t half = p.size / 2;
  const __m256 k = _mm256_set1_ps(p.k);
  const __m256 scale = _mm256_set1_ps(p.alpha_over_size);
  for (int64_t i = 0; i < length; ++i) {
    const float* v = in + i * in_stride;
    float* o = out + i * out_stride;
    for (int64_t c = 0; c < channels; c += simd::kFloats) {
      // lanes past C would read past the zero gap: they are masked off
      const int64_t lanes = channels - c;
      const __m256 d = _mm256_fmadd_ps(scale, window_sum_of_squares<kHalf>(v + c, half, lanes), k);
      simd::store(o + c, _mm256_mul_ps(simd::load(v + c, lanes),
                                       inverse_power_avx2<kind>(d, p.denominators_normal)),
                  lanes);
    }
  }
}

template <BetaKind kind>
void lrn_interleaved_avx2(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                          int64_t channels, int64_t length, const LrnConstants<float>& p) {
  if (p.size == 5) {
    lrn_interleaved_avx2_impl<kind, 2>(in, in_stride, out, out_stride, channels, length, p);
  } else {
    lrn_interleaved_avx2_impl<kind, 0>(in, in_stride, out, out_stride, channels, length, p);
  }
}
#endif  // CNNXFER_HAVE_AVX2

// Calls fn(std::integral_constant<BetaKind, kind>) for p.kind, so each beta gets its own loops.
template <typename T, typename Fn>
void with_beta_kind(const LrnConstants<T>& p, Fn fn) {
  switch (p.kind) {
    case BetaKind::kThreeQuarters:
      return fn(std::integral_constant<BetaKind, BetaKind::kThreeQuarters>());
    case BetaKind::kHalf:
      return fn(std::integral_constant<BetaKind, BetaKind::kHalf>());
    case BetaKind::kOne:
      return fn(std::integral_constant<BetaKind, BetaKind::kOne>());
    case BetaKind::kGeneral:
      return fn(std::integral_constant<BetaKind, BetaKind::kGeneral>());
  }
}

// In place over a planar block [C][row_stride], columns [0, length); scratch: C * length values.
template <typename T>
void lrn_planar_block(T* block, int64_t channels, int64_t row_stride, int64_t length, T* scratch,
                      const LrnConstants<T>& p) {
  with_beta_kind(p, [&](auto kind_constant) {
    constexpr BetaKind kind = decltype(kind_constant)::value;
#if defined(CNNXFER_HAVE_AVX2)
    if constexpr (std::is_same_v<T, float> && kind != BetaKind::kGeneral) {
      return lrn_planar_avx2<kind>(block, channels, row_stride, length, scratch, p);
    }
#endif
    lrn_planar<kind>(block, channels, row_stride, length, scratch, p);
  });
}

// Out of place over interleaved pixels whose channels have zero gaps (see lrn_interleaved).
template <typename T>
void lrn_interleaved_block(const T* in, int64_t in_stride, T* out, int64_t out_stride,
                           int64_t channels, int64_t length, const LrnConstants<T>& p) {
  with_beta_kind(p, [&](auto kind_constant) {
    constexpr BetaKind kind = decltype(kind_constant)::value;
#if defined(CNNXFER_HAVE_AVX2)
    if constexpr (std::is_same_v<T, float> && kind != BetaKind::kGeneral) {
      return lrn_interleaved_avx2<kind>(in, in_stride, out, out_stride, channels, length, p);
    }
#endif
    lrn_interleaved<kind>(in, in_stride, out, out_stride, channels, length, p);
  });
}

// ---------------------------------------------------------------- horizontal max-pool

// One planar row; `in` has -inf padding on both sides, so every window is read whole.
template <typename T>
void hpool_planar_row(const T* in, T* out, int64_t out_width, int64_t kernel, int64_t stride) {
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    if (stride == 2) {  // AlexNet's 3x3/2: even lanes of two loads per 8 outputs
      for (int64_t o = 0; o < out_width; o += simd::kFloats) {
        const int64_t n = std::min<int64_t>(simd::kFloats, out_width - o);
        __m256 best = simd::load_even(in + 2 * o, n);
        for (int64_t j = 1; j < kernel; ++j) {
          best = simd::max_nan(best, simd::load_even(in + 2 * o + j, n));
        }
        simd::store(out + o, best, n);
      }
      return;
    }
  }
#endif
  for (int64_t o = 0; o < out_width; ++o) out[o] = in[o * stride];
  for (int64_t j = 1; j < kernel; ++j) {
    for (int64_t o = 0; o < out_width; ++o) out[o] = max_nan(out[o], in[o * stride + j]);
  }
}

// Planar: rows [C][row_stride] -> [C][out_width]. Interleaved: pixels (stride pixel_stride, C
// channels each) -> [out_width][C]. The input has -inf padding, so every window is read whole.
template <typename T>
void hpool_planar(const T* row, int64_t row_stride, T* out, int64_t channels, int64_t out_width,
                  int64_t kernel, int64_t stride) {
  for (int64_t c = 0; c < channels; ++c) {
    hpool_planar_row(row + c * row_stride, out + c * out_width, out_width, kernel, stride);
  }
}

template <typename T>
void hpool_interleaved(const T* row, int64_t pixel_stride, T* out, int64_t channels,
                       int64_t out_width, int64_t kernel, int64_t stride) {
  for (int64_t ow = 0; ow < out_width; ++ow) {
    T* o = out + ow * channels;
    const T* in = row + ow * stride * pixel_stride;
    std::copy(in, in + channels, o);
    for (int64_t j = 1; j < kernel; ++j) max_into(o, in + j * pixel_stride, channels);
  }
}

template <typename scalar_t>
void relu_lrn_maxpool_kernel(const at::Tensor& x, at::Tensor& y, const LrnPoolGeometry& g,
                             const LrnConstants<at::opmath_type<scalar_t>>& lrn, bool pool_first,
                             bool relu, Layout layout) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = g.batch, C = g.channels, H = g.height, W = g.width;
  const int64_t OH = g.out_height, OW = g.out_width;
  const int64_t kh = g.kernel_h, kw = g.kernel_w, sh = g.stride_h, sw = g.stride_w;
  const int64_t pt = g.pad_top, pl = g.pad_left;
  const int64_t half = lrn.size / 2;
  const bool planar = layout == Layout::kPlanar;
  // Columns of a row with its -inf padding: room for the left pad and for the last window.
  const int64_t padded_width = std::max(pl + W, (OW - 1) * sw + kw);
  // Interleaved pixels keep `half` zeros on both sides of their channels (see lrn_interleaved).
  const int64_t gapped_pixel = C + 2 * half;
  const int64_t pooled_values = C * OW;

  // Work units: (image, band of output rows). Split images into bands only when there are too few
  // images to keep every thread busy; a band boundary recomputes kernel_h - stride_h rows.
  const int64_t threads = at::get_num_threads();
  const int64_t bands = std::min<int64_t>(OH, std::max<int64_t>(1, (4 * threads + N - 1) / N));
  const int64_t band_rows = (OH + bands - 1) / bands;

  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* y_data = y.mutable_data_ptr<scalar_t>();
  const int64_t xs_n = x.stride(0), xs_c = x.stride(1), xs_h = x.stride(2), xs_w = x.stride(3);
  const int64_t ys_n = y.stride(0), ys_c = y.stride(1), ys_h = y.stride(2);
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();

  // Every buffer below is private to a thread and carries simd slack at its end (see simd::store).
  constexpr int64_t kSlack = 8;
  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    // planar: [C][padded_width], -inf outside the image columns.
    // interleaved: [padded_width][gapped_pixel], zero gaps, -inf channels outside the image.
    std::vector<acc_t> row;
    // interleaved, LRN first: the normalized row [padded_width][C], -inf outside the image.
    std::vector<acc_t> normalized;
    // interleaved, pool first: the pooled row with zero gaps [OW][gapped_pixel].
    std::vector<acc_t> gapped;
    std::vector<acc_t> scratch;  // planar LRN: squares
    if (planar) {
      row.assign(C * padded_width + kSlack, neg_inf);
      scratch.resize(C * (pool_first ? OW : W) + kSlack);
    } else {
      row.assign(padded_width * gapped_pixel + kSlack, acc_t(0));
      for (int64_t w = 0; w < padded_width; ++w) {
        if (w < pl || w >= pl + W) {
          std::fill_n(row.data() + w * gapped_pixel + half, C, neg_inf);
        }
      }
      if (pool_first) {
        gapped.assign(OW * gapped_pixel + kSlack, acc_t(0));
      } else {
        normalized.assign(padded_width * C + kSlack, neg_inf);
      }
    }
    std::vector<acc_t> ring(kh * pooled_values + kSlack);  // pooled rows, slot h % kh
    std::vector<int64_t> ring_row(kh);
    std::vector<acc_t> acc(pooled_values + kSlack);         // the output row being built

    // Input row h -> ReLU -> (LRN first) -> horizontal pool -> out [C][OW] or [OW][C].
    auto compute_row = [&](int64_t n, int64_t h, acc_t* out) {
      const scalar_t* src = x_data + n * xs_n + h * xs_h;
      if (planar) {
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* channel_row = src + c * xs_c;
          if (h + 1 < H) {
            // The C rows are C separate streams in memory, too many for the hardware prefetcher:
            // ask for the next row's lines while this one is converted.
            const char* next = reinterpret_cast<const char*>(channel_row + xs_h);
            for (int64_t b = 0; b < W * xs_w * int64_t(sizeof(scalar_t)); b += 64) {
              __builtin_prefetch(next + b);
            }
          }
          load_row(channel_row, xs_w, row.data() + c * padded_width + pl, W, relu);
        }
        if (!pool_first) lrn_planar_block(row.data() + pl, C, padded_width, W, scratch.data(), lrn);
        hpool_planar(row.data(), padded_width, out, C, OW, kw, sw);
      } else {
        for (int64_t w = 0; w < W; ++w) {
          load_row(src + w * xs_w, xs_c, row.data() + (pl + w) * gapped_pixel + half, C, relu);
        }
        if (pool_first) {
          hpool_interleaved(row.data() + half, gapped_pixel, out, C, OW, kw, sw);
        } else {
          lrn_interleaved_block(row.data() + pl * gapped_pixel + half, gapped_pixel,
                                normalized.data() + pl * C, C, C, W, lrn);
          hpool_interleaved(normalized.data(), C, out, C, OW, kw, sw);
        }
      }
    };

    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / bands;
      const int64_t oh_begin = (unit % bands) * band_rows;
      const int64_t oh_end = std::min(OH, oh_begin + band_rows);
      std::fill(ring_row.begin(), ring_row.end(), int64_t(-1));
      for (int64_t oh = oh_begin; oh < oh_end; ++oh) {
        const int64_t h_begin = std::max<int64_t>(0, oh * sh - pt);
        const int64_t h_end = std::min<int64_t>(H, oh * sh - pt + kh);
        for (int64_t h = h_begin; h < h_end; ++h) {
          // kernel_h consecutive rows never share a slot, so a window's rows are all resident.
          const int64_t slot = h % kh;
          acc_t* pooled = ring.data() + slot * pooled_values;
          if (ring_row[slot] != h) {
            compute_row(n, h, pooled);
            ring_row[slot] = h;
          }
          if (h == h_begin) {
            std::copy(pooled, pooled + pooled_values, acc.data());
          } else {
            max_into(acc.data(), pooled, pooled_values);
          }
        }
        if (pool_first) {
          if (planar) {
            lrn_planar_block(acc.data(), C, OW, OW, scratch.data(), lrn);
          } else {
            for (int64_t ow = 0; ow < OW; ++ow) {
              std::copy_n(acc.data() + ow * C, C, gapped.data() + ow * gapped_pixel + half);
            }
            lrn_interleaved_block(gapped.data() + half, gapped_pixel, acc.data(), C, C, OW, lrn);
          }
        }
        scalar_t* dst = y_data + n * ys_n + oh * ys_h;
        if (planar) {
          for (int64_t c = 0; c < C; ++c) store_row(acc.data() + c * OW, dst + c * ys_c, OW);
        } else {  // channels_last output: the row [OW][C] is contiguous
          store_row(acc.data(), dst, pooled_values);
        }
      }
    }
  });
}

at::Tensor relu_lrn_maxpool_cpu(const at::Tensor& x, int64_t size, double alpha, double beta,
                                double k, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                c10::IntArrayRef padding, bool ceil_mode, bool pool_first,
                                bool relu) {
  const LrnPoolGeometry g =
      check_relu_lrn_maxpool_args(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode);
  // An NHWC-strided input (and only that) is processed and returned as channels_last.
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  const Layout layout = channels_last ? Layout::kInterleaved : Layout::kPlanar;
  at::Tensor y = at::empty({g.batch, g.channels, g.out_height, g.out_width},
                           x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  const BetaKind kind = beta == 0.75 ? BetaKind::kThreeQuarters
                        : beta == 0.5 ? BetaKind::kHalf
                        : beta == 1.0 ? BetaKind::kOne
                                      : BetaKind::kGeneral;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "relu_lrn_maxpool_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const LrnConstants<acc_t> lrn{size, static_cast<acc_t>(alpha / size),
                                      static_cast<acc_t>(beta), static_cast<acc_t>(k), kind,
                                      k >= static_cast<double>(std::numeric_limits<float>::min())};
        relu_lrn_maxpool_kernel<scalar_t>(x, y, g, lrn, pool_first, relu, layout);
      });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnxfer, CPU, m) {
  m.impl("relu_lrn_maxpool", &relu_lrn_maxpool_cpu);
}

}  // namespace cnnxfer
