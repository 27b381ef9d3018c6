// CUDA kernel of cnnxfer::relu_lrn_maxpool.
//
// One thread per output element (grid-stride, so any size fits in the grid). Each thread reads its
// pooling window straight from global memory through the input's own strides and normalizes across
// channels on the fly:
//   lrn_pool: max over the window of  relu(x_c) / (k + alpha/size * sum_t relu(x_{c+t})^2)^beta
//   pool_lrn: p_c / (k + alpha/size * sum_t p_{c+t}^2)^beta,  p = max over the window of relu(x)
// Overlapping windows and channel neighbours are re-read instead of staged in shared memory: the
// re-reads hit in L1/L2, and one pass with no synchronisation works for every layout and stride.
// Consecutive threads walk the output's unit-stride axis (W for NCHW, C for channels_last) so
// stores coalesce and neighbouring threads read neighbouring input.
//
// Channels_last tensors with 16-byte channel runs and LRN size 5 take a vectorized variant (see
// relu_lrn_maxpool_vec_thread): 16-byte loads and stores, eight bf16 channels per thread.
//
// Only CUDA headers are included, so this file compiles with plain nvcc where the installed torch
// has no CUDA build headers; lrn_pool_binding.cpp connects it to the dispatcher.
#include "lrn_pool_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace cnnxfer {
namespace {

constexpr int kThreads = 256;
// Beyond this many blocks the grid-stride loop takes over; far more than the GPU keeps resident.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;

// Sums and powers in float for the 16-bit types (their own arithmetic loses the small LRN term
// alpha/size * sum next to k), and in double for double.
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// __host__ too: the vectorized path's thread body also runs on a CPU in a test harness.
#define CNNXFER_HD __host__ __device__ __forceinline__
CNNXFER_HD float to_acc(float v) { return v; }
CNNXFER_HD double to_acc(double v) { return v; }
CNNXFER_HD float to_acc(__half v) { return __half2float(v); }
CNNXFER_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

CNNXFER_HD void store(float* p, float v) { *p = v; }
CNNXFER_HD void store(double* p, double v) { *p = v; }
CNNXFER_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
CNNXFER_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Bit patterns rather than INFINITY: nothing from <cmath> is needed, and fast-math flags cannot
// fold them away.
CNNXFER_HD void set_neg_inf(float& v) {
#ifdef __CUDA_ARCH__
  v = __int_as_float(0xff800000);
#else
  const uint32_t bits = 0xff800000u;
  memcpy(&v, &bits, sizeof v);
#endif
}
__device__ __forceinline__ void set_neg_inf(double& v) {
  v = __longlong_as_double(static_cast<long long>(0xfff0000000000000ULL));
}

// max that lets a NaN through, as torch.max_pool2d does (fmax would drop it).
template <typename T>
CNNXFER_HD T max_nan(T best, T value) {
  return (value > best || value != value) ? value : best;
}

// value / d^beta, as the reference computes it. beta = 0.75 (AlexNet, CaffeNet, GoogLeNet) with a
// normal k avoids pow's log/exp pair: value * d^-3/4, d^-3/4 = rsqrt(d) * sqrt(rsqrt(d)), which
// cannot overflow because d >= k. Otherwise (other betas, k tiny or 0) the exact quotient.
template <bool kThreeQuarters>
CNNXFER_HD float lrn_scale(float value, float d, float beta) {
  if constexpr (kThreeQuarters) {
#ifdef __CUDA_ARCH__
    const float r = rsqrtf(d);
#else
    const float r = 1.0f / sqrtf(d);
#endif
    return value * (r * sqrtf(r));
  } else {
    return value / powf(d, beta);
  }
}
template <bool kThreeQuarters>
__device__ __forceinline__ double lrn_scale(double value, double d, double beta) {
  if constexpr (kThreeQuarters) {
    const double r = rsqrt(d);
    return value * (r * sqrt(r));
  } else {
    return value / pow(d, beta);
  }
}

template <typename acc_t>
struct KernelParams {
  int64_t channels, height, width, out_height, out_width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
  int64_t xs_n, xs_c, xs_h, xs_w;
  int64_t ys_n, ys_c, ys_h, ys_w;
  int64_t half_size;
  acc_t alpha_over_size, beta, k;
  bool relu;
  bool channel_inner;  // consecutive threads take consecutive channels (channels_last output)
};

// index_t only splits the flat output index into (n, c, oh, ow): 32-bit division is several times
// cheaper than 64-bit, and int32 is used only when every flat index fits. Offsets are int64.
template <typename scalar_t, typename index_t, bool kPoolFirst, bool kThreeQuarters>
__global__ void __launch_bounds__(kThreads)
    relu_lrn_maxpool_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                            const KernelParams<typename AccType<scalar_t>::type> p,
                            const int64_t total) {
  using acc_t = typename AccType<scalar_t>::type;
  const index_t C = static_cast<index_t>(p.channels);
  const index_t OH = static_cast<index_t>(p.out_height);
  const index_t OW = static_cast<index_t>(p.out_width);
  acc_t neg_inf;
  set_neg_inf(neg_inf);

  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t linear = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       linear < total; linear += step) {
    index_t i = static_cast<index_t>(linear);
    index_t n, c, oh, ow;
    if (p.channel_inner) {
      c = i % C;
      i /= C;
      ow = i % OW;
      i /= OW;
      oh = i % OH;
      n = i / OH;
    } else {
      ow = i % OW;
      i /= OW;
      oh = i % OH;
      i /= OH;
      c = i % C;
      n = i / C;
    }

    // The window clipped to the image: padding is -inf, which never wins a max, and the geometry
    // guarantees every window keeps at least one real pixel.
    const int64_t h0 = static_cast<int64_t>(oh) * p.stride_h - p.pad_top;
    const int64_t w0 = static_cast<int64_t>(ow) * p.stride_w - p.pad_left;
    const int64_t h_begin = h0 > 0 ? h0 : 0;
    const int64_t h_end = h0 + p.kernel_h < p.height ? h0 + p.kernel_h : p.height;
    const int64_t w_begin = w0 > 0 ? w0 : 0;
    const int64_t w_end = w0 + p.kernel_w < p.width ? w0 + p.kernel_w : p.width;
    // The LRN window clipped to the channels: missing channels contribute zero squares.
    const int64_t c64 = c;
    const int64_t c_lo = c64 - p.half_size > 0 ? c64 - p.half_size : 0;
    const int64_t c_hi =
        c64 + p.half_size < p.channels - 1 ? c64 + p.half_size : p.channels - 1;

    const scalar_t* xn = x + static_cast<int64_t>(n) * p.xs_n;
    acc_t result;
    if constexpr (kPoolFirst) {
      acc_t sumsq = 0, center = 0;
      for (int64_t cc = c_lo; cc <= c_hi; ++cc) {
        const scalar_t* xc = xn + cc * p.xs_c;
        acc_t pooled = neg_inf;
        for (int64_t h = h_begin; h < h_end; ++h) {
          const scalar_t* row = xc + h * p.xs_h;
          for (int64_t w = w_begin; w < w_end; ++w) {
            acc_t v = to_acc(row[w * p.xs_w]);
            if (p.relu) v = v < acc_t(0) ? acc_t(0) : v;
            pooled = max_nan(pooled, v);
          }
        }
        sumsq += pooled * pooled;
        if (cc == c64) center = pooled;
      }
      result = lrn_scale<kThreeQuarters>(center, p.k + p.alpha_over_size * sumsq, p.beta);
    } else {
      result = neg_inf;
      for (int64_t h = h_begin; h < h_end; ++h) {
        const scalar_t* row = xn + h * p.xs_h;
        for (int64_t w = w_begin; w < w_end; ++w) {
          const scalar_t* pixel = row + w * p.xs_w;
          acc_t sumsq = 0, center = 0;
          for (int64_t cc = c_lo; cc <= c_hi; ++cc) {
            acc_t v = to_acc(pixel[cc * p.xs_c]);
            if (p.relu) v = v < acc_t(0) ? acc_t(0) : v;
            sumsq += v * v;
            if (cc == c64) center = v;
          }
          result = max_nan(result, lrn_scale<kThreeQuarters>(
                                       center, p.k + p.alpha_over_size * sumsq, p.beta));
        }
      }
    }
    store(y + static_cast<int64_t>(n) * p.ys_n + c64 * p.ys_c + static_cast<int64_t>(oh) * p.ys_h +
              static_cast<int64_t>(ow) * p.ys_w,
          result);
  }
}

// ---------------------------------------------------------------------------------------------
// The vectorized path (sm_90 tuning): channels_last input and output whose channel runs start on
// 16-byte boundaries, LRN size 5 (AlexNet, CaffeNet, GoogLeNet), float / half / bfloat16. One
// thread computes kVec consecutive channels of one output pixel (16 bytes: 4 floats or 8 halves),
// reading each window pixel as three 16-byte loads (the channels before, its own, the channels
// after, for the LRN window's +-2 neighbours) instead of 5 scalar loads per channel: 27 wide
// loads per 8 bfloat16 outputs instead of 360 narrow ones. Stores are 16 bytes and coalesce
// (consecutive threads take consecutive channel runs).

template <typename scalar_t>
struct Vec {
  static constexpr int kSize = 16 / sizeof(scalar_t);
};

constexpr int kVecHalf = 2;  // LRN size 5

template <typename scalar_t>
CNNXFER_HD void load_vec(const scalar_t* p, float (&out)[Vec<scalar_t>::kSize]) {
#ifdef __CUDA_ARCH__
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
#else
  uint4 raw;
  memcpy(&raw, p, sizeof raw);
#endif
  const scalar_t* e = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<scalar_t>::kSize; ++i) out[i] = to_acc(e[i]);
}

template <typename scalar_t>
CNNXFER_HD void store_vec(scalar_t* p, const float (&v)[Vec<scalar_t>::kSize]) {
  uint4 raw;
  scalar_t* e = reinterpret_cast<scalar_t*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec<scalar_t>::kSize; ++i) store(e + i, v[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// The LRN of the kV channels of `cur`, whose neighbours are the last channels of `prev` and the
// first of `next` (zeros where the tensor has none).
template <int kV, bool kThreeQuarters>
CNNXFER_HD void lrn_vec(const float (&prev)[kV], const float (&cur)[kV],
                                        const float (&next)[kV], float alpha_over_size, float k,
                                        float beta, float (&out)[kV]) {
  float sq[kV + 2 * kVecHalf];
#pragma unroll
  for (int i = 0; i < kVecHalf; ++i) {
    sq[i] = prev[kV - kVecHalf + i] * prev[kV - kVecHalf + i];
    sq[kV + kVecHalf + i] = next[i] * next[i];
  }
#pragma unroll
  for (int i = 0; i < kV; ++i) sq[kVecHalf + i] = cur[i] * cur[i];
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    float sumsq = 0;
#pragma unroll
    for (int t = 0; t <= 2 * kVecHalf; ++t) sumsq += sq[j + t];
    out[j] = lrn_scale<kThreeQuarters>(cur[j], k + alpha_over_size * sumsq, beta);
  }
}

template <int kV>
CNNXFER_HD void relu_vec(float (&v)[kV], bool relu) {
  if (!relu) return;
#pragma unroll
  for (int i = 0; i < kV; ++i) v[i] = v[i] < 0.0f ? 0.0f : v[i];
}

// One thread's work: the kV channels of run `linear` (n, oh, ow, run; run fastest).
template <typename scalar_t, bool kPoolFirst, bool kThreeQuarters>
CNNXFER_HD void relu_lrn_maxpool_vec_thread(const scalar_t* __restrict__ x,
                                            scalar_t* __restrict__ y, const KernelParams<float>& p,
                                            const int64_t linear) {
  constexpr int kV = Vec<scalar_t>::kSize;
  const int64_t runs = p.channels / kV;
  float neg_inf;
  set_neg_inf(neg_inf);
  {
    int64_t i = linear;
    const int64_t run = i % runs;
    i /= runs;
    const int64_t ow = i % p.out_width;
    i /= p.out_width;
    const int64_t oh = i % p.out_height;
    const int64_t n = i / p.out_height;
    const int64_t c0 = run * kV;
    const bool has_prev = run > 0, has_next = run + 1 < runs;

    const int64_t h0 = oh * p.stride_h - p.pad_top;
    const int64_t w0 = ow * p.stride_w - p.pad_left;
    const int64_t h_begin = h0 > 0 ? h0 : 0;
    const int64_t h_end = h0 + p.kernel_h < p.height ? h0 + p.kernel_h : p.height;
    const int64_t w_begin = w0 > 0 ? w0 : 0;
    const int64_t w_end = w0 + p.kernel_w < p.width ? w0 + p.kernel_w : p.width;
    const scalar_t* xn = x + n * p.xs_n + c0;

    float prev[kV], cur[kV], next[kV], out[kV];
    if constexpr (kPoolFirst) {
#pragma unroll
      for (int j = 0; j < kV; ++j) prev[j] = cur[j] = next[j] = neg_inf;
      for (int64_t h = h_begin; h < h_end; ++h) {
        for (int64_t w = w_begin; w < w_end; ++w) {
          const scalar_t* pixel = xn + h * p.xs_h + w * p.xs_w;
          float v[kV];
          load_vec(pixel, v);
#pragma unroll
          for (int j = 0; j < kV; ++j) cur[j] = max_nan(cur[j], v[j]);
          if (has_prev) {
            load_vec(pixel - kV, v);
#pragma unroll
            for (int j = 0; j < kV; ++j) prev[j] = max_nan(prev[j], v[j]);
          }
          if (has_next) {
            load_vec(pixel + kV, v);
#pragma unroll
            for (int j = 0; j < kV; ++j) next[j] = max_nan(next[j], v[j]);
          }
        }
      }
      // relu after the max: they commute (relu is monotone; a NaN stays a NaN)
      relu_vec(prev, p.relu);
      relu_vec(cur, p.relu);
      relu_vec(next, p.relu);
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        if (!has_prev) prev[j] = 0;
        if (!has_next) next[j] = 0;
      }
      lrn_vec<kV, kThreeQuarters>(prev, cur, next, p.alpha_over_size, p.k, p.beta, out);
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j) out[j] = neg_inf;
      for (int64_t h = h_begin; h < h_end; ++h) {
        for (int64_t w = w_begin; w < w_end; ++w) {
          const scalar_t* pixel = xn + h * p.xs_h + w * p.xs_w;
          load_vec(pixel, cur);
          if (has_prev) {
            load_vec(pixel - kV, prev);
          } else {
#pragma unroll
            for (int j = 0; j < kV; ++j) prev[j] = 0;
          }
          if (has_next) {
            load_vec(pixel + kV, next);
          } else {
#pragma unroll
            for (int j = 0; j < kV; ++j) next[j] = 0;
          }
          relu_vec(prev, p.relu);
          relu_vec(cur, p.relu);
          relu_vec(next, p.relu);
          float normalized[kV];
          lrn_vec<kV, kThreeQuarters>(prev, cur, next, p.alpha_over_size, p.k, p.beta,
                                      normalized);
#pragma unroll
          for (int j = 0; j < kV; ++j) out[j] = max_nan(out[j], normalized[j]);
        }
      }
    }
    store_vec(y + n * p.ys_n + oh * p.ys_h + ow * p.ys_w + c0, out);
  }
}

template <typename scalar_t, bool kPoolFirst, bool kThreeQuarters>
__global__ void __launch_bounds__(kThreads)
    relu_lrn_maxpool_vec_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                const KernelParams<float> p, const int64_t total) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t linear = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       linear < total; linear += step) {
    relu_lrn_maxpool_vec_thread<scalar_t, kPoolFirst, kThreeQuarters>(x, y, p, linear);
  }
}

// Whether the vectorized kernel can take this launch (see above).
template <typename scalar_t>
bool vectorizable(const void* x, const void* y, const LrnPoolLaunchGeometry& g) {
  constexpr int64_t kV = Vec<scalar_t>::kSize;
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const auto runs_aligned = [](const int64_t* s) {
    return s[1] == 1 && s[0] % kV == 0 && s[2] % kV == 0 && s[3] % kV == 0;
  };
  return g.size == 2 * kVecHalf + 1 && g.channels % kV == 0 && aligned(x) && aligned(y) &&
         runs_aligned(g.x_stride) && runs_aligned(g.y_stride);
}

template <typename scalar_t, bool kPoolFirst, bool kThreeQuarters>
void enqueue_vec(const scalar_t* x, scalar_t* y, const KernelParams<float>& p, int64_t total,
                 cudaStream_t stream) {
  const int64_t needed = (total + kThreads - 1) / kThreads;
  const int64_t blocks = needed < kMaxBlocks ? needed : kMaxBlocks;
  relu_lrn_maxpool_vec_kernel<scalar_t, kPoolFirst, kThreeQuarters>
      <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(x, y, p, total);
}

// ---------------------------------------------------------------------------------------------

template <typename scalar_t, typename index_t, bool kPoolFirst, bool kThreeQuarters>
void enqueue(const scalar_t* x, scalar_t* y, const KernelParams<typename AccType<scalar_t>::type>& p,
             int64_t total, int64_t blocks, cudaStream_t stream) {
  relu_lrn_maxpool_kernel<scalar_t, index_t, kPoolFirst, kThreeQuarters>
      <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(x, y, p, total);
}

template <typename scalar_t, typename index_t>
void enqueue_variant(bool pool_first, bool three_quarters, const scalar_t* x, scalar_t* y,
                     const KernelParams<typename AccType<scalar_t>::type>& p, int64_t total,
                     int64_t blocks, cudaStream_t stream) {
  if (pool_first) {
    if (three_quarters) {
      enqueue<scalar_t, index_t, true, true>(x, y, p, total, blocks, stream);
    } else {
      enqueue<scalar_t, index_t, true, false>(x, y, p, total, blocks, stream);
    }
  } else {
    if (three_quarters) {
      enqueue<scalar_t, index_t, false, true>(x, y, p, total, blocks, stream);
    } else {
      enqueue<scalar_t, index_t, false, false>(x, y, p, total, blocks, stream);
    }
  }
}

template <typename scalar_t>
void launch_typed(const void* x_raw, void* y_raw, const LrnPoolLaunchGeometry& g, int64_t total,
                  cudaStream_t stream) {
  using acc_t = typename AccType<scalar_t>::type;
  KernelParams<acc_t> p;
  p.channels = g.channels;
  p.height = g.height;
  p.width = g.width;
  p.out_height = g.out_height;
  p.out_width = g.out_width;
  p.kernel_h = g.kernel_h;
  p.kernel_w = g.kernel_w;
  p.stride_h = g.stride_h;
  p.stride_w = g.stride_w;
  p.pad_top = g.pad_top;
  p.pad_left = g.pad_left;
  p.xs_n = g.x_stride[0];
  p.xs_c = g.x_stride[1];
  p.xs_h = g.x_stride[2];
  p.xs_w = g.x_stride[3];
  p.ys_n = g.y_stride[0];
  p.ys_c = g.y_stride[1];
  p.ys_h = g.y_stride[2];
  p.ys_w = g.y_stride[3];
  p.half_size = g.size / 2;
  // alpha / size in double first, as the reference divides before rounding to the tensor's type.
  p.alpha_over_size = static_cast<acc_t>(g.alpha / static_cast<double>(g.size));
  p.beta = static_cast<acc_t>(g.beta);
  p.k = static_cast<acc_t>(g.k);
  p.relu = g.relu;
  // Equal strides happen only when an axis has length 1; then either order coalesces.
  p.channel_inner = g.y_stride[1] < g.y_stride[3];

  const int64_t needed = (total + kThreads - 1) / kThreads;
  const int64_t blocks = needed < kMaxBlocks ? needed : kMaxBlocks;
  // k >= the smallest normal float: every d >= k keeps d^-3/4 finite (see lrn_scale)
  const bool three_quarters = g.beta == 0.75 && g.k >= 1.17549435e-38;
  const scalar_t* x = static_cast<const scalar_t*>(x_raw);
  scalar_t* y = static_cast<scalar_t*>(y_raw);
  if constexpr (!std::is_same_v<scalar_t, double>) {
    if (vectorizable<scalar_t>(x_raw, y_raw, g)) {
      const int64_t runs = total / Vec<scalar_t>::kSize;  // total counts single channels
      if (g.pool_first) {
        if (three_quarters) enqueue_vec<scalar_t, true, true>(x, y, p, runs, stream);
        else enqueue_vec<scalar_t, true, false>(x, y, p, runs, stream);
      } else {
        if (three_quarters) enqueue_vec<scalar_t, false, true>(x, y, p, runs, stream);
        else enqueue_vec<scalar_t, false, false>(x, y, p, runs, stream);
      }
      return;
    }
  }
  if (total <= INT32_MAX) {
    enqueue_variant<scalar_t, int32_t>(g.pool_first, three_quarters, x, y, p, total, blocks,
                                       stream);
  } else {
    enqueue_variant<scalar_t, int64_t>(g.pool_first, three_quarters, x, y, p, total, blocks,
                                       stream);
  }
}

}  // namespace

cudaError_t launch_relu_lrn_maxpool(const void* x, void* y, LrnPoolDType dtype,
                                    const LrnPoolLaunchGeometry& g, cudaStream_t stream) {
  const int64_t total = g.batch * g.channels * g.out_height * g.out_width;
  // A zero-block launch is itself an error, so an empty output must not reach <<<>>>.
  if (total <= 0) return cudaSuccess;
  switch (dtype) {
    case LrnPoolDType::kFloat32:
      launch_typed<float>(x, y, g, total, stream);
      break;
    case LrnPoolDType::kFloat64:
      launch_typed<double>(x, y, g, total, stream);
      break;
    case LrnPoolDType::kFloat16:
      launch_typed<__half>(x, y, g, total, stream);
      break;
    case LrnPoolDType::kBFloat16:
      launch_typed<__nv_bfloat16>(x, y, g, total, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace cnnxfer
