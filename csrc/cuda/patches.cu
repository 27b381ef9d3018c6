// CUDA kernel of cnnxfer::extract_patches: crop, bilinear resize (optionally antialiased),
// normalize and cast one patch per box, in one pass. Meaning: cnnxfer/ops/reference.py
// extract_patches.
//
// Work split: a block task is `tile_rows` output rows x `tile_cols` output columns x all channels
// of one box (usually whole rows: tile_cols = size up to 256). Taps vary along one axis only, so
// the block first tabulates them in shared memory: one thread per output column computes that
// column's horizontal taps, one thread per output row the row's vertical taps, each once per block
// instead of once per output element (and per channel). Then every thread computes output
// elements as  sum_ty wy * (sum_tx wx * image[...])  (horizontal first, as the CPU kernel and
// F.interpolate do), reading the image through its own strides, and stores
// value * scale[c] + shift[c] cast to the output dtype. Consecutive threads take consecutive
// elements along the output's unit-stride axis (columns for NCHW output, channels then columns for
// channels_last), so stores coalesce; neighbouring outputs share input pixels through L1/L2.
//
// Taps and weights come from resize_taps.h evaluated in double, then rounded to the accumulation
// type, as the CPU and Triton kernels do. resize_taps needs an array of max_resize_taps() weights,
// so the tables are sized by a compile-time bound (kMaxTableTaps) and by the caller's bound on the
// taps any box needs. A box that needs more than kMaxTableTaps (an antialiased shrink by more than
// ~30x) takes a table-free path: each element recomputes its taps on the fly (direct_taps mirrors
// resize_taps' formulas without storing the weights). Slower, rare, and identical in result; it
// doubles the kernel's registers, so it lives in a kernel variant launched only when the caller's
// bound says some box may need it.
//
// Sums run in float (double for float64 images); offsets are int64. Only CUDA headers are
// included, so this file compiles with plain nvcc where the installed torch has no CUDA build
// headers; patches_binding.cpp connects it to the dispatcher. The per-thread phases are
// __host__ __device__ so that the whole kernel can also be run, thread by thread, on a CPU.
#include "patches_cuda.h"

#include "../resize_taps.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace cnnxfer {
namespace {

constexpr int kMaxThreads = 256;
// Register budgets: 64 per thread for the table-only kernel (8 warps per block, 4 blocks per SM:
// half the SM's threads resident to hide load latency); the kernel that can also take the
// table-free path needs more and is launched only when a box may need it.
constexpr int kMinBlocksTableOnly = 4;
constexpr int kMinBlocksWithDirect = 2;
// Beyond this many blocks the grid-stride loop over tasks takes over.
constexpr int64_t kMaxBlocks = int64_t{1} << 20;
constexpr int64_t kMaxTileCols = 256;
constexpr int64_t kMaxTileRows = 8;
// Tap tables hold up to this many taps per output coordinate (an antialiased shrink by up to
// ~31x); each table-filling thread keeps that many doubles for resize_taps.
constexpr int64_t kMaxTableTaps = 64;
// Shared memory for the column table; the row table adds at most kMaxTileRows * ~0.5 KiB, so a
// block stays under the 48 KiB available without opting in to more.
constexpr int64_t kColumnTableBytes = 36 * 1024;
// Several rows per block amortize the column table, but only when that still leaves enough
// blocks to fill an H200 (132 SMs) many times over.
constexpr int64_t kManyTasks = 4096;
constexpr int64_t kElementsPerBlock = 2048;

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

__host__ __device__ __forceinline__ float to_acc(uint8_t v) { return static_cast<float>(v); }
__host__ __device__ __forceinline__ float to_acc(float v) { return v; }
__host__ __device__ __forceinline__ double to_acc(double v) { return v; }
__host__ __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__host__ __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

__host__ __device__ __forceinline__ void store(float* p, float v) { *p = v; }
__host__ __device__ __forceinline__ void store(float* p, double v) { *p = static_cast<float>(v); }
__host__ __device__ __forceinline__ void store(double* p, float v) { *p = v; }
__host__ __device__ __forceinline__ void store(double* p, double v) { *p = v; }
__host__ __device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__host__ __device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}
// double -> 16-bit through float, as c10::Half / c10::BFloat16 convert a double.
__host__ __device__ __forceinline__ void store(__half* p, double v) {
  *p = __float2half_rn(static_cast<float>(v));
}
__host__ __device__ __forceinline__ void store(__nv_bfloat16* p, double v) {
  *p = __float2bfloat16_rn(static_cast<float>(v));
}

// A bit pattern rather than NAN from <cmath>: fast-math flags cannot fold it away, and it needs
// nothing that device code lacks.
template <typename T>
__host__ __device__ __forceinline__ T quiet_nan();
template <>
__host__ __device__ __forceinline__ float quiet_nan<float>() {
  const uint32_t bits = 0x7fc00000u;
  float v;
  memcpy(&v, &bits, sizeof v);
  return v;
}
template <>
__host__ __device__ __forceinline__ double quiet_nan<double>() {
  const uint64_t bits = 0x7ff8000000000000ull;
  double v;
  memcpy(&v, &bits, sizeof v);
  return v;
}

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

template <typename acc_t>
struct KernelParams {
  int64_t images, channels, height, width;
  int64_t is_n, is_c, is_h, is_w;
  int64_t size;
  int64_t os_k, os_c, os_h, os_w;
  int64_t tile_rows, tile_cols, row_groups, col_tiles, tasks;
  // Table capacities in taps; stride_x = cap_x rounded up to odd, so the weights of 32
  // consecutive columns fall in 32 different shared-memory banks.
  int64_t cap_x, stride_x, cap_y;
  bool antialias, reverse_channels;
  bool channel_inner;  // consecutive threads take consecutive channels (channels_last output)
  acc_t scale[kPatchesInlineChannels], shift[kPatchesInlineChannels];
  const double* scale_shift_device;  // non-null only when channels > kPatchesInlineChannels
};

// The block's tap tables, carved from dynamic shared memory: 8-byte arrays first for alignment.
template <typename acc_t>
struct Tables {
  int64_t* off_x;  // [tile_cols] (x0 + first tap) * is_w
  int64_t* off_y;  // [tile_rows] n * is_n + (y0 + first tap) * is_h
  acc_t* w_x;      // [tile_cols][stride_x]
  acc_t* w_y;      // [tile_rows][cap_y]
  int* n_x;        // [tile_cols] tap counts
  int* n_y;        // [tile_rows]
};

template <typename acc_t>
__host__ __device__ inline size_t table_bytes(const KernelParams<acc_t>& p) {
  return static_cast<size_t>(
      sizeof(int64_t) * (p.tile_cols + p.tile_rows) +
      sizeof(acc_t) * (p.tile_cols * p.stride_x + p.tile_rows * p.cap_y) +
      sizeof(int) * (p.tile_cols + p.tile_rows));
}

template <typename acc_t>
__host__ __device__ inline Tables<acc_t> carve_tables(unsigned char* base,
                                                      const KernelParams<acc_t>& p) {
  Tables<acc_t> t;
  t.off_x = reinterpret_cast<int64_t*>(base);
  t.off_y = t.off_x + p.tile_cols;
  t.w_x = reinterpret_cast<acc_t*>(t.off_y + p.tile_rows);
  t.w_y = t.w_x + p.tile_cols * p.stride_x;
  t.n_x = reinterpret_cast<int*>(t.w_y + p.tile_rows * p.cap_y);
  t.n_y = t.n_x + p.tile_cols;
  return t;
}

struct Task {
  int64_t k, n, x0, y0, crop_w, crop_h;
  int64_t i0, j0;      // first output row and column
  int rows, cols;      // extent; the last row group and column tile may be shorter
  bool valid;          // the box lies inside its image (the binding has checked it)
  bool table;          // its taps fit the tables
};

template <typename acc_t>
__host__ __device__ inline Task decode_task(int64_t task, const int64_t* boxes,
                                            const KernelParams<acc_t>& p) {
  Task t;
  const int64_t tile = task % p.col_tiles;
  const int64_t rest = task / p.col_tiles;
  const int64_t group = rest % p.row_groups;
  t.k = rest / p.row_groups;
  const int64_t* box = boxes + 5 * t.k;
  t.n = box[0];
  t.x0 = box[1];
  t.y0 = box[2];
  const int64_t x1 = box[3], y1 = box[4];
  t.crop_w = x1 - t.x0;
  t.crop_h = y1 - t.y0;
  t.j0 = tile * p.tile_cols;
  t.cols = static_cast<int>(min64(p.tile_cols, p.size - t.j0));
  t.i0 = group * p.tile_rows;
  t.rows = static_cast<int>(min64(p.tile_rows, p.size - t.i0));
  t.valid = t.n >= 0 && t.n < p.images && t.x0 >= 0 && t.y0 >= 0 && x1 > t.x0 && y1 > t.y0 &&
            x1 <= p.width && y1 <= p.height;
  t.table = t.valid && max_resize_taps(t.crop_w, p.size, p.antialias) <= p.cap_x &&
            max_resize_taps(t.crop_h, p.size, p.antialias) <= p.cap_y;
  return t;
}

// One thread's share of tabulating the taps of a task (only when t.table).
template <typename acc_t>
__host__ __device__ inline void fill_tables(int tid, int nthreads, const Task& t,
                                            const Tables<acc_t>& tab,
                                            const KernelParams<acc_t>& p) {
  double w[kMaxTableTaps];
  for (int j = tid; j < t.cols; j += nthreads) {
    int64_t first;
    const int64_t n = resize_taps<double>(t.j0 + j, t.crop_w, p.size, p.antialias, &first, w);
    tab.off_x[j] = (t.x0 + first) * p.is_w;
    tab.n_x[j] = static_cast<int>(n);
    acc_t* dst = tab.w_x + j * p.stride_x;
    for (int64_t q = 0; q < n; ++q) dst[q] = static_cast<acc_t>(w[q]);
  }
  // Rows go to the last threads, which have no column when the tile is narrower than the block.
  for (int r = nthreads - 1 - tid; r < t.rows; r += nthreads) {
    int64_t first;
    const int64_t n = resize_taps<double>(t.i0 + r, t.crop_h, p.size, p.antialias, &first, w);
    tab.off_y[r] = t.n * p.is_n + (t.y0 + first) * p.is_h;
    tab.n_y[r] = static_cast<int>(n);
    acc_t* dst = tab.w_y + r * p.cap_y;
    for (int64_t q = 0; q < n; ++q) dst[q] = static_cast<acc_t>(w[q]);
  }
}

template <typename in_t, typename acc_t>
__host__ __device__ __forceinline__ acc_t sample_table(const in_t* __restrict__ plane, int r,
                                                       int j, const Tables<acc_t>& tab,
                                                       const KernelParams<acc_t>& p) {
  const in_t* corner = plane + tab.off_y[r] + tab.off_x[j];
  const acc_t* wy = tab.w_y + r * p.cap_y;
  const acc_t* wx = tab.w_x + j * p.stride_x;
  const int ny = tab.n_y[r], nx = tab.n_x[j];
  acc_t sum = 0;
  for (int qy = 0; qy < ny; ++qy) {
    const in_t* row = corner + qy * p.is_h;
    acc_t across = 0;
    for (int qx = 0; qx < nx; ++qx) across += wx[qx] * to_acc(row[qx * p.is_w]);
    sum += wy[qy] * across;
  }
  return sum;
}

// The taps of one output coordinate without a weight array: resize_taps' formulas, the antialias
// weights evaluated one at a time (the same operations, so the same doubles).
struct DirectTaps {
  int64_t first, count;
  double w0, w1;                         // plain bilinear
  double center, inverse_scale, total;  // antialias
  bool antialias;
};

__host__ __device__ __forceinline__ double triangle(int64_t j, double center,
                                                    double inverse_scale) {
  double x = (static_cast<double>(j) - center + 0.5) * inverse_scale;
  x = x < 0.0 ? -x : x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

__host__ __device__ inline DirectTaps direct_taps(int64_t i, int64_t in, int64_t out,
                                                  bool antialias) {
  DirectTaps d;
  d.antialias = antialias;
  d.center = d.inverse_scale = d.total = 0.0;
  d.w0 = d.w1 = 0.0;
  if (!antialias) {
    double w[2];
    d.count = resize_taps<double>(i, in, out, false, &d.first, w);
    d.w0 = w[0];
    if (d.count > 1) d.w1 = w[1];
    return d;
  }
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double support = scale >= 1.0 ? scale : 1.0;
  d.inverse_scale = scale >= 1.0 ? 1.0 / scale : 1.0;
  d.center = scale * (static_cast<double>(i) + 0.5);
  int64_t lo = static_cast<int64_t>(d.center - support + 0.5);
  if (lo < 0) lo = 0;
  int64_t hi = static_cast<int64_t>(d.center + support + 0.5);
  if (hi > in) hi = in;
  for (int64_t j = lo; j < hi; ++j) d.total += triangle(j, d.center, d.inverse_scale);
  d.first = lo;
  d.count = hi - lo;
  return d;
}

__host__ __device__ __forceinline__ double direct_weight(const DirectTaps& d, int64_t q) {
  if (!d.antialias) return q == 0 ? d.w0 : d.w1;
  const double w = triangle(d.first + q, d.center, d.inverse_scale);
  return d.total != 0.0 ? w / d.total : w;
}

template <typename in_t, typename acc_t>
__host__ __device__ inline acc_t sample_direct(const in_t* __restrict__ plane, const Task& t,
                                               int r, int j, const KernelParams<acc_t>& p) {
  const DirectTaps dy = direct_taps(t.i0 + r, t.crop_h, p.size, p.antialias);
  const DirectTaps dx = direct_taps(t.j0 + j, t.crop_w, p.size, p.antialias);
  const in_t* corner =
      plane + t.n * p.is_n + (t.y0 + dy.first) * p.is_h + (t.x0 + dx.first) * p.is_w;
  acc_t sum = 0;
  for (int64_t qy = 0; qy < dy.count; ++qy) {
    const in_t* row = corner + qy * p.is_h;
    acc_t across = 0;
    for (int64_t qx = 0; qx < dx.count; ++qx) {
      across += static_cast<acc_t>(direct_weight(dx, qx)) * to_acc(row[qx * p.is_w]);
    }
    sum += static_cast<acc_t>(direct_weight(dy, qy)) * across;
  }
  return sum;
}

// One thread's elements of a task: flat indices tid, tid + nthreads, ... over
// (row, channel, column) with columns fastest for NCHW output, (row, column, channel) with
// channels fastest for channels_last. The digits advance by carries instead of being re-derived
// by division for every element; int32 digits (channels < 2^31, checked by the launcher) keep
// registers for the tap loops.
//   kMode: kTable reads the tap tables; kDirect computes taps per element (or NaN for a box that
//   lies outside its image); kNaN writes NaN.
enum class Mode { kTable, kDirect, kNaN };

template <Mode kMode, typename in_t, typename out_t, typename acc_t>
__host__ __device__ inline void compute_elements(int tid, int nthreads, const Task& t,
                                                 const Tables<acc_t>& tab,
                                                 const in_t* __restrict__ images,
                                                 out_t* __restrict__ out,
                                                 const KernelParams<acc_t>& p) {
  const int C = static_cast<int>(p.channels);
  const int A = p.channel_inner ? C : t.cols;  // radix of the fastest digit
  const int B = p.channel_inner ? t.cols : C;
  int a = tid % A;
  int b = (tid / A) % B;
  int r = tid / A / B;
  const int da = nthreads % A;
  const int db = (nthreads / A) % B;
  const int dr = nthreads / A / B;
  out_t* out_task = out + t.k * p.os_k + t.i0 * p.os_h + t.j0 * p.os_w;
  while (r < t.rows) {
    const int j = p.channel_inner ? b : a;
    const int c = p.channel_inner ? a : b;
    const in_t* plane = images + static_cast<int64_t>(p.reverse_channels ? C - 1 - c : c) * p.is_c;
    acc_t v;
    if constexpr (kMode == Mode::kTable) {
      v = sample_table(plane, r, j, tab, p);
    } else if constexpr (kMode == Mode::kDirect) {
      v = t.valid ? sample_direct(plane, t, r, j, p) : quiet_nan<acc_t>();
    } else {
      v = quiet_nan<acc_t>();
    }
    acc_t scale, shift;
    if (p.scale_shift_device != nullptr) {
      scale = static_cast<acc_t>(p.scale_shift_device[c]);
      shift = static_cast<acc_t>(p.scale_shift_device[C + c]);
    } else {
      scale = p.scale[c];
      shift = p.shift[c];
    }
    store(out_task + c * p.os_c + r * p.os_h + j * p.os_w, v * scale + shift);

    a += da;
    int carry = 0;
    if (a >= A) {
      a -= A;
      carry = 1;
    }
    b += db + carry;  // < 2B: one wrap at most
    if (b >= B) {
      b -= B;
      r += 1;
    }
    r += dr;
  }
}

// kDirect: whether some box may need more taps than the tables hold (the table-free path is
// compiled in only then, as it doubles the registers). Without it such a box would come out as
// NaN; the launcher never lets that happen.
template <typename in_t, typename out_t, bool kDirect>
__global__ void __launch_bounds__(kMaxThreads, kDirect ? kMinBlocksWithDirect : kMinBlocksTableOnly)
    extract_patches_kernel(const in_t* __restrict__ images, const int64_t* __restrict__ boxes,
                           out_t* __restrict__ out,
                           const KernelParams<typename AccType<in_t>::type> p) {
  using acc_t = typename AccType<in_t>::type;
  // unsigned char for every instantiation: extern __shared__ arrays of different types would
  // clash.
  extern __shared__ __align__(16) unsigned char shared[];
  const Tables<acc_t> tab = carve_tables(shared, p);
  const int tid = static_cast<int>(threadIdx.x);
  const int nthreads = static_cast<int>(blockDim.x);
  for (int64_t task = blockIdx.x; task < p.tasks; task += gridDim.x) {
    // Every thread reads the same box, so t.table is uniform across the block and the barriers
    // below are reached by all or none.
    const Task t = decode_task(task, boxes, p);
    if (t.table) {
      fill_tables(tid, nthreads, t, tab, p);
      __syncthreads();
      compute_elements<Mode::kTable>(tid, nthreads, t, tab, images, out, p);
      __syncthreads();  // before the next task overwrites the tables
    } else {
      compute_elements<kDirect ? Mode::kDirect : Mode::kNaN>(tid, nthreads, t, tab, images, out,
                                                             p);
    }
  }
}

struct LaunchPlan {
  bool direct;  // some box may need more taps than the tables hold
  int threads;
  int64_t blocks;
  size_t shared_bytes;
};

// Fills p and picks the launch configuration.
template <typename acc_t>
LaunchPlan plan_launch(const PatchesLaunchGeometry& g, KernelParams<acc_t>& p) {
  p.images = g.images;
  p.channels = g.channels;
  p.height = g.height;
  p.width = g.width;
  p.is_n = g.image_stride[0];
  p.is_c = g.image_stride[1];
  p.is_h = g.image_stride[2];
  p.is_w = g.image_stride[3];
  p.size = g.size;
  p.os_k = g.out_stride[0];
  p.os_c = g.out_stride[1];
  p.os_h = g.out_stride[2];
  p.os_w = g.out_stride[3];
  p.antialias = g.antialias;
  p.reverse_channels = g.reverse_channels;
  if (g.channels <= kPatchesInlineChannels) {
    for (int64_t c = 0; c < g.channels; ++c) {
      p.scale[c] = static_cast<acc_t>(g.scale[c]);
      p.shift[c] = static_cast<acc_t>(g.shift[c]);
    }
    p.scale_shift_device = nullptr;
  } else {
    p.scale_shift_device = g.scale_shift_device;
  }
  // Equal strides happen only when an axis has length 1; then either order coalesces.
  p.channel_inner = g.out_stride[1] < g.out_stride[3];

  // At least 3 taps, so plain bilinear and every enlargement always use the tables.
  auto capacity = [](int64_t hint) {
    const int64_t cap = hint > 0 ? hint : kMaxTableTaps;
    return cap < 3 ? 3 : (cap > kMaxTableTaps ? kMaxTableTaps : cap);
  };
  p.cap_x = capacity(g.max_taps_x);
  p.cap_y = capacity(g.max_taps_y);
  p.stride_x = p.cap_x | 1;

  // Wide patches split into column tiles of equal width, as many as the table budget requires.
  const int64_t column_bytes = static_cast<int64_t>(sizeof(acc_t)) * p.stride_x +
                               static_cast<int64_t>(sizeof(int64_t) + sizeof(int));
  int64_t max_cols = kColumnTableBytes / column_bytes;
  if (max_cols > kMaxTileCols) max_cols = kMaxTileCols;
  p.col_tiles = ceil_div(g.size, max_cols);
  p.tile_cols = ceil_div(g.size, p.col_tiles);
  p.tile_rows = 1;
  if (g.boxes * g.size * p.col_tiles >= kManyTasks) {
    p.tile_rows = ceil_div(kElementsPerBlock, g.channels * p.tile_cols);
    if (p.tile_rows > kMaxTileRows) p.tile_rows = kMaxTileRows;
    if (p.tile_rows > g.size) p.tile_rows = g.size;
  }
  p.row_groups = ceil_div(g.size, p.tile_rows);
  p.tasks = g.boxes * p.row_groups * p.col_tiles;

  LaunchPlan plan;
  plan.direct = !(g.max_taps_x > 0 && g.max_taps_x <= p.cap_x && g.max_taps_y > 0 &&
                  g.max_taps_y <= p.cap_y);
  const int64_t elements = p.tile_rows * g.channels * p.tile_cols;
  const int64_t threads = ceil_div(elements, 32) * 32;
  plan.threads = static_cast<int>(threads < kMaxThreads ? threads : kMaxThreads);
  plan.blocks = p.tasks < kMaxBlocks ? p.tasks : kMaxBlocks;
  plan.shared_bytes = table_bytes(p);
  return plan;
}

template <typename in_t, typename out_t>
cudaError_t launch_typed(const void* images, const int64_t* boxes, void* out,
                         const PatchesLaunchGeometry& g, cudaStream_t stream) {
  using acc_t = typename AccType<in_t>::type;
  KernelParams<acc_t> p{};
  const LaunchPlan plan = plan_launch(g, p);
  const auto* x = static_cast<const in_t*>(images);
  auto* y = static_cast<out_t*>(out);
  const dim3 grid(static_cast<unsigned int>(plan.blocks));
  if (plan.direct) {
    extract_patches_kernel<in_t, out_t, true>
        <<<grid, plan.threads, plan.shared_bytes, stream>>>(x, boxes, y, p);
  } else {
    extract_patches_kernel<in_t, out_t, false>
        <<<grid, plan.threads, plan.shared_bytes, stream>>>(x, boxes, y, p);
  }
  return cudaGetLastError();
}

template <typename in_t>
cudaError_t launch_for_input(const void* images, const int64_t* boxes, void* out,
                             PatchesOutputDType out_dtype, const PatchesLaunchGeometry& g,
                             cudaStream_t stream) {
  switch (out_dtype) {
    case PatchesOutputDType::kFloat32:
      return launch_typed<in_t, float>(images, boxes, out, g, stream);
    case PatchesOutputDType::kFloat64:
      return launch_typed<in_t, double>(images, boxes, out, g, stream);
    case PatchesOutputDType::kBFloat16:
      return launch_typed<in_t, __nv_bfloat16>(images, boxes, out, g, stream);
    case PatchesOutputDType::kFloat16:
      return launch_typed<in_t, __half>(images, boxes, out, g, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_extract_patches(const void* images, const int64_t* boxes_device, void* out,
                                   PatchesInputDType in_dtype, PatchesOutputDType out_dtype,
                                   const PatchesLaunchGeometry& g, cudaStream_t stream) {
  if (g.size < 1 || g.channels < 0 || g.channels > INT32_MAX || g.boxes < 0) {
    return cudaErrorInvalidValue;
  }
  // A zero-block launch is itself an error, so an empty output must not reach <<<>>>.
  if (g.boxes == 0 || g.channels == 0) return cudaSuccess;
  if (g.channels > kPatchesInlineChannels && g.scale_shift_device == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (in_dtype) {
    case PatchesInputDType::kUInt8:
      return launch_for_input<uint8_t>(images, boxes_device, out, out_dtype, g, stream);
    case PatchesInputDType::kFloat32:
      return launch_for_input<float>(images, boxes_device, out, out_dtype, g, stream);
    case PatchesInputDType::kFloat64:
      return launch_for_input<double>(images, boxes_device, out, out_dtype, g, stream);
    case PatchesInputDType::kBFloat16:
      return launch_for_input<__nv_bfloat16>(images, boxes_device, out, out_dtype, g, stream);
    case PatchesInputDType::kFloat16:
      return launch_for_input<__half>(images, boxes_device, out, out_dtype, g, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cnnxfer
