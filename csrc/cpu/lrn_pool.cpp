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

// A block of C channels x L positions, addressed as in[c * channel_stride + i * position_stride].
// Planar blocks ([C][W], NCHW) have position_stride 1; interleaved ones ([W][C], channels_last)
// have channel_stride 1. The LRN input always carries size/2 zero channels before channel 0 and
// after channel C - 1, so every channel window is read whole, straight from the values, and the
// normalization is out of place.
struct BlockStrides {
  int64_t channel;
  int64_t position;
};

// out(c, i) = in(c, i) * (k + alpha/size * sum_{|t| <= size/2} in(c + t, i)^2)^-beta
template <BetaKind kind, typename T>
void lrn(const T* in, BlockStrides in_strides, T* out, BlockStrides out_strides,
         int64_t channels, int64_t length, const LrnConstants<T>& p) {
  const int64_t half = p.size / 2;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t i = 0; i < length; ++i) {
      const T* v = in + c * in_strides.channel + i * in_strides.position;
      T sum = 0;
      for (int64_t t = -half; t <= half; ++t) sum += v[t * in_strides.channel] * v[t * in_strides.channel];
      out[c * out_strides.channel + i * out_strides.position] =
          v[0] * inverse_power<kind>(p.k + p.alpha_over_size * sum, p.beta);
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

// Sum of squares of the window v[t * step], |t| <= half, on `lanes` lanes, in two independent
// chains. kHalf > 0 fixes the window at compile time (size 5, every AlexNet-family net: kHalf 2).
template <int kHalf>
inline __m256 window_sum_of_squares(const float* v, int64_t step, int64_t half, int64_t lanes) {
  const int64_t h = kHalf > 0 ? kHalf : half;
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t t = -h;
  for (; t + 1 <= h; t += 2) {
    const __m256 a = simd::load(v + t * step, lanes), b = simd::load(v + (t + 1) * step, lanes);
    even = _mm256_fmadd_ps(a, a, even);
    odd = _mm256_fmadd_ps(b, b, odd);
  }
  if (t <= h) {
    const __m256 a = simd::load(v + t * step, lanes);
    even = _mm256_fmadd_ps(a, a, even);
  }
  return _mm256_add_ps(even, odd);
}

// Eight lanes along the block's contiguous axis (positions when planar, channels when
// interleaved); the channel window is `step` apart. Lanes past the end are masked off.
template <BetaKind kind, int kHalf>
void lrn_avx2_impl(const float* in, BlockStrides in_strides, float* out, BlockStrides out_strides,
                   int64_t channels, int64_t length, const LrnConstants<float>& p) {
  const int64_t half = p.size / 2;
  const __m256 k = _mm256_set1_ps(p.k);
  const __m256 scale = _mm256_set1_ps(p.alpha_over_size);
  const bool planar = in_strides.position == 1;
  const int64_t outer = planar ? channels : length;
  const int64_t inner = planar ? length : channels;
  const int64_t in_outer = planar ? in_strides.channel : in_strides.position;
  const int64_t out_outer = planar ? out_strides.channel : out_strides.position;
  for (int64_t o = 0; o < outer; ++o) {
    const float* v = in + o * in_outer;
    float* w = out + o * out_outer;
    for (int64_t i = 0; i < inner; i += simd::kFloats) {
      const int64_t lanes = inner - i;
      const __m256 sum = window_sum_of_squares<kHalf>(v + i, in_strides.channel, half, lanes);
      const __m256 d = _mm256_fmadd_ps(scale, sum, k);
      simd::store(w + i, _mm256_mul_ps(simd::load(v + i, lanes),
                                       inverse_power_avx2<kind>(d, p.denominators_normal)),
                  lanes);
    }
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

template <typename T>
void lrn_block(const T* in, BlockStrides in_strides, T* out, BlockStrides out_strides,
               int64_t channels, int64_t length, const LrnConstants<T>& p) {
  with_beta_kind(p, [&](auto kind_constant) {
    constexpr BetaKind kind = decltype(kind_constant)::value;
#if defined(CNNXFER_HAVE_AVX2)
    const bool unit_stride = in_strides.position == 1 || in_strides.channel == 1;
    if constexpr (std::is_same_v<T, float> && kind != BetaKind::kGeneral) {
      if (unit_stride && p.size == 5) {
        return lrn_avx2_impl<kind, 2>(in, in_strides, out, out_strides, channels, length, p);
      }
      if (unit_stride) {
        return lrn_avx2_impl<kind, 0>(in, in_strides, out, out_strides, channels, length, p);
      }
    }
#endif
    lrn<kind>(in, in_strides, out, out_strides, channels, length, p);
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
  const int64_t gapped_channels = C + 2 * half;  // zero channels on both sides (see lrn)
  const bool planar = layout == Layout::kPlanar;
  // Columns of a row with its -inf padding: room for the left pad and for the last window.
  const int64_t padded_width = std::max(pl + W, (OW - 1) * sw + kw);
  const int64_t pooled_values = C * OW;

  // Buffer layouts, as (channel stride, position stride):
  //   row         the ReLU'd input row, zero-gapped channels, -inf outside the image columns
  //   normalized  the LRN of the row (LRN first), -inf outside the image columns
  //   pooled      a horizontally pooled row and the output row being built
  //   gapped      the output row again with zero-gapped channels (pool first, LRN input)
  const BlockStrides row_strides = planar ? BlockStrides{padded_width, 1}
                                          : BlockStrides{1, gapped_channels};
  const BlockStrides normalized_strides = planar ? BlockStrides{padded_width, 1}
                                                 : BlockStrides{1, C};
  const BlockStrides pooled_strides = planar ? BlockStrides{OW, 1} : BlockStrides{1, C};
  const BlockStrides gapped_strides = planar ? BlockStrides{OW, 1}
                                             : BlockStrides{1, gapped_channels};

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

  // Every buffer is private to a thread and carries simd slack at its end (see simd::store).
  constexpr int64_t kSlack = 8;
  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(gapped_channels * padded_width + kSlack, acc_t(0));
    acc_t* row_c0 = row.data() + half * row_strides.channel;
    std::vector<acc_t> normalized;
    std::vector<acc_t> gapped;
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t w = 0; w < padded_width; ++w) {
        if (w < pl || w >= pl + W) row_c0[c * row_strides.channel + w * row_strides.position] = neg_inf;
      }
    }
    if (pool_first) {
      gapped.assign(gapped_channels * OW + kSlack, acc_t(0));
    } else {
      normalized.assign(C * padded_width + kSlack, neg_inf);
    }
    std::vector<acc_t> ring(kh * pooled_values + kSlack);  // pooled rows, slot h % kh
    std::vector<int64_t> ring_row(kh);
    std::vector<acc_t> acc(pooled_values + kSlack);         // the output row being built

    // Input row h -> ReLU -> (LRN first) -> horizontal pool -> out (pooled layout).
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
          load_row(channel_row, xs_w, row_c0 + c * row_strides.channel + pl, W, relu);
        }
      } else {
        for (int64_t w = 0; w < W; ++w) {
          load_row(src + w * xs_w, xs_c, row_c0 + (pl + w) * row_strides.position, C, relu);
        }
      }
      const acc_t* pool_input = row_c0;
      BlockStrides pool_input_strides = row_strides;
      if (!pool_first) {
        lrn_block(row_c0 + pl * row_strides.position, row_strides,
                  normalized.data() + pl * normalized_strides.position, normalized_strides, C, W,
                  lrn);
        pool_input = normalized.data();
        pool_input_strides = normalized_strides;
      }
      if (planar) {
        hpool_planar(pool_input, pool_input_strides.channel, out, C, OW, kw, sw);
      } else {
        hpool_interleaved(pool_input, pool_input_strides.position, out, C, OW, kw, sw);
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
          acc_t* gapped_c0 = gapped.data() + half * gapped_strides.channel;
          if (planar) {
            std::copy(acc.data(), acc.data() + pooled_values, gapped_c0);
          } else {
            for (int64_t ow = 0; ow < OW; ++ow) {
              std::copy_n(acc.data() + ow * C, C, gapped_c0 + ow * gapped_channels);
            }
          }
          lrn_block(static_cast<const acc_t*>(gapped_c0), gapped_strides, acc.data(),
                    pooled_strides, C, OW, lrn);
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
