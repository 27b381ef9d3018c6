// A libtorch program that uses cnnxfer's op the two ways a C++ consumer can: the typed function
// from lrn_pool.h and the op by name through the dispatcher. Each result is checked against plain
// libtorch ops evaluated in float64. Exits non-zero on any mismatch; prints OK when all pass.
//
// Built with CNNXFER_EXAMPLE_BY_NAME_ONLY it never calls a function of libcnnxfer, so it checks
// that linking the library is enough for its ops to be registered.
#include <lrn_pool.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/Exception.h>
// Narrower than <torch/torch.h>, which takes longer to compile than everything else here.
#include <torch/nn/functional/normalization.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

namespace F = torch::nn::functional;

struct Case {
  std::string name;
  std::vector<int64_t> shape;
  int64_t size;
  double alpha, beta, k;
  std::vector<int64_t> kernel, stride, padding;  // padding: top, left, bottom, right
  bool ceil_mode, pool_first;
  bool channels_last;
  torch::Dtype dtype;
  double scale;  // input standard deviation: large enough that the LRN denominator matters
};

torch::Tensor reference(const torch::Tensor& x, const Case& c) {
  const auto lrn = [&](const torch::Tensor& t) {
    return F::local_response_norm(
        t, F::LocalResponseNormFuncOptions(c.size).alpha(c.alpha).beta(c.beta).k(c.k));
  };
  // torch's max_pool2d pads symmetrically; the cases keep padding symmetric so it can compare.
  const auto pool = [&](const torch::Tensor& t) {
    return torch::max_pool2d(t, c.kernel, c.stride, {c.padding[0], c.padding[1]}, {1, 1},
                             c.ceil_mode);
  };
  const torch::Tensor r = torch::relu(x.to(torch::kFloat64));
  return c.pool_first ? lrn(pool(r)) : pool(lrn(r));
}

torch::Tensor by_name(const torch::Tensor& x, const Case& c) {
  // Boxed: the caller needs only the schema's argument order, not the C++ signature.
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("cnnxfer::relu_lrn_maxpool", "");
  torch::jit::Stack stack{x,        c.size,      c.alpha,     c.beta,
                          c.k,      c.kernel,    c.stride,    c.padding,
                          c.ceil_mode, c.pool_first, /*relu=*/true};
  op.callBoxed(&stack);
  TORCH_CHECK(stack.size() == 1, "expected one output, got ", stack.size());
  return stack[0].toTensor();
}

#ifndef CNNXFER_EXAMPLE_BY_NAME_ONLY
torch::Tensor typed(const torch::Tensor& x, const Case& c) {
  return cnnxfer::relu_lrn_maxpool(x, c.size, c.alpha, c.beta, c.k, c.kernel, c.stride,
                                   c.padding, c.ceil_mode, c.pool_first, /*relu=*/true);
}
#endif

bool check(const std::string& label, const torch::Tensor& got, const torch::Tensor& want,
           double tolerance) {
  if (got.sizes() != want.sizes()) {
    std::printf("FAIL %-44s shape %s, expected %s\n", label.c_str(),
                c10::str(got.sizes()).c_str(), c10::str(want.sizes()).c_str());
    return false;
  }
  const double err = (got.to(torch::kFloat64) - want).abs().max().item<double>();
  const bool ok = err <= tolerance;
  std::printf("%s %-44s max abs error %.3e (tolerance %.0e)\n", ok ? "ok  " : "FAIL",
              label.c_str(), err, tolerance);
  return ok;
}

bool even_size_throws() {
  const torch::Tensor x = torch::randn({1, 8, 9, 9});
  Case c{"even size", {1, 8, 9, 9}, 4, 1e-4, 0.75, 1.0, {3, 3}, {2, 2}, {0, 0, 0, 0},
         false, false, false, torch::kFloat32, 1.0};
  try {
#ifdef CNNXFER_EXAMPLE_BY_NAME_ONLY
    by_name(x, c);
#else
    typed(x, c);
#endif
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    const bool ok = message.find("size") != std::string::npos;
    std::printf("%s even size rejected: %s\n", ok ? "ok  " : "FAIL", message.c_str());
    return ok;
  }
  std::printf("FAIL even size was accepted\n");
  return false;
}

}  // namespace

int main() {
  torch::manual_seed(0);
  const std::vector<Case> cases = {
      // AlexNet's first normalization: LRN, then 3x3 stride-2 pooling.
      {"alexnet 2x96x55x55", {2, 96, 55, 55}, 5, 1e-4, 0.75, 2.0, {3, 3}, {2, 2},
       {0, 0, 0, 0}, false, false, false, torch::kFloat32, 20.0},
      // CaffeNet's order: pooling, then LRN.
      {"caffenet pool-first 2x96x55x55", {2, 96, 55, 55}, 5, 1e-4, 0.75, 1.0, {3, 3}, {2, 2},
       {0, 0, 0, 0}, false, true, false, torch::kFloat32, 20.0},
      // Fewer channels than the window, odd sizes, a general beta, ceil mode and padding.
      {"odd 3x7x13x11 size 9 ceil pad", {3, 7, 13, 11}, 9, 0.5, 0.6, 2.0, {3, 3}, {2, 2},
       {1, 1, 1, 1}, true, false, false, torch::kFloat32, 3.0},
      {"odd 3x7x13x11 size 9 ceil pool-first", {3, 7, 13, 11}, 9, 0.5, 0.6, 2.0, {3, 3},
       {2, 2}, {0, 0, 0, 0}, true, true, false, torch::kFloat32, 3.0},
      // channels_last input takes the interleaved path of the CPU kernel.
      {"channels_last 2x32x27x27", {2, 32, 27, 27}, 5, 1e-3, 0.75, 1.0, {3, 3}, {2, 2},
       {0, 0, 0, 0}, false, false, true, torch::kFloat32, 10.0},
      {"channels_last 2x32x27x27 pool-first", {2, 32, 27, 27}, 5, 1e-3, 0.75, 1.0, {3, 3},
       {2, 2}, {0, 0, 0, 0}, false, true, true, torch::kFloat32, 10.0},
      // float64 computes in double: compared much more tightly; stride 1, beta 1.
      {"float64 1x16x10x12 stride 1", {1, 16, 10, 12}, 3, 1e-2, 1.0, 1.0, {2, 2}, {1, 1},
       {0, 0, 0, 0}, false, false, false, torch::kFloat64, 5.0},
  };

  bool all_ok = true;
  for (const Case& c : cases) {
    torch::Tensor x = torch::randn(c.shape, torch::TensorOptions().dtype(c.dtype)) * c.scale;
    if (c.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    const torch::Tensor want = reference(x, c);
    const double tolerance = c.dtype == torch::kFloat64 ? 1e-10 : 1e-4;
#ifndef CNNXFER_EXAMPLE_BY_NAME_ONLY
    all_ok &= check(c.name + " [header]", typed(x, c), want, tolerance);
#endif
    all_ok &= check(c.name + " [by name]", by_name(x, c), want, tolerance);
  }
  all_ok &= even_size_throws();

  if (!all_ok) {
    std::printf("FAILED\n");
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
