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
#include "simd_avx512.h"

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

// acc[i] = max_nan(acc[i], values[i]) for i < n.
template <typename T>
void max_into(T* acc, const T* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = max_nan(acc[i], values[i]);
}

#if defined(__AVX512F__)
template <>
void max_into<float>(float* acc, const float* values, int64_t n) {
  for (int64_t i = 0; i < n; i += simd::kFloats) {
    const __mmask16 lanes = simd::first_lanes(n - i);
    const __m512 a = _mm512_maskz_loadu_ps(lanes, acc + i);
    const __m512 v = _mm512_maskz_loadu_ps(lanes, values + i);
    _mm512_mask_storeu_ps(acc + i, lanes, simd::max_nan(a, v));
  }
}
#endif

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
// scratch needs (C + 1) * length values.
template <BetaKind kind, typename T>
void lrn_planar_impl(T* block, int64_t channels, int64_t row_stride, int64_t length, T* scratch,
                     const LrnConstants<T>& p) {
  T* squares = scratch;                      // [C][length]
  T* sums = scratch + channels * length;     // [length]
  for (int64_t c = 0; c < channels; ++c) {
    const T* v = block + c * row_stride;
    T* s = squares + c * length;
    for (int64_t i = 0; i < length; ++i) s[i] = v[i] * v[i];
  }
  const int64_t half = p.size / 2;
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t first = std::max<int64_t>(0, c - half);
    const int64_t last = std::min<int64_t>(channels - 1, c + half);
    std::fill(sums, sums + length, T(0));
    for (int64_t j = first; j <= last; ++j) {
      const T* s = squares + j * length;
#pragma omp simd
      for (int64_t i = 0; i < length; ++i) sums[i] += s[i];
    }
    T* v = block + c * row_stride;
#pragma omp simd
    for (int64_t i = 0; i < length; ++i) {
      v[i] *= inverse_power<kind>(p.k + p.alpha_over_size * sums[i], p.beta);
    }
  }
}

// LRN across the C values of each of `length` interleaved pixels (pixel stride = C).
// scratch needs 2 * C + size values.
template <BetaKind kind, typename T>
void lrn_interleaved_impl(T* block, int64_t channels, int64_t length, T* scratch,
                          const LrnConstants<T>& p) {
  const int64_t half = p.size / 2;
  T* padded_squares = scratch;                         // [half zeros][C][half zeros]
  T* sums = scratch + channels + 2 * half;             // [C]
  std::fill(padded_squares, padded_squares + channels + 2 * half, T(0));
  for (int64_t i = 0; i < length; ++i) {
    T* v = block + i * channels;
    for (int64_t c = 0; c < channels; ++c) padded_squares[half + c] = v[c] * v[c];
    std::fill(sums, sums + channels, T(0));
    for (int64_t t = 0; t < p.size; ++t) {
      const T* s = padded_squares + t;
      for (int64_t c = 0; c < channels; ++c) sums[c] += s[c];
    }
    for (int64_t c = 0; c < channels; ++c) {
      v[c] *= inverse_power<kind>(p.k + p.alpha_over_size * sums[c], p.beta);
    }
  }
}

#if defined(__AVX512F__)
// D^-beta on 16 lanes for the betas with closed forms (kind != kGeneral).
template <BetaKind kind>
inline __m512 inverse_power_avx512(__m512 d, bool denominators_normal) {
  if constexpr (kind == BetaKind::kThreeQuarters) {
    if (denominators_normal) return simd::pow_minus_three_quarters(d);
    const __m512 r = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_sqrt_ps(d));
    return _mm512_mul_ps(r, _mm512_sqrt_ps(r));
  } else if constexpr (kind == BetaKind::kHalf) {
    if (denominators_normal) return simd::rsqrt(d);
    return _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_sqrt_ps(d));
  } else {
    return _mm512_div_ps(_mm512_set1_ps(1.f), d);
  }
}

template <BetaKind kind>
void lrn_planar_avx512(float* block, int64_t channels, int64_t row_stride, int64_t length,
                       float* scratch, const LrnConstants<float>& p) {
  float* squares = scratch;  // [C][length]
  for (int64_t c = 0; c < channels; ++c) {
    const float* v = block + c * row_stride;
    float* sq = squares + c * length;
    for (int64_t i = 0; i < length; i += simd::kFloats) {
      const __mmask16 lanes = simd::first_lanes(length - i);
      const __m512 x = _mm512_maskz_loadu_ps(lanes, v + i);
      _mm512_mask_storeu_ps(sq + i, lanes, _mm512_mul_ps(x, x));
    }
  }
  const int64_t half = p.size / 2;
  const __m512 k = _mm512_set1_ps(p.k);
  const __m512 scale = _mm512_set1_ps(p.alpha_over_size);
  for (int64_t c = 0; c < channels; ++c) {
    const int64_t first = std::max<int64_t>(0, c - half);
    const int64_t last = std::min<int64_t>(channels - 1, c + half);
    float* v = block + c * row_stride;
    for (int64_t i = 0; i < length; i += simd::kFloats) {
      const __mmask16 lanes = simd::first_lanes(length - i);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j = first; j <= last; ++j) {
        sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(lanes, squares + j * length + i));
      }
      // masked-off lanes hold d = k: harmless for every form of the power
      const __m512 d = _mm512_fmadd_ps(scale, sum, k);
      const __m512 x = _mm512_maskz_loadu_ps(lanes, v + i);
      _mm512_mask_storeu_ps(v + i, lanes,
                            _mm512_mul_ps(x, inverse_power_avx512<kind>(d, p.denominators_normal)));
    }
  }
}

template <BetaKind kind>
void lrn_interleaved_avx512(float* block, int64_t channels, int64_t length, float* scratch,
                            const LrnConstants<float>& p) {
  const int64_t half = p.size / 2;
  float* padded_squares = scratch;  // [half zeros][C][half zeros]
  std::fill(padded_squares, padded_squares + channels + 2 * half, 0.f);
  const __m512 k = _mm512_set1_ps(p.k);
  const __m512 scale = _mm512_set1_ps(p.alpha_over_size);
  for (int64_t i = 0; i < length; ++i) {
    float* v = block + i * channels;
    for (int64_t c = 0; c < channels; c += simd::kFloats) {
      const __mmask16 lanes = simd::first_lanes(channels - c);
      const __m512 x = _mm512_maskz_loadu_ps(lanes, v + c);
      _mm512_mask_storeu_ps(padded_squares + half + c, lanes, _mm512_mul_ps(x, x));
    }
    for (int64_t c = 0; c < channels; c += simd::kFloats) {
      const __mmask16 lanes = simd::first_lanes(channels - c);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t t = 0; t < p.size; ++t) {
        sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(lanes, padded_squares + c + t));
      }
      const __m512 d = _mm512_fmadd_ps(scale, sum, k);
      const __m512 x = _mm512_maskz_loadu_ps(lanes, v + c);
      _mm512_mask_storeu_ps(v + c, lanes,
                            _mm512_mul_ps(x, inverse_power_avx512<kind>(d, p.denominators_normal)));
    }
  }
}
#endif  // __AVX512F__

template <BetaKind kind, typename T>
void lrn_block_kind(Layout layout, T* block, int64_t channels, int64_t row_stride, int64_t length,
                    T* scratch, const LrnConstants<T>& p) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && kind != BetaKind::kGeneral) {
    if (layout == Layout::kPlanar) {
      lrn_planar_avx512<kind>(block, channels, row_stride, length, scratch, p);
    } else {
      lrn_interleaved_avx512<kind>(block, channels, length, scratch, p);
    }
    return;
  }
#endif
  if (layout == Layout::kPlanar) {
    lrn_planar_impl<kind>(block, channels, row_stride, length, scratch, p);
  } else {
    lrn_interleaved_impl<kind>(block, channels, length, scratch, p);
  }
}

template <typename T>
void lrn_block(Layout layout, T* block, int64_t channels, int64_t row_stride, int64_t length,
               T* scratch, const LrnConstants<T>& p) {
  switch (p.kind) {
    case BetaKind::kThreeQuarters:
      return lrn_block_kind<BetaKind::kThreeQuarters>(layout, block, channels, row_stride, length,
                                                      scratch, p);
    case BetaKind::kHalf:
      return lrn_block_kind<BetaKind::kHalf>(layout, block, channels, row_stride, length, scratch,
                                             p);
    case BetaKind::kOne:
      return lrn_block_kind<BetaKind::kOne>(layout, block, channels, row_stride, length, scratch,
                                            p);
    case BetaKind::kGeneral:
      return lrn_block_kind<BetaKind::kGeneral>(layout, block, channels, row_stride, length,
                                                scratch, p);
  }
}

// Horizontal max-pool of one planar row: in has -inf padding on both sides, so every window is
// read whole. The stride is a template parameter for the common strides (1, 2) so the strided
// loads vectorize; 0 means "read it from `stride`".
template <int kStride, typename T>
void hpool_planar_row(const T* in, T* out, int64_t out_width, int64_t kernel, int64_t stride) {
  const int64_t s = kStride > 0 ? kStride : stride;
  for (int64_t o = 0; o < out_width; ++o) out[o] = in[o * s];
  for (int64_t j = 1; j < kernel; ++j) {
    for (int64_t o = 0; o < out_width; ++o) out[o] = max_nan(out[o], in[o * s + j]);
  }
}

#if defined(__AVX512F__)
// Stride-2 windows over 16 outputs at a time: the even lanes of two loads (permutex2var).
void hpool_planar_row_stride2_avx512(const float* in, float* out, int64_t out_width,
                                     int64_t kernel) {
  for (int64_t o = 0; o < out_width; o += simd::kFloats) {
    const int64_t n = std::min<int64_t>(simd::kFloats, out_width - o);
    __m512 best = simd::load_even(in + 2 * o, n);
    for (int64_t j = 1; j < kernel; ++j) best = simd::max_nan(best, simd::load_even(in + 2 * o + j, n));
    _mm512_mask_storeu_ps(out + o, simd::first_lanes(n), best);
  }
}
#endif

template <typename T>
void hpool(Layout layout, const T* row, int64_t padded_width, T* out, int64_t channels,
           int64_t out_width, int64_t kernel, int64_t stride) {
  if (layout == Layout::kPlanar) {
    for (int64_t c = 0; c < channels; ++c) {
      const T* in = row + c * padded_width;
      T* o = out + c * out_width;
      if (stride == 2) {
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
          hpool_planar_row_stride2_avx512(in, o, out_width, kernel);
          continue;
        }
#endif
        hpool_planar_row<2>(in, o, out_width, kernel, stride);
      } else if (stride == 1) {
        hpool_planar_row<1>(in, o, out_width, kernel, stride);
      } else {
        hpool_planar_row<0>(in, o, out_width, kernel, stride);
      }
    }
  } else {
    for (int64_t ow = 0; ow < out_width; ++ow) {
      T* o = out + ow * channels;
      const T* in = row + ow * stride * channels;
      std::copy(in, in + channels, o);
      for (int64_t j = 1; j < kernel; ++j) {
        const T* v = in + j * channels;
        max_into(o, v, channels);
      }
    }
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
  // Width of a row with its -inf padding: room for the left pad and for the last window.
  const int64_t padded_width = std::max(pl + W, (OW - 1) * sw + kw);
  const int64_t row_values = C * padded_width;
  const int64_t pooled_values = C * OW;
  const int64_t lrn_length = pool_first ? OW : W;
  const int64_t scratch_values =
      std::max((C + 1) * lrn_length, 2 * C + lrn.size);

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

  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(row_values, neg_inf);  // padding columns stay -inf
    std::vector<acc_t> ring(kh * pooled_values);
    std::vector<int64_t> ring_row(kh);
    std::vector<acc_t> acc(pooled_values);
    std::vector<acc_t> scratch(scratch_values);

    // Loads input row h with the ReLU into `row`, normalizes it (LRN first order) and pools it
    // horizontally into `out`.
    auto compute_row = [&](int64_t n, int64_t h, acc_t* out) {
      const scalar_t* src = x_data + n * xs_n + h * xs_h;
      if (layout == Layout::kPlanar) {
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* s = src + c * xs_c;
          acc_t* d = row.data() + c * padded_width + pl;
          if (xs_w == 1) {
            for (int64_t w = 0; w < W; ++w) d[w] = static_cast<acc_t>(s[w]);
          } else {
            for (int64_t w = 0; w < W; ++w) d[w] = static_cast<acc_t>(s[w * xs_w]);
          }
          if (relu) {
            for (int64_t w = 0; w < W; ++w) d[w] = d[w] < acc_t(0) ? acc_t(0) : d[w];
          }
        }
      } else {
        for (int64_t w = 0; w < W; ++w) {
          const scalar_t* s = src + w * xs_w;
          acc_t* d = row.data() + (pl + w) * C;
          if (xs_c == 1) {
            for (int64_t c = 0; c < C; ++c) d[c] = static_cast<acc_t>(s[c]);
          } else {
            for (int64_t c = 0; c < C; ++c) d[c] = static_cast<acc_t>(s[c * xs_c]);
          }
          if (relu) {
            for (int64_t c = 0; c < C; ++c) d[c] = d[c] < acc_t(0) ? acc_t(0) : d[c];
          }
        }
      }
      if (!pool_first) {
        acc_t* valid = layout == Layout::kPlanar ? row.data() + pl : row.data() + pl * C;
        lrn_block(layout, valid, C, padded_width, W, scratch.data(), lrn);
      }
      hpool(layout, row.data(), padded_width, out, C, OW, kw, sw);
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
        if (pool_first) lrn_block(layout, acc.data(), C, OW, OW, scratch.data(), lrn);
        scalar_t* dst = y_data + n * ys_n + oh * ys_h;
        if (layout == Layout::kPlanar) {
          for (int64_t c = 0; c < C; ++c) {
            scalar_t* d = dst + c * ys_c;
            const acc_t* a = acc.data() + c * OW;
            for (int64_t ow = 0; ow < OW; ++ow) d[ow] = static_cast<scalar_t>(a[ow]);
          }
        } else {  // channels_last output: the row [OW][C] is contiguous
          for (int64_t i = 0; i < pooled_values; ++i) dst[i] = static_cast<scalar_t>(acc[i]);
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
