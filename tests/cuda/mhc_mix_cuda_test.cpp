// CUDA mhc_pre_mix / mhc_post_mix (forward and backward) against the reference over n, C, T and
// dtypes, and over the layouts the contract allows: H broadcast over T (stride 0), a transposed
// H_res view, x stored stream-major (free token and stream strides). Outputs NaN-poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/element.h"
#include "cuda/device_buffer.h"
#include "kiln/ops/mhc.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

enum class Op { pre, post };
enum class Layout { plain, broadcast_h, transposed_h_res, stream_major_x };

struct Case {
  Op op;
  bool backward;
  DType dtype;
  int64_t n, cols, tokens;
  Layout layout;
  std::string name() const {
    const char* layouts[] = {"", "_broadcastH", "_transposedHres", "_streamMajorX"};
    return std::string(op == Op::pre ? "pre_" : "post_") + (backward ? "bwd_" : "fwd_") +
           std::string(dtype_name(dtype)) + "_n" + std::to_string(n) + "_C" + std::to_string(cols) +
           "_T" + std::to_string(tokens) + layouts[static_cast<int>(layout)];
  }
};

// A mirrored tensor seen through explicit sizes and strides (in elements of its storage).
struct Strided {
  Mirrored m;
  std::vector<int64_t> sizes, strides;
  Strided(HostTensor storage, std::vector<int64_t> sizes, std::vector<int64_t> strides)
      : m(std::move(storage)), sizes(std::move(sizes)), strides(std::move(strides)) {}
  TensorView dev() {
    return TensorView(m.dev.data(), m.host.dtype, Device::cuda(0), sizes, strides);
  }
  TensorView host() {
    return TensorView(m.host.bytes.data(), m.host.dtype, Device::cpu(), sizes, strides);
  }
  double at(int64_t a, int64_t b, int64_t c = 0) const {
    const int64_t off = a * strides[0] + b * strides[1] + (sizes.size() > 2 ? c * strides[2] : 0);
    return element::load(m.host.bytes.data(), m.host.dtype, off);
  }
};

Strided contiguous(DType dt, std::vector<int64_t> sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int d = static_cast<int>(sizes.size()) - 2; d >= 0; --d)
    strides[d] = strides[d + 1] * sizes[d + 1];
  return Strided(HostTensor(dt, sizes), sizes, strides);
}

struct Inputs {
  Strided x, y, g_rows, g_streams, h_pre, h_post, h_res;
};

Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  const int64_t T = c.tokens, n = c.n, C = c.cols;
  const bool bcast = c.layout == Layout::broadcast_h;
  Strided x = c.layout == Layout::stream_major_x
                  ? Strided(HostTensor(c.dtype, {n, T, C}), {T, n, C}, {C, T * C, 1})
                  : contiguous(c.dtype, {T, n, C});
  Strided h_res = bcast ? Strided(HostTensor(DType::f32, {n, n}), {T, n, n}, {0, n, 1})
                  : c.layout == Layout::transposed_h_res
                      ? Strided(HostTensor(DType::f32, {T, n, n}), {T, n, n}, {n * n, 1, n})
                      : contiguous(DType::f32, {T, n, n});
  auto coeffs = [&] {
    return bcast ? Strided(HostTensor(DType::f32, {n}), {T, n}, {0, 1})
                 : contiguous(DType::f32, {T, n});
  };
  Inputs in{std::move(x),
            contiguous(c.dtype, {T, C}),
            contiguous(c.dtype, {T, C}),
            contiguous(c.dtype, {T, n, C}),
            coeffs(),
            coeffs(),
            std::move(h_res)};
  for (Strided* s : {&in.x, &in.y, &in.g_rows, &in.g_streams, &in.h_pre, &in.h_post, &in.h_res}) {
    s->m.host.randn(rng);
    s->m.upload();
  }
  return in;
}

class MhcMixCuda : public ::testing::TestWithParam<Case> {};

TEST_P(MhcMixCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  const int64_t T = c.tokens, n = c.n, C = c.cols;
  std::mt19937_64 rng(T * 131 + n * 7 + C);
  Inputs in = make_inputs(c, rng);
  // Outputs: [T, C] rows (h, dy), [T, n, C] streams (x_out, dx), f32 dH's.
  Strided rows = contiguous(c.dtype, {T, C}), streams = contiguous(c.dtype, {T, n, C}),
          dh_res = contiguous(DType::f32, {T, n, n}), dh_vec = contiguous(DType::f32, {T, n});
  Strided rows_r = contiguous(c.dtype, {T, C}), streams_r = contiguous(c.dtype, {T, n, C}),
          dh_res_r = contiguous(DType::f32, {T, n, n}), dh_vec_r = contiguous(DType::f32, {T, n});
  for (Strided* s : {&rows, &streams, &dh_res, &dh_vec}) s->m.poison();
  auto run = [&](bool dev, Strided& o_rows, Strided& o_streams, Strided& o_res, Strided& o_vec) {
    auto v = [dev](Strided& s) { return dev ? s.dev() : s.host(); };
    if (c.op == Op::pre && !c.backward) mhc_pre_mix(v(o_rows), v(in.x), v(in.h_pre));
    if (c.op == Op::pre && c.backward) {
      mhc_pre_mix_backward(v(o_streams), v(o_vec), v(in.g_rows), v(in.x), v(in.h_pre));
    }
    if (c.op == Op::post && !c.backward) {
      mhc_post_mix(v(o_streams), v(in.x), v(in.y), v(in.h_res), v(in.h_post));
    }
    if (c.op == Op::post && c.backward) {
      mhc_post_mix_backward(v(o_streams), v(o_rows), v(o_res), v(o_vec), v(in.g_streams), v(in.x),
                            v(in.y), v(in.h_res), v(in.h_post));
    }
  };
  run(true, rows, streams, dh_res, dh_vec);
  EXPECT_EQ(last_receipt().backend, "cuda");
  run(false, rows_r, streams_r, dh_res_r, dh_vec_r);
  testing::cuda_ok(cudaDeviceSynchronize(), "mhc_mix");
  for (Strided* s : {&rows, &streams, &dh_res, &dh_vec}) s->m.download();

  // Stream and row outputs: one fp32 sum of <= 2n + 1 terms rounded once to the dtype.
  const double tol = c.dtype == DType::f32 ? 1e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  const bool rows_out = c.op == Op::pre ? !c.backward : c.backward;
  const bool streams_out = c.op == Op::post || c.backward;
  if (rows_out) testing::expect_close(rows.m.host, rows_r.m.host, tol, "rows ");
  if (streams_out) testing::expect_close(streams.m.host, streams_r.m.host, tol, "streams ");
  if (!c.backward) return;
  if (c.op == Op::pre) {  // without dh_pre: moe_sum's dx-only kernel
    Strided dx_only = contiguous(c.dtype, {T, n, C});
    dx_only.m.poison();
    mhc_pre_mix_backward(dx_only.dev(), TensorView(), in.g_rows.dev(), in.x.dev(), in.h_pre.dev());
    testing::cuda_ok(cudaDeviceSynchronize(), "mhc_pre_mix_backward");
    dx_only.m.download();
    testing::expect_close(dx_only.m.host, streams_r.m.host, tol, "dx without dh_pre ");
  }
  // The dH's: dot products of C terms summed in fp32 against float64: within 1e-6 relative plus
  // 1e-5 of the sum of |terms| (the mass), which bounds fp32 accumulation over C <= 8192.
  int bad = 0;
  auto check_dot = [&](double got, double want, double mass, const std::string& what) {
    if (bad < 5 && !(std::abs(got - want) <= 1e-6 * std::abs(want) + 1e-5 * mass + 1e-6)) {
      ADD_FAILURE() << what << ": got " << got << ", want " << want << " (mass " << mass << ")";
      ++bad;
    }
  };
  const Strided& g = c.op == Op::pre ? in.g_rows : in.g_streams;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      if (c.op == Op::pre) {
        double mass = 0;
        for (int64_t k = 0; k < C; ++k) mass += std::abs(g.at(t, k) * in.x.at(t, j, k));
        check_dot(dh_vec.at(t, j), dh_vec_r.at(t, j), mass,
                  "dh_pre[" + std::to_string(t) + ", " + std::to_string(j) + "]");
        continue;
      }
      double mass = 0;
      for (int64_t k = 0; k < C; ++k) mass += std::abs(g.at(t, j, k) * in.y.at(t, k));
      check_dot(dh_vec.at(t, j), dh_vec_r.at(t, j), mass,
                "dh_post[" + std::to_string(t) + ", " + std::to_string(j) + "]");
      for (int64_t i = 0; i < n; ++i) {
        mass = 0;
        for (int64_t k = 0; k < C; ++k) mass += std::abs(g.at(t, j, k) * in.x.at(t, i, k));
        check_dot(dh_res.at(t, j, i), dh_res_r.at(t, j, i), mass,
                  "dh_res[" + std::to_string(t) + ", " + std::to_string(j) + ", " +
                      std::to_string(i) + "]");
      }
    }
  }
  if (c.op == Op::post) {  // fixed-order dH reductions: the same bits on a second run
    const std::vector<uint8_t> res_bits = dh_res.m.host.bytes, post_bits = dh_vec.m.host.bytes;
    dh_res.m.poison();
    dh_vec.m.poison();
    run(true, rows, streams, dh_res, dh_vec);
    testing::cuda_ok(cudaDeviceSynchronize(), "mhc_post_mix_backward again");
    dh_res.m.download();
    dh_vec.m.download();
    EXPECT_TRUE(res_bits == dh_res.m.host.bytes) << "dh_res differs between runs";
    EXPECT_TRUE(post_bits == dh_vec.m.host.bytes) << "dh_post differs between runs";
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (Op op : {Op::pre, Op::post}) {
    for (bool backward : {false, true}) {
      // Every n, C, T and dtype in the plain layout.
      for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
        for (int64_t n : {1, 3, 4, 8}) {
          for (int64_t cols : {1, 7, 64, 4095, 8192}) {
            for (int64_t tokens : testing::sweep_rows())
              cases.push_back({op, backward, dtype, n, cols, tokens, Layout::plain});
          }
        }
      }
      // The strided layouts change addressing only, not the math or the vector path choice
      // beyond alignment: pruned to the unrolled n = 4 and a general n = 3, one odd C and one
      // C that takes the 16-byte path, f32 and bf16.
      for (Layout layout :
           {Layout::broadcast_h, Layout::transposed_h_res, Layout::stream_major_x}) {
        if (layout == Layout::transposed_h_res && op == Op::pre) continue;
        for (DType dtype : {DType::f32, DType::bf16}) {
          for (int64_t n : {3, 4}) {
            for (int64_t cols : {7, 4096}) {
              for (int64_t tokens : testing::sweep_rows())
                cases.push_back({op, backward, dtype, n, cols, tokens, layout});
            }
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, MhcMixCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

// The last `count` tokens of a contiguous tensor whose leading dim is T, as a tensor of their own.
HostTensor last_tokens(const HostTensor& t, int64_t count) {
  std::vector<int64_t> sizes = t.sizes;
  const size_t token_bytes = t.bytes.size() / sizes[0];
  sizes[0] = count;
  HostTensor out(t.dtype, sizes);
  std::memcpy(out.bytes.data(), t.bytes.data() + t.bytes.size() - count * token_bytes,
              count * token_bytes);
  return out;
}

TEST(MhcMixCudaExtra, MoreThan2Pow31Elements) {
  ASSERT_TRUE(testing::have_gpu());
  // x [65538, 4, 8192] bf16 = 2^31 + 65536 elements: offsets past 2^31 must not wrap. Tokens are
  // independent, so the last two are checked against the reference. The backward takes x as its
  // dx_out too (an input read twice), to hold host and device memory to a few x's.
  const int64_t n = 4, C = 8192, T = (int64_t{1} << 31) / (n * C) + 2, last = 2;
  std::mt19937_64 rng(9);
  HostTensor xh(DType::bf16, {T, n, C}), yh(DType::bf16, {T, C}), hr(DType::f32, {T, n, n}),
      hp(DType::f32, {T, n});
  for (HostTensor* t : {&xh, &yh, &hr, &hp}) t->randn(rng);
  Mirrored x(std::move(xh)), y(std::move(yh)), h_res(std::move(hr)), h_post(std::move(hp));
  for (Mirrored* m : {&x, &y, &h_res, &h_post}) m->upload();
  Mirrored streams(HostTensor(DType::bf16, {T, n, C})), rows(HostTensor(DType::bf16, {T, C}));
  Mirrored dh_res(HostTensor(DType::f32, {T, n, n})), dh_post(HostTensor(DType::f32, {T, n}));
  HostTensor xs = last_tokens(x.host, last), ys = last_tokens(y.host, last),
             hrs = last_tokens(h_res.host, last), hps = last_tokens(h_post.host, last);
  auto check = [&](Mirrored& got, const HostTensor& want, double tol, const char* what) {
    got.download();
    testing::expect_close(last_tokens(got.host, last), want, tol, what);
  };

  streams.poison();
  mhc_post_mix(streams.view(), x.view(), y.view(), h_res.view(), h_post.view());
  rows.poison();
  mhc_pre_mix(rows.view(), x.view(), h_post.view());
  testing::cuda_ok(cudaDeviceSynchronize(), "forward");
  HostTensor want_streams(DType::bf16, {last, n, C}), want_rows(DType::bf16, {last, C});
  mhc_post_mix(want_streams.view(), xs.view(), ys.view(), hrs.view(), hps.view());
  mhc_pre_mix(want_rows.view(), xs.view(), hps.view());
  check(streams, want_streams, 1.6e-2, "x_out ");
  check(rows, want_rows, 1.6e-2, "h ");

  streams.poison();
  rows.poison();
  mhc_post_mix_backward(streams.view(), rows.view(), dh_res.view(), dh_post.view(), x.view(),
                        x.view(), y.view(), h_res.view(), h_post.view());
  testing::cuda_ok(cudaDeviceSynchronize(), "backward");
  HostTensor want_dx(DType::bf16, {last, n, C}), want_dy(DType::bf16, {last, C}),
      want_dhr(DType::f32, {last, n, n}), want_dhp(DType::f32, {last, n});
  mhc_post_mix_backward(want_dx.view(), want_dy.view(), want_dhr.view(), want_dhp.view(), xs.view(),
                        xs.view(), ys.view(), hrs.view(), hps.view());
  check(streams, want_dx, 1.6e-2, "dx ");
  check(rows, want_dy, 1.6e-2, "dy ");
  // Dot products of 8192 terms of size ~1: within 1e-5 of their mass (~8192) absolutely.
  check(dh_res, want_dhr, 0.1, "dh_res ");
  check(dh_post, want_dhp, 0.1, "dh_post ");
}

}  // namespace
}  // namespace kiln
