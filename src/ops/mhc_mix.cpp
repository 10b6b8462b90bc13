// Entry points of the mHC stream mixing: validate -> pick the backend -> run -> receipt. The
// pre-mix is moe_sum's math (k = n streams, f32 weights) and runs on moe_sum's reference and
// kernels, its free strides carried in the MoeSumProblem; the post-mix has its own.
#include <initializer_list>
#include <string>

#include "core/backend.h"
#include "cuda/mhc/mhc_mix_launch.h"
#include "cuda/moe_sum/moe_sum_launch.h"
#include "kiln/ops/mhc.h"
#include "ops/mhc_mix_problem.h"
#include "ops/moe_sum_problem.h"
#include "ref/mhc_mix.h"
#include "ref/moe_sum.h"

namespace kiln {
namespace {

// What the streams x fix for every other argument of a call.
struct MixShape {
  Device device;
  DType dtype = DType::f32;
  int64_t tokens = 0, cols = 0;
  int n = 0;
};

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d) s += (s.size() > 1 ? ", " : "") + std::to_string(v);
  return s + "]";
}

void expect_shape(std::string_view op, std::string_view arg, const TensorView& t,
                  std::initializer_list<int64_t> want) {
  bool ok = t.rank == static_cast<int>(want.size());
  int d = 0;
  for (int64_t v : want) ok = ok && t.sizes[d++] == v;
  if (!ok) throw_arg_error(op, arg, "shape " + dims(want), "shape " + t.shape_str());
}

MixShape mix_shape(std::string_view op, const TensorView& x) {
  check::present(op, "x", x);
  check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16});
  if (x.rank != 3) throw_arg_error(op, "x", "rank 3 ([T, n, C])", "shape " + x.shape_str());
  if (x.size(1) < 1 || x.size(1) > kMhcMaxStreams) {
    throw_arg_error(op, "x", "n = x.size(1) in [1, " + std::to_string(kMhcMaxStreams) + "]",
                    "shape " + x.shape_str());
  }
  return MixShape{x.device, x.dtype, x.size(0), x.size(2), static_cast<int>(x.size(1))};
}

// A [T, n, C] argument of x's device and dtype, its last dim contiguous.
MhcStreams streams(std::string_view op, std::string_view arg, const TensorView& t,
                   const MixShape& s) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, s.device);
  check::same_dtype(op, arg, t, s.dtype);
  expect_shape(op, arg, t, {s.tokens, s.n, s.cols});
  if (t.numel() > 0 && s.cols > 1 && t.strides[2] != 1) {
    throw_arg_error(op, arg, "a contiguous last dim (stride 1)",
                    "stride " + std::to_string(t.strides[2]) + " on shape " + t.shape_str());
  }
  // A size-1 dim's stride is never used (and torch leaves odd ones there): 0 keeps it out of the
  // kernels' 16-byte alignment tests.
  return MhcStreams{t.data, s.tokens > 1 ? t.strides[0] : 0, s.n > 1 ? t.strides[1] : 0};
}

// A [T, C] argument of x's device and dtype.
check::RowMatrix rows(std::string_view op, std::string_view arg, const TensorView& t,
                      const MixShape& s) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, s.device);
  check::same_dtype(op, arg, t, s.dtype);
  expect_shape(op, arg, t, {s.tokens, s.cols});
  return check::rows_of(op, arg, t);
}

// An f32 coefficient tensor on x's device of shape `want`.
void f32_of_shape(std::string_view op, std::string_view arg, const TensorView& t, const MixShape& s,
                  std::initializer_list<int64_t> want) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, s.device);
  check::same_dtype(op, arg, t, DType::f32);
  expect_shape(op, arg, t, want);
}

// H_pre, H_post [T, n] or H_res [T, n, n]: any strides.
MhcCoeffs coeffs(std::string_view op, std::string_view arg, const TensorView& t, const MixShape& s,
                 bool square) {
  if (square) {
    f32_of_shape(op, arg, t, s, {s.tokens, s.n, s.n});
  } else {
    f32_of_shape(op, arg, t, s, {s.tokens, s.n});
  }
  MhcCoeffs c;
  c.data = static_cast<const float*>(t.data);
  for (int d = 0; d < t.rank; ++d) c.strides[d] = t.strides[d];
  return c;
}

// dH_pre, dH_post [T, n] or dH_res [T, n, n]: rows of n contiguous values.
check::RowMatrix coeff_grads(std::string_view op, std::string_view arg, const TensorView& t,
                             const MixShape& s, bool square) {
  if (square) {
    f32_of_shape(op, arg, t, s, {s.tokens, s.n, s.n});
  } else {
    f32_of_shape(op, arg, t, s, {s.tokens, s.n});
  }
  return check::rows_of(op, arg, t);
}

MoeSumProblem pre_mix_problem(std::string_view op, const TensorView& x, const TensorView& h_pre,
                              MixShape* shape) {
  const MixShape s = mix_shape(op, x);
  const MhcStreams xs = streams(op, "x", x, s);
  const MhcCoeffs w = coeffs(op, "h_pre", h_pre, s, false);
  MoeSumProblem p;
  p.op = op;
  p.device = s.device;
  p.dtype = s.dtype;
  p.w_dtype = DType::f32;
  p.tokens = s.tokens;
  p.k = s.n;
  p.cols = s.cols;
  p.x = check::RowMatrix{xs.data, s.dtype, s.tokens * s.n, s.cols, xs.stream_stride};
  p.x_token_stride = xs.token_stride;
  p.weights = check::RowMatrix{const_cast<float*>(w.data), DType::f32, s.tokens, s.n, w.strides[0]};
  p.w_k_stride = w.strides[1];
  *shape = s;
  return p;
}

void run(const MoeSumProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::moe_sum", [&] { ref::moe_sum(p); }, [&] { return cuda::moe_sum(p, stream); });
}

MhcPostMixProblem post_mix_problem(std::string_view op, const TensorView& x, const TensorView& y,
                                   const TensorView& h_res, const TensorView& h_post,
                                   MixShape* shape) {
  const MixShape s = mix_shape(op, x);
  MhcPostMixProblem p;
  p.op = op;
  p.device = s.device;
  p.dtype = s.dtype;
  p.tokens = s.tokens;
  p.cols = s.cols;
  p.n = s.n;
  p.x = streams(op, "x", x, s);
  p.y = rows(op, "y", y, s);
  p.h_res = coeffs(op, "h_res", h_res, s, true);
  p.h_post = coeffs(op, "h_post", h_post, s, false);
  *shape = s;
  return p;
}

void run(const MhcPostMixProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::mhc_post_mix", [&] { ref::mhc_post_mix(p); },
      [&] { return cuda::mhc_post_mix(p, stream); });
}

}  // namespace

void mhc_pre_mix(const TensorView& h, const TensorView& x, const TensorView& h_pre, Stream stream) {
  MixShape s;
  MoeSumProblem p = pre_mix_problem("mhc_pre_mix", x, h_pre, &s);
  p.out = rows("mhc_pre_mix", "h", h, s);
  run(p, stream);
}

void mhc_pre_mix_backward(const TensorView& dx, const TensorView& dh_pre, const TensorView& dh,
                          const TensorView& x, const TensorView& h_pre, Stream stream) {
  constexpr std::string_view op = "mhc_pre_mix_backward";
  MixShape s;
  MoeSumProblem p = pre_mix_problem(op, x, h_pre, &s);
  p.backward = true;
  p.out = rows(op, "dh", dh, s);
  const MhcStreams dxs = streams(op, "dx", dx, s);
  p.dx = check::RowMatrix{dxs.data, s.dtype, s.tokens * s.n, s.cols, dxs.stream_stride};
  p.dx_token_stride = dxs.token_stride;
  if (dh_pre.defined()) p.dweights = coeff_grads(op, "dh_pre", dh_pre, s, false);
  run(p, stream);
}

void mhc_post_mix(const TensorView& x_out, const TensorView& x, const TensorView& y,
                  const TensorView& h_res, const TensorView& h_post, Stream stream) {
  MixShape s;
  MhcPostMixProblem p = post_mix_problem("mhc_post_mix", x, y, h_res, h_post, &s);
  p.x_out = streams("mhc_post_mix", "x_out", x_out, s);
  run(p, stream);
}

void mhc_post_mix_backward(const TensorView& dx, const TensorView& dy, const TensorView& dh_res,
                           const TensorView& dh_post, const TensorView& dx_out, const TensorView& x,
                           const TensorView& y, const TensorView& h_res, const TensorView& h_post,
                           Stream stream) {
  constexpr std::string_view op = "mhc_post_mix_backward";
  MixShape s;
  MhcPostMixProblem p = post_mix_problem(op, x, y, h_res, h_post, &s);
  p.backward = true;
  p.x_out = streams(op, "dx_out", dx_out, s);
  p.dx = streams(op, "dx", dx, s);
  p.dy = rows(op, "dy", dy, s);
  p.dh_res = coeff_grads(op, "dh_res", dh_res, s, true);
  p.dh_post = coeff_grads(op, "dh_post", dh_post, s, false);
  run(p, stream);
}

}  // namespace kiln
