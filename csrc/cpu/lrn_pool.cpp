// CPU kernel of cnnxfer::relu_lrn_maxpool.
//
// One pass over the input: the image is walked row by row; each input row is loaded once (with the
// ReLU and the conversion to the accumulation type) into a [W][C] buffer, normalized across
// channels, pooled horizontally, and kept in a ring of kernel_h rows; each output row is the
// element-wise max of the ring rows its window covers. Overlapping windows (3x3 stride 2) thus
// reuse rows instead of recomputing the LRN.
//
// Inside, a row is always [pixel][channel], with size/2 zero channels on both sides of every pixel:
// the LRN then reads each window whole, straight from the values, with vectors along C (a
// multiple of 8 in real networks), and writes out of place. NCHW rows are transposed into that
// layout on load (8x8 blocks) and back on store, so NCHW and channels_last share one fast path.
// Vector code is AVX2+FMA (simd_avx2.h) when the compiler targets it; plain loops otherwise and
// for float64. Sums and powers are done in float for bf16/fp16 inputs and in double for float64.
#include "../lrn_pool.h"
#include "convert.h"
#include "simd_avx2.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace cnnxfer {
namespace {

// max that lets a NaN through, as torch.max_pool2d does.
template <typename T>
inline T max_nan(T a, T b) {
  return (b > a || b != b) ? b : a;
}

// relu that keeps NaN, as torch.relu does.
template <typename T>
inline T relu_nan(T v) {
  return v < T(0) ? T(0) : v;
}

// acc[i] = max_nan(acc[i], values[i]) for i < n.
template <typename T>
void max_into(T* acc, const T* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = max_nan(acc[i], values[i]);
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

#endif  // CNNXFER_HAVE_AVX2

// ---------------------------------------------------------------- rows in and out

// One input row (image n, row h; src points at channel 0, column 0) -> dst[w * pixel_stride + c],
// with the ReLU when relu is set. Any strides; vector paths for channels_last (xs_c == 1) and
// NCHW (xs_w == 1) rows, the latter through 8x8 transposes.
template <typename scalar_t, typename acc_t>
void load_pixels(const scalar_t* src, int64_t xs_c, int64_t xs_w, acc_t* dst, int64_t pixel_stride,
                 int64_t C, int64_t W, bool relu) {
  int64_t c_done = 0, w_done = 0;  // the vector code covers channels [0, c_done) x [0, w_done)
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float>) {
    const __m256 zero = _mm256_setzero_ps();
    if (xs_c == 1) {
      c_done = C - C % simd::kFloats;
      w_done = W;
      for (int64_t w = 0; w < W; ++w) {
        for (int64_t c = 0; c < c_done; c += simd::kFloats) {
          const __m256 v = load8(src + w * xs_w + c);
          _mm256_storeu_ps(dst + w * pixel_stride + c, relu ? _mm256_max_ps(zero, v) : v);
        }
      }
    } else if (xs_w == 1) {
      c_done = C - C % simd::kFloats;
      w_done = W;
      __m256 block[simd::kFloats];
      for (int64_t c = 0; c < c_done; c += simd::kFloats) {
        for (int64_t w = 0; w < W; w += simd::kFloats) {
          const int64_t n = std::min<int64_t>(simd::kFloats, W - w);  // pixels in this block
          for (int64_t i = 0; i < simd::kFloats; ++i) {
            const scalar_t* p = src + (c + i) * xs_c + w;
            const __m256 v = n == simd::kFloats ? load8(p) : load_partial(p, n);
            block[i] = relu ? _mm256_max_ps(zero, v) : v;  // maxps(0, NaN) is NaN
          }
          simd::transpose8x8(block);
          for (int64_t j = 0; j < n; ++j) _mm256_storeu_ps(dst + (w + j) * pixel_stride + c, block[j]);
        }
      }
    }
  }
#endif
  auto load_one = [&](int64_t c, int64_t w) {
    const acc_t v = static_cast<acc_t>(src[c * xs_c + w * xs_w]);
    dst[w * pixel_stride + c] = relu ? relu_nan(v) : v;
  };
  for (int64_t c = 0; c < c_done; ++c) {
    for (int64_t w = w_done; w < W; ++w) load_one(c, w);
  }
  for (int64_t c = c_done; c < C; ++c) {
    for (int64_t w = 0; w < W; ++w) load_one(c, w);
  }
}

// src [OW][C] -> one output row (dst points at channel 0, column 0), any strides; vector paths
// for channels_last (ys_c == 1) and NCHW (ys_w == 1) outputs.
template <typename scalar_t, typename acc_t>
void store_pixels(const acc_t* src, int64_t C, int64_t OW, scalar_t* dst, int64_t ys_c,
                  int64_t ys_w) {
  int64_t c_done = 0, w_done = 0;
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float>) {
    if (ys_c == 1) {
      c_done = C - C % simd::kFloats;
      w_done = OW;
      for (int64_t w = 0; w < OW; ++w) {
        for (int64_t c = 0; c < c_done; c += simd::kFloats) {
          store8(dst + w * ys_w + c, _mm256_loadu_ps(src + w * C + c));
        }
      }
    } else if (ys_w == 1) {
      c_done = C - C % simd::kFloats;
      w_done = OW;
      __m256 block[simd::kFloats];
      alignas(32) scalar_t tail[simd::kFloats];
      for (int64_t c = 0; c < c_done; c += simd::kFloats) {
        for (int64_t w = 0; w < OW; w += simd::kFloats) {
          const int64_t n = std::min<int64_t>(simd::kFloats, OW - w);  // pixels in this block
          for (int64_t j = 0; j < simd::kFloats; ++j) {
            block[j] = j < n ? _mm256_loadu_ps(src + (w + j) * C + c) : _mm256_setzero_ps();
          }
          simd::transpose8x8(block);
          for (int64_t i = 0; i < simd::kFloats; ++i) {
            scalar_t* d = dst + (c + i) * ys_c + w;
            if (n == simd::kFloats) {
              store8(d, block[i]);
            } else {  // the output is shared with other threads: write exactly n values
              store8(tail, block[i]);
              std::copy_n(tail, n, d);
            }
          }
        }
      }
    }
  }
#endif
  for (int64_t c = 0; c < c_done; ++c) {
    for (int64_t w = w_done; w < OW; ++w) dst[c * ys_c + w * ys_w] = static_cast<scalar_t>(src[w * C + c]);
  }
  for (int64_t c = c_done; c < C; ++c) {
    for (int64_t w = 0; w < OW; ++w) dst[c * ys_c + w * ys_w] = static_cast<scalar_t>(src[w * C + c]);
  }
}

// ---------------------------------------------------------------- local response normalization

// How the LRN scales a value by D^-beta. The fast forms multiply by D^-beta, in closed form for the
// betas real networks use (0.75 in AlexNet, CaffeNet, GoogLeNet), which vectorizes where pow()
// does not. They need k^-beta finite and k a normal number (then every D >= k is too); otherwise
// (k tiny or 0) D^-beta can overflow where the reference's x / D^beta does not, and kExactDivide
// computes that quotient itself.
enum class BetaKind { kThreeQuarters, kHalf, kOne, kGeneral, kExactDivide };

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
    static_assert(kind == BetaKind::kGeneral, "kExactDivide divides instead");
    return std::pow(d, -beta);
  }
}

template <typename T>
struct LrnConstants {
  int64_t size;  // odd window length across channels
  T alpha_over_size;
  T beta;
  T k;
  BetaKind kind;
};

template <typename T>
BetaKind choose_beta_kind(T beta, T k) {
  if (!(k >= std::numeric_limits<T>::min()) || !std::isfinite(std::pow(k, -beta))) {
    return BetaKind::kExactDivide;
  }
  if (beta == T(0.75)) return BetaKind::kThreeQuarters;
  if (beta == T(0.5)) return BetaKind::kHalf;
  if (beta == T(1)) return BetaKind::kOne;
  return BetaKind::kGeneral;
}

// out[i * out_stride + c] = in(c) * (k + alpha/size * sum_{|t| <= size/2} in(c + t)^2)^-beta for
// `length` pixels. `in` points at channel 0 of the first pixel; each pixel (stride in_stride)
// carries size/2 zero channels on both sides, so every window is read whole.
template <BetaKind kind, typename T>
void lrn(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t channels,
         int64_t length, const LrnConstants<T>& p) {
  const int64_t half = p.size / 2;
  for (int64_t i = 0; i < length; ++i) {
    const T* v = in + i * in_stride;
    T* o = out + i * out_stride;
    for (int64_t c = 0; c < channels; ++c) {
      T sum = 0;
      for (int64_t t = -half; t <= half; ++t) sum += v[c + t] * v[c + t];
      const T d = p.k + p.alpha_over_size * sum;
      if constexpr (kind == BetaKind::kExactDivide) {
        o[c] = v[c] / std::pow(d, p.beta);
      } else {
        o[c] = v[c] * inverse_power<kind>(d, p.beta);
      }
    }
  }
}

#if defined(CNNXFER_HAVE_AVX2)
// D^-beta on 8 lanes for the closed forms; D >= k is normal (see BetaKind).
template <BetaKind kind>
inline __m256 inverse_power_avx2(__m256 d) {
  if constexpr (kind == BetaKind::kThreeQuarters) {
    return simd::pow_minus_three_quarters(d);
  } else if constexpr (kind == BetaKind::kHalf) {
    return simd::pow_minus_half(d);
  } else {
    static_assert(kind == BetaKind::kOne, "no closed form");
    return _mm256_div_ps(_mm256_set1_ps(1.f), d);
  }
}

// Sum of squares of the window v[t], |t| <= half, on `lanes` lanes, in two independent chains.
// kHalf > 0 fixes the window at compile time (size 5, every AlexNet-family net: kHalf = 2).
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

// Vectors along C; lanes past C would read past the zero gap, so they are masked off.
template <BetaKind kind, int kHalf>
void lrn_avx2(const float* in, int64_t in_stride, float* out, int64_t out_stride, int64_t channels,
              int64_t length, const LrnConstants<float>& p) {
  const int64_t half = p.size / 2;
  const __m256 k = _mm256_set1_ps(p.k);
  const __m256 scale = _mm256_set1_ps(p.alpha_over_size);
  for (int64_t i = 0; i < length; ++i) {
    const float* v = in + i * in_stride;
    float* o = out + i * out_stride;
    for (int64_t c = 0; c < channels; c += simd::kFloats) {
      const int64_t lanes = channels - c;
      const __m256 d = _mm256_fmadd_ps(scale, window_sum_of_squares<kHalf>(v + c, half, lanes), k);
      simd::store(o + c, _mm256_mul_ps(simd::load(v + c, lanes),
                                       inverse_power_avx2<kind>(d)),
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
    case BetaKind::kExactDivide:
      return fn(std::integral_constant<BetaKind, BetaKind::kExactDivide>());
  }
}

template <typename T>
void lrn_pixels(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t channels,
                int64_t length, const LrnConstants<T>& p) {
  with_beta_kind(p, [&](auto kind_constant) {
    constexpr BetaKind kind = decltype(kind_constant)::value;
#if defined(CNNXFER_HAVE_AVX2)
    if constexpr (std::is_same_v<T, float> && kind != BetaKind::kGeneral &&
                  kind != BetaKind::kExactDivide) {
      if (p.size == 5) return lrn_avx2<kind, 2>(in, in_stride, out, out_stride, channels, length, p);
      return lrn_avx2<kind, 0>(in, in_stride, out, out_stride, channels, length, p);
    }
#endif
    lrn<kind>(in, in_stride, out, out_stride, channels, length, p);
  });
}

// ---------------------------------------------------------------- horizontal max-pool

// Pixels (stride pixel_stride, C channels each, -inf outside the image) -> out [out_width][C].
template <typename T>
void hpool(const T* row, int64_t pixel_stride, T* out, int64_t channels, int64_t out_width,
           int64_t kernel, int64_t stride) {
  for (int64_t ow = 0; ow < out_width; ++ow) {
    T* o = out + ow * channels;
    const T* in = row + ow * stride * pixel_stride;
    std::copy(in, in + channels, o);
    for (int64_t j = 1; j < kernel; ++j) max_into(o, in + j * pixel_stride, channels);
  }
}

// ---------------------------------------------------------------- the kernel

template <typename scalar_t>
void relu_lrn_maxpool_kernel(const at::Tensor& x, at::Tensor& y, const LrnPoolGeometry& g,
                             const LrnConstants<at::opmath_type<scalar_t>>& lrn, bool pool_first,
                             bool relu) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = g.batch, C = g.channels, H = g.height, W = g.width;
  const int64_t OH = g.out_height, OW = g.out_width;
  const int64_t kh = g.kernel_h, kw = g.kernel_w, sh = g.stride_h, sw = g.stride_w;
  const int64_t pt = g.pad_top, pl = g.pad_left;
  const int64_t half = lrn.size / 2;
  const int64_t gapped = C + 2 * half;  // a pixel with its zero channels (see lrn)
  // Pixels of a row with its -inf padding: room for the left pad and for the last window.
  const int64_t padded_width = std::max(pl + W, (OW - 1) * sw + kw);
  const int64_t pooled_values = C * OW;

  // Work units: (image, band of output rows). Split images into bands only when there are too few
  // images to keep every thread busy; a band boundary recomputes kernel_h - stride_h rows.
  const int64_t threads = at::get_num_threads();
  const int64_t bands = std::min<int64_t>(OH, std::max<int64_t>(1, (4 * threads + N - 1) / N));
  const int64_t band_rows = (OH + bands - 1) / bands;

  const scalar_t* x_data = x.const_data_ptr<scalar_t>();
  scalar_t* y_data = y.mutable_data_ptr<scalar_t>();
  const int64_t xs_n = x.stride(0), xs_c = x.stride(1), xs_h = x.stride(2), xs_w = x.stride(3);
  const int64_t ys_n = y.stride(0), ys_c = y.stride(1), ys_h = y.stride(2), ys_w = y.stride(3);
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();

  // Every buffer is private to a thread and carries simd slack at its end (see simd::store).
  constexpr int64_t kSlack = 8;
  constexpr int64_t kPrefetchRows = 1;  // a tuning constant: how far ahead rows are prefetched
  at::parallel_for(0, N * bands, 1, [&](int64_t begin, int64_t end) {
    // The input row: [padded_width][gapped], zero gaps, -inf channels outside the image.
    std::vector<acc_t> row(padded_width * gapped + kSlack, acc_t(0));
    acc_t* row_c0 = row.data() + half;
    for (int64_t w = 0; w < padded_width; ++w) {
      if (w < pl || w >= pl + W) std::fill_n(row_c0 + w * gapped, C, neg_inf);
    }
    // LRN first: the normalized row [padded_width][C], -inf outside the image.
    // Pool first: the output row again, with zero gaps [OW][gapped], as the LRN's input.
    std::vector<acc_t> normalized, pooled_gapped;
    if (pool_first) {
      pooled_gapped.assign(OW * gapped + kSlack, acc_t(0));
    } else {
      normalized.assign(padded_width * C + kSlack, neg_inf);
    }
    std::vector<acc_t> ring(kh * pooled_values + kSlack);  // pooled rows [OW][C], slot h % kh
    std::vector<int64_t> ring_row(kh);
    std::vector<acc_t> acc(pooled_values + kSlack);         // the output row being built

    // Input row h -> ReLU -> (LRN first) -> horizontal pool -> out [OW][C].
    auto compute_row = [&](int64_t n, int64_t h, acc_t* out) {
      if (xs_w == 1 && xs_c != 1 && h + kPrefetchRows < H) {
        // An NCHW row is C separate streams in memory, too many for the hardware prefetcher:
        // ask for the next row's lines while this one is processed.
        const int64_t row_bytes = W * int64_t(sizeof(scalar_t));
        for (int64_t c = 0; c < C; ++c) {
          const char* next = reinterpret_cast<const char*>(x_data + n * xs_n + (h + kPrefetchRows) * xs_h + c * xs_c);
          for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(next + b);
        }
      }
      load_pixels(x_data + n * xs_n + h * xs_h, xs_c, xs_w, row_c0 + pl * gapped, gapped, C, W,
                  relu);
      if (pool_first) {
        hpool(static_cast<const acc_t*>(row_c0), gapped, out, C, OW, kw, sw);
      } else {
        lrn_pixels(static_cast<const acc_t*>(row_c0 + pl * gapped), gapped,
                   normalized.data() + pl * C, C, C, W, lrn);
        hpool(static_cast<const acc_t*>(normalized.data()), C, out, C, OW, kw, sw);
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
          acc_t* gapped_c0 = pooled_gapped.data() + half;
          for (int64_t ow = 0; ow < OW; ++ow) {
            std::copy_n(acc.data() + ow * C, C, gapped_c0 + ow * gapped);
          }
          lrn_pixels(static_cast<const acc_t*>(gapped_c0), gapped, acc.data(), C, C, OW, lrn);
        }
        store_pixels(acc.data(), C, OW, y_data + n * ys_n + oh * ys_h, ys_c, ys_w);
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
  at::Tensor y = at::empty({g.batch, g.channels, g.out_height, g.out_width},
                           x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "relu_lrn_maxpool_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const acc_t beta_acc = static_cast<acc_t>(beta), k_acc = static_cast<acc_t>(k);
        const LrnConstants<acc_t> lrn{size, static_cast<acc_t>(alpha / size), beta_acc, k_acc,
                                      choose_beta_kind(beta_acc, k_acc)};
        relu_lrn_maxpool_kernel<scalar_t>(x, y, g, lrn, pool_first, relu);
      });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnxfer, CPU, m) {
  m.impl("relu_lrn_maxpool", &relu_lrn_maxpool_cpu);
}

}  // namespace cnnxfer
