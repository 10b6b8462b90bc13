// CUDA fused_moe against the reference (the same entry point on CPU tensors): every activation,
// bf16 and f16, T in {1, 7, 300}, k in {1, 2, 8}, E from 4 to 16, shapes that take the 16-byte
// dot products (H, I multiples of 8, x's rows padded by 8) and the element ones (H = 100, I = 36,
// x's rows padded by 3); with and without an expert map. Every case has picks the kernels must
// skip: ids outside [0, E) and, with a map, -1 entries (dropped) and values outside [-1, E_local)
// (skipped, and counted into bad_ids: the count is checked). The reference runs with those picks'
// weights set to 0 (and their ids and map values made valid, since it checks them). Outputs
// poisoned before each run, so an unwritten element is a NaN and fails. On Hopper, the small-T
// cases also run with KILN_FUSED_MOE=grouped (the prefill path forced down to T = 1, x's rows
// padded by 8 or by 3: the gather's 16-byte and element copies).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/moe/fused_moe_launch.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/moe.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

const char* name_of(MoeActivation a) {
  switch (a) {
    case MoeActivation::swiglu:
      return "swiglu";
    case MoeActivation::gelu_tanh:
      return "gelu_tanh";
    case MoeActivation::gelu_erf:
      return "gelu_erf";
    default:
      return "relu2";
  }
}

struct Case {
  DType dtype;
  MoeActivation activation;
  int64_t tokens, k, experts;
  bool vec_shape, mapped;
  bool grouped = false;  // KILN_FUSED_MOE=grouped
  int64_t hidden() const { return vec_shape ? 128 : 100; }
  int64_t inter() const { return vec_shape ? 64 : 36; }
  // With a map: E global experts over E_local = E / 2 + 1 local ones.
  int64_t local_experts() const { return mapped ? experts / 2 + 1 : experts; }
  std::string name() const {
    return std::string(dtype_name(dtype)) + "_" + name_of(activation) + "_T" +
           std::to_string(tokens) + "_k" + std::to_string(k) + "_E" + std::to_string(experts) +
           (vec_shape ? "_vec" : "_scalar") + (mapped ? "_map" : "") +
           (grouped ? (x_pad() == 8 ? "_grouped" : "_grouped_xpad3") : "");
  }
  int64_t x_pad() const { return vec_shape && !(grouped && tokens == 7) ? 8 : 3; }
};

class MoeCuda : public ::testing::TestWithParam<Case> {};

TEST_P(MoeCuda, MatchesReferenceSkippingBadPicks) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  if (c.grouped && testing::gpu_major() != 9) GTEST_FAIL() << "the grouped path needs Hopper";
  const testing::ScopedEnv force("KILN_FUSED_MOE", c.grouped ? "grouped" : nullptr);
  const int64_t T = c.tokens, H = c.hidden(), I = c.inter(), E = c.experts;
  const int64_t EL = c.local_experts(), rows13 = c.activation == MoeActivation::relu2 ? I : 2 * I;
  std::mt19937_64 rng(T * 31 + c.k * 7 + E);
  HostTensor x(c.dtype, {T, H}, H + c.x_pad()), w13(c.dtype, {EL, rows13, H}),
      w2(c.dtype, {EL, H, I});
  x.randn(rng);
  w13.randn(rng, 0.0, 1.0 / std::sqrt(static_cast<double>(H)));  // outputs of order 1
  w2.randn(rng, 0.0, 1.0 / std::sqrt(static_cast<double>(I)));
  HostTensor weights(DType::f32, {T, c.k}), ids(DType::i32, {T, c.k}), map(DType::i32, {E});
  std::uniform_int_distribution<int64_t> pick(0, E - 1);
  std::uniform_real_distribution<double> unit(0.1, 1.0);
  for (int64_t e = 0; e < E; ++e) {  // -1 on every third expert, 99 (out of range) on expert 1
    map.set(0, e, e % 3 == 2 ? -1 : (e == 1 ? 99 : e % EL));
  }
  // The reference's inputs: bad picks made valid, with weight 0.
  HostTensor ref_weights = weights, ref_ids = ids, ref_map = map;
  int64_t bad_picks = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < c.k; ++j) {
      int64_t id = pick(rng);
      if ((t * c.k + j) % 5 == 3) id = (t + j) % 2 ? E : -3;  // outside [0, E)
      const double w = unit(rng);
      ids.set(t, j, static_cast<double>(id));
      weights.set(t, j, w);
      const bool bad = id < 0 || id >= E || (c.mapped && id == 1);
      bad_picks += bad;
      ref_ids.set(t, j, bad ? 0.0 : static_cast<double>(id));
      ref_weights.set(t, j, bad ? 0.0 : w);
    }
  }
  ref_map.set(0, 1, 0);  // its picks already have weight 0
  HostTensor no_bad(DType::i32, {1});
  no_bad.set(0, 0, 0);
  Mirrored dx(x), dw13(w13), dw2(w2), dweights(weights), dids(ids), dmap(map),
      dout(HostTensor(c.dtype, {T, H})), dbad(no_bad);
  for (Mirrored* m : {&dx, &dw13, &dw2, &dweights, &dids, &dmap, &dbad}) m->upload();
  dout.poison();
  fused_moe(dout.view(), dx.view(), dw13.view(), dw2.view(), dweights.view(), dids.view(),
            c.activation, c.mapped ? dmap.view() : TensorView(), dbad.view());
  EXPECT_EQ(last_receipt().backend, "cuda");
  const std::string variant = last_receipt().variant;
  // From kGroupedMinEntries picks on, shapes the grouped GEMM takes go the prefill path.
  if (c.grouped ||
      (c.vec_shape && T * c.k >= cuda::kGroupedMinEntries && testing::gpu_major() == 9)) {
    EXPECT_EQ(variant.rfind("fused_moe_grouped<", 0), 0u) << variant;
  } else {
    EXPECT_EQ(variant.rfind("fused_moe_gemv<", 0), 0u) << variant;
    EXPECT_NE(variant.find(c.vec_shape ? ",up_vec,down_vec>" : ",up_scalar,down_scalar>"),
              std::string::npos)
        << variant;
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "fused_moe");
  dout.download();
  dbad.download();
  EXPECT_EQ(dbad.host.at(0, 0), static_cast<double>(bad_picks)) << "bad picks counted";
  HostTensor want(c.dtype, {T, H}), ref_bad(no_bad);
  fused_moe(want.view(), x.view(), w13.view(), w2.view(), ref_weights.view(), ref_ids.view(),
            c.activation, c.mapped ? ref_map.view() : TensorView(), ref_bad.view());
  testing::expect_close(dout.host, want, c.dtype == DType::bf16 ? 2e-2 : 1e-2, "out");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (MoeActivation a : {MoeActivation::swiglu, MoeActivation::gelu_tanh,
                            MoeActivation::gelu_erf, MoeActivation::relu2}) {
      for (int64_t tokens : {1, 7, 300}) {
        // 300 tokens: only in the full sweep (each case is ~60 M float64 MACs of reference).
        if (tokens == 300 && testing::quick_sweep()) continue;
        for (int64_t k : {1, 2, 8}) {
          const int64_t experts = k == 1 ? 4 : (k == 2 ? 13 : 16);
          for (bool vec : {true, false}) {
            for (bool mapped : {false, true}) {
              cases.push_back({dtype, a, tokens, k, experts, vec, mapped});
              if (vec && tokens < 300 && testing::gpu_major() == 9) {
                cases.push_back({dtype, a, tokens, k, experts, vec, mapped, true});
              }
            }
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, MoeCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
