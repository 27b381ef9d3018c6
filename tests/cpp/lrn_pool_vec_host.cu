// Runs the vectorized CUDA relu_lrn_maxpool path's thread body (relu_lrn_maxpool_vec_thread in
// csrc/cuda/lrn_pool.cu) on the CPU, one "thread" after another, so that its logic is checked
// against the reference without a GPU (tests/test_cuda_sources.py builds this with nvcc).
//
//   lrn_pool_vec_host DTYPE POOL_FIRST N C H W KERNEL STRIDE PAD OUT_H OUT_W ALPHA BETA K IN OUT
//
// DTYPE: f32, f16 or bf16. IN: N*H*W*C float32 (channels_last), rounded to DTYPE here; OUT:
// N*OUT_H*OUT_W*C float32 written back. LRN size 5, the only size the path takes.
#include "cuda/lrn_pool.cu"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

template <typename scalar_t, bool kPoolFirst>
int run(const cnnxfer::KernelParams<float>& p, const std::vector<float>& in, int64_t out_count,
        const char* out_path) {
  using cnnxfer::store;
  using cnnxfer::to_acc;
  std::vector<scalar_t> x(in.size()), y(out_count);
  for (size_t i = 0; i < in.size(); ++i) store(&x[i], in[i]);
  constexpr int kV = cnnxfer::Vec<scalar_t>::kSize;
  if (p.channels % kV) return 3;
  const bool three_quarters = p.beta == 0.75f;
  for (int64_t linear = 0; linear < out_count / kV; ++linear) {
    if (three_quarters) {
      cnnxfer::relu_lrn_maxpool_vec_thread<scalar_t, kPoolFirst, true>(x.data(), y.data(), p,
                                                                       linear);
    } else {
      cnnxfer::relu_lrn_maxpool_vec_thread<scalar_t, kPoolFirst, false>(x.data(), y.data(), p,
                                                                        linear);
    }
  }
  std::vector<float> out(out_count);
  for (int64_t i = 0; i < out_count; ++i) out[i] = to_acc(y[i]);
  FILE* f = fopen(out_path, "wb");
  if (!f || fwrite(out.data(), sizeof(float), out.size(), f) != out.size()) return 4;
  fclose(f);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 17) {
    fprintf(stderr, "usage: see the file's header\n");
    return 2;
  }
  const std::string dtype = argv[1];
  const bool pool_first = atoi(argv[2]) != 0;
  const int64_t n = atoll(argv[3]), c = atoll(argv[4]), h = atoll(argv[5]), w = atoll(argv[6]);
  const int64_t kernel = atoll(argv[7]), stride = atoll(argv[8]), pad = atoll(argv[9]);
  const int64_t oh = atoll(argv[10]), ow = atoll(argv[11]);
  cnnxfer::KernelParams<float> p{};
  p.channels = c;
  p.height = h;
  p.width = w;
  p.out_height = oh;
  p.out_width = ow;
  p.kernel_h = p.kernel_w = kernel;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_left = pad;
  p.xs_n = h * w * c, p.xs_c = 1, p.xs_h = w * c, p.xs_w = c;  // channels_last
  p.ys_n = oh * ow * c, p.ys_c = 1, p.ys_h = ow * c, p.ys_w = c;
  p.half_size = 2;
  p.alpha_over_size = static_cast<float>(atof(argv[12]) / 5.0);
  p.beta = static_cast<float>(atof(argv[13]));
  p.k = static_cast<float>(atof(argv[14]));
  p.relu = true;
  p.channel_inner = true;
  std::vector<float> in(n * h * w * c);
  FILE* f = fopen(argv[15], "rb");
  if (!f || fread(in.data(), sizeof(float), in.size(), f) != in.size()) return 5;
  fclose(f);
  const int64_t out_count = n * oh * ow * c;
  if (dtype == "f32") {
    return pool_first ? run<float, true>(p, in, out_count, argv[16])
                      : run<float, false>(p, in, out_count, argv[16]);
  }
  if (dtype == "f16") {
    return pool_first ? run<__half, true>(p, in, out_count, argv[16])
                      : run<__half, false>(p, in, out_count, argv[16]);
  }
  if (dtype == "bf16") {
    return pool_first ? run<__nv_bfloat16, true>(p, in, out_count, argv[16])
                      : run<__nv_bfloat16, false>(p, in, out_count, argv[16]);
  }
  return 2;
}
