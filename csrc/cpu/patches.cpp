// CPU kernel of cnnxfer::extract_patches.
//
// Each box is one work item (at::parallel_for over boxes). The resize is separable: a horizontal
// pass turns every crop row the patch needs into `size` resampled values per channel (reading the
// image in its own dtype and strides: no float copy of the image), then a vertical pass combines
// those rows for each output row, applies (value - mean) / std as one multiply-add, casts, and
// writes each output element once. Taps and weights come from resize_taps.h, the formulas of
// F.interpolate(mode="bilinear", align_corners=False[, antialias=True]).
#include "../patches.h"
#include "../resize_taps.h"
#include "convert.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace cnnxfer {
namespace {

// The taps of every output coordinate along one axis of one box, weights as float/double.
template <typename acc_t>
struct AxisTaps {
  int64_t max_taps = 0;
  std::vector<int64_t> first;   // [size] first input index, relative to the crop
  std::vector<int64_t> count;   // [size]
  std::vector<acc_t> weights;   // [size][max_taps]
  // When no coordinate has more than two taps (every upscale, and plain bilinear), the same taps
  // as two index/weight pairs, so the hot loop has no inner loop: second = first, weight 0 when
  // a coordinate has a single tap.
  bool two_taps = false;
  std::vector<int32_t> index0, index1;  // int32: 8-wide gathers where 64-bit indices give 4
  std::vector<acc_t> weight0, weight1;
  // Blocks of 8 outputs whose taps all fall in the 8 samples from block_base (every block of an
  // upscale): one load and two in-register permutes instead of two gathers. block_base < 0 marks
  // a block that needs the general loop.
  std::vector<int32_t> block_base;

  void compute(int64_t in, int64_t size, bool antialias) {
    max_taps = max_resize_taps(in, size, antialias);
    first.resize(size);
    count.resize(size);
    weights.assign(size * max_taps, acc_t(0));
    std::vector<double> w(max_taps);
    int64_t most = 0;
    for (int64_t i = 0; i < size; ++i) {
      // weights in double, as the float64 reference computes them, then rounded once
      count[i] = resize_taps<double>(i, in, size, antialias, &first[i], w.data());
      for (int64_t t = 0; t < count[i]; ++t) weights[i * max_taps + t] = static_cast<acc_t>(w[t]);
      most = std::max(most, count[i]);
    }
    two_taps = most <= 2;
    if (two_taps) {
      // padded to whole blocks of 8 for vector loads (the padding is never used)
      const int64_t padded = (size + 7) / 8 * 8;
      index0.assign(padded, 0);
      index1.assign(padded, 0);
      weight0.assign(padded, acc_t(0));
      weight1.assign(padded, acc_t(0));
      for (int64_t i = 0; i < size; ++i) {
        const acc_t* wi = weights.data() + i * max_taps;
        index0[i] = static_cast<int32_t>(first[i]);
        index1[i] = static_cast<int32_t>(count[i] == 2 ? first[i] + 1 : first[i]);
        weight0[i] = wi[0];
        weight1[i] = count[i] == 2 ? wi[1] : acc_t(0);
      }
      const int64_t blocks = (size + 7) / 8;
      block_base.assign(blocks, -1);
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t lo = block * 8, hi = std::min<int64_t>(size, lo + 8) - 1;
        if (index1[hi] - index0[lo] < 8) block_base[block] = index0[lo];
      }
    }
  }
};

// dst[j] = w0[j] * row[i0[j]] + w1[j] * row[i1[j]] for j < size. row has 8 readable values past
// its end and dst 8 writable ones (both are this thread's buffers).
template <typename acc_t>
void two_tap_row(const AxisTaps<acc_t>& taps, const acc_t* row, acc_t* dst, int64_t size) {
  const int32_t* i0 = taps.index0.data();
  const int32_t* i1 = taps.index1.data();
  const acc_t* w0 = taps.weight0.data();
  const acc_t* w1 = taps.weight1.data();
  int64_t j = 0;
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float>) {
    for (; j < size; j += 8) {
      const int32_t base = taps.block_base[j / 8];
      const int64_t n = std::min<int64_t>(8, size - j);
      if (base < 0) {
        for (int64_t q = j; q < j + n; ++q) dst[q] = w0[q] * row[i0[q]] + w1[q] * row[i1[q]];
        continue;
      }
      const __m256 samples = _mm256_loadu_ps(row + base);
      const __m256i offset = _mm256_set1_epi32(base);
      const __m256i lanes0 = _mm256_sub_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i0 + j)), offset);
      const __m256i lanes1 = _mm256_sub_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(i1 + j)), offset);
      const __m256 a = _mm256_permutevar8x32_ps(samples, lanes0);
      const __m256 b = _mm256_permutevar8x32_ps(samples, lanes1);
      const __m256 value = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), b,
                                           _mm256_mul_ps(_mm256_loadu_ps(w0 + j), a));
      simd::store(dst + j, value, n);
    }
    return;
  }
#endif
  for (; j < size; ++j) dst[j] = w0[j] * row[i0[j]] + w1[j] * row[i1[j]];
}

// Writes planes[c][j] (c < 3, j < n) to dst[j * 3 + c], converted: the channels_last row of an RGB
// patch. AVX2 interleaves 8 pixels (24 values) at a time: output vector m lane L holds pixel
// (8m + L) / 3, channel (8m + L) % 3, so one permute index per m serves all three channels.
template <typename out_t, typename acc_t>
void interleave3(const acc_t* r, const acc_t* g, const acc_t* b, out_t* dst, int64_t n) {
  int64_t j = 0;
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float> && !std::is_same_v<out_t, double>) {
    const __m256i pixel[3] = {_mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2),
                              _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5),
                              _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7)};
    // blend masks: lanes whose channel is g (imm bit set) and b, for each m
    for (; j + simd::kFloats <= n; j += simd::kFloats) {
      const __m256 vr = _mm256_loadu_ps(r + j), vg = _mm256_loadu_ps(g + j),
                   vb = _mm256_loadu_ps(b + j);
      out_t* o = dst + 3 * j;
      {
        const __m256 pr = _mm256_permutevar8x32_ps(vr, pixel[0]);
        const __m256 pg = _mm256_permutevar8x32_ps(vg, pixel[0]);
        const __m256 pb = _mm256_permutevar8x32_ps(vb, pixel[0]);
        // channels by lane: r g b r g b r g
        store8(o, _mm256_blend_ps(_mm256_blend_ps(pr, pg, 0b10010010), pb, 0b00100100));
      }
      {
        const __m256 pr = _mm256_permutevar8x32_ps(vr, pixel[1]);
        const __m256 pg = _mm256_permutevar8x32_ps(vg, pixel[1]);
        const __m256 pb = _mm256_permutevar8x32_ps(vb, pixel[1]);
        // b r g b r g b r
        store8(o + 8, _mm256_blend_ps(_mm256_blend_ps(pr, pg, 0b00100100), pb, 0b01001001));
      }
      {
        const __m256 pr = _mm256_permutevar8x32_ps(vr, pixel[2]);
        const __m256 pg = _mm256_permutevar8x32_ps(vg, pixel[2]);
        const __m256 pb = _mm256_permutevar8x32_ps(vb, pixel[2]);
        // g b r g b r g b
        store8(o + 16, _mm256_blend_ps(_mm256_blend_ps(pr, pg, 0b01001001), pb, 0b10010010));
      }
    }
  }
#endif
  for (; j < n; ++j) {
    dst[3 * j] = static_cast<out_t>(r[j]);
    dst[3 * j + 1] = static_cast<out_t>(g[j]);
    dst[3 * j + 2] = static_cast<out_t>(b[j]);
  }
}

// dst[j] = out_t(a0 * r0[j] + a1 * r1[j] + b): a two-tap vertical step with the normalization
// folded into the weights (a = weight / std), converted and stored in one pass.
template <typename out_t, typename acc_t>
void two_tap_column(const acc_t* r0, const acc_t* r1, acc_t a0, acc_t a1, acc_t b, out_t* dst,
                    int64_t n) {
  int64_t j = 0;
#if defined(CNNXFER_HAVE_AVX2)
  if constexpr (std::is_same_v<acc_t, float> && !std::is_same_v<out_t, double>) {
    const __m256 va0 = _mm256_set1_ps(a0), va1 = _mm256_set1_ps(a1), vb = _mm256_set1_ps(b);
    for (; j + simd::kFloats <= n; j += simd::kFloats) {
      const __m256 v = _mm256_fmadd_ps(va1, _mm256_loadu_ps(r1 + j),
                                       _mm256_fmadd_ps(va0, _mm256_loadu_ps(r0 + j), vb));
      store8(dst + j, v);
    }
  }
#endif
  for (; j < n; ++j) dst[j] = static_cast<out_t>(a1 * r1[j] + (a0 * r0[j] + b));
}

template <typename image_t, typename out_t>
void extract_patches_kernel(const at::Tensor& images, const at::Tensor& boxes, at::Tensor& out,
                            int64_t size, const std::vector<double>& scale,
                            const std::vector<double>& shift, bool antialias,
                            bool reverse_channels) {
  using acc_t = std::conditional_t<std::is_same_v<image_t, double>, double, float>;
  const int64_t K = boxes.size(0), C = images.size(1);
  const int64_t is_n = images.stride(0), is_c = images.stride(1), is_h = images.stride(2),
                is_w = images.stride(3);
  // The output is ours: contiguous (W stride 1) or channels_last (C stride 1).
  const int64_t os_k = out.stride(0), os_c = out.stride(1), os_h = out.stride(2);
  const image_t* image_data = images.const_data_ptr<image_t>();
  out_t* out_data = out.mutable_data_ptr<out_t>();
  const at::Tensor box_table = boxes.contiguous();
  const int64_t* box_data = box_table.const_data_ptr<int64_t>();
  std::vector<acc_t> channel_scale(C), channel_shift(C);
  for (int64_t c = 0; c < C; ++c) {
    channel_scale[c] = static_cast<acc_t>(scale[c]);
    channel_shift[c] = static_cast<acc_t>(shift[c]);
  }

  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> across, down;  // horizontal and vertical taps
    std::vector<acc_t> rows;       // [needed crop rows][C][size]: the horizontal pass
    std::vector<acc_t> source;     // one crop row of one channel
    std::vector<acc_t> line(size); // one output row of one channel
    std::vector<acc_t> pixels(size * C);  // one channels_last output row
    std::vector<acc_t> planes(3 * size);  // the same for RGB, one plane per channel
    for (int64_t k = begin; k < end; ++k) {
      const int64_t* box = box_data + 5 * k;
      const int64_t n = box[0], x0 = box[1], y0 = box[2];
      const int64_t crop_w = box[3] - x0, crop_h = box[4] - y0;
      across.compute(crop_w, size, antialias);
      down.compute(crop_h, size, antialias);
      // Output rows read crop rows [row_lo, row_hi): taps move forward with the output row.
      const int64_t row_lo = down.first[0];
      const int64_t row_hi = down.first[size - 1] + down.count[size - 1];
      rows.resize((row_hi - row_lo) * C * size + 8);  // + simd slack (see two_tap_row)

      const image_t* crop = image_data + n * is_n + y0 * is_h + x0 * is_w;
      source.resize(crop_w + 8);  // + simd slack (see two_tap_row)
      for (int64_t r = row_lo; r < row_hi; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          // The crop row in the accumulation type once, then the taps read it from cache.
          const image_t* src = crop + c * is_c + r * is_h;
          acc_t* s_row = source.data();
          if (is_w == 1) {
#pragma omp simd
            for (int64_t x = 0; x < crop_w; ++x) s_row[x] = static_cast<acc_t>(src[x]);
          } else {
            for (int64_t x = 0; x < crop_w; ++x) s_row[x] = static_cast<acc_t>(src[x * is_w]);
          }
          acc_t* dst = rows.data() + ((r - row_lo) * C + c) * size;
          if (across.two_taps) {
            two_tap_row(across, static_cast<const acc_t*>(s_row), dst, size);
          } else {
            for (int64_t j = 0; j < size; ++j) {
              const acc_t* p = s_row + across.first[j];
              const acc_t* w = across.weights.data() + j * across.max_taps;
              acc_t sum = 0;
              for (int64_t t = 0; t < across.count[j]; ++t) sum += w[t] * p[t];
              dst[j] = sum;
            }
          }
        }
      }

      out_t* patch = out_data + k * os_k;
      // channels_last output: a row is [size][C] in memory; it is built here and stored whole
      const bool interleaved = os_c == 1;
      for (int64_t i = 0; i < size; ++i) {
        const acc_t* w = down.weights.data() + i * down.max_taps;
        const int64_t taps = down.count[i];
        for (int64_t c_out = 0; c_out < C; ++c_out) {
          const int64_t c_in = reverse_channels ? C - 1 - c_out : c_out;
          const acc_t* first_row = rows.data() + ((down.first[i] - row_lo) * C + c_in) * size;
          const int64_t row_step = C * size;
          const acc_t s = channel_scale[c_out], b = channel_shift[c_out];
          if (taps <= 2 && (!interleaved || C == 3)) {  // every upscale: one fused pass
            const acc_t* second_row = taps == 2 ? first_row + row_step : first_row;
            const acc_t a0 = w[0] * s, a1 = taps == 2 ? w[1] * s : acc_t(0);
            if (interleaved) {  // into the RGB planes, interleaved below
              two_tap_column(first_row, second_row, a0, a1, b, planes.data() + c_out * size, size);
            } else {
              two_tap_column(first_row, second_row, a0, a1, b, patch + c_out * os_c + i * os_h,
                             size);
            }
            continue;
          }
          acc_t* l = line.data();
#pragma omp simd
          for (int64_t j = 0; j < size; ++j) l[j] = w[0] * first_row[j];
          for (int64_t t = 1; t < taps; ++t) {
            const acc_t* row = first_row + t * row_step;
            const acc_t wt = w[t];
#pragma omp simd
            for (int64_t j = 0; j < size; ++j) l[j] += wt * row[j];
          }
#pragma omp simd
          for (int64_t j = 0; j < size; ++j) l[j] = l[j] * s + b;
          if (!interleaved) {
            store_converted(l, patch + c_out * os_c + i * os_h, size);
          } else if (C == 3) {
            std::copy(l, l + size, planes.data() + c_out * size);
          } else {
            for (int64_t j = 0; j < size; ++j) pixels[j * C + c_out] = l[j];
          }
        }
        if (interleaved && C == 3) {
          interleave3(planes.data(), planes.data() + size, planes.data() + 2 * size,
                      patch + i * os_h, size);
        } else if (interleaved) {
          store_converted(pixels.data(), patch + i * os_h, size * C);
        }
      }
    }
  });
}

at::Tensor extract_patches_cpu(const at::Tensor& images, const at::Tensor& boxes, int64_t size,
                               c10::optional<c10::ArrayRef<double>> mean,
                               c10::optional<c10::ArrayRef<double>> std,
                               c10::optional<at::ScalarType> out_dtype, bool channels_last,
                               bool antialias, bool reverse_channels) {
  std::vector<double> scale, shift;
  check_extract_patches_args(images, boxes, size, mean, std, scale, shift);
  const at::ScalarType out_type = extract_patches_out_dtype(out_dtype);
  at::Tensor out = at::empty(
      {boxes.size(0), images.size(1), size, size},
      images.options().dtype(out_type).memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                   : at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND3(
      at::kByte, at::kBFloat16, at::kHalf, images.scalar_type(), "extract_patches_cpu", [&] {
        using image_t = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out_type, "extract_patches_out",
                                        [&] {
                                          extract_patches_kernel<image_t, scalar_t>(
                                              images, boxes, out, size, scale, shift, antialias,
                                              reverse_channels);
                                        });
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnxfer, CPU, m) {
  m.impl("extract_patches", &extract_patches_cpu);
}

}  // namespace cnnxfer
