// CUDA topk against the reference, exactly (values and indices bit for bit): E up to 1024, k from
// 1 to min(E, 32), every dtype, f32 or scores-dtype values, softmax on and off, rows with ties
// (scores drawn from a few levels: many ties at the threshold, so warp_topk's register rounds run
// as well as its compacted rounds) and NaNs (without softmax); rows padded apart, so E = 256 also
// takes the strided loads; outputs poisoned before each run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/topk.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

struct Case {
  DType dtype;
  bool f32_values, softmax, ties;
  int64_t rows, experts, k;
  int64_t pad = 0;  // scores rows pad elements apart beyond E: the strided path where E alone
                    // would take the run layout (vector loads)
  std::string name() const {
    return std::string(dtype_name(dtype)) + (f32_values ? "_v32" : "_v") +
           (softmax ? "_softmax" : "") + (ties ? "_ties" : "") + "_T" + std::to_string(rows) +
           "_E" + std::to_string(experts) + "_k" + std::to_string(k) +
           (pad ? "_pad" + std::to_string(pad) : "");
  }
};

class TopkCuda : public ::testing::TestWithParam<Case> {};

TEST_P(TopkCuda, MatchesReferenceExactly) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.rows * 7 + c.experts * 3 + c.k);
  const int64_t width = c.experts + c.pad;
  HostTensor scores_h(c.dtype, {c.rows, width});
  scores_h.randn(rng);
  if (c.ties) {  // a few levels, so many equal scores per row; and a NaN in some rows (not with
                 // softmax: a NaN pick makes every weight NaN, which no tolerance compares)
    std::uniform_int_distribution<int> level(0, 3);
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t e = 0; e < width; ++e) scores_h.set(r, e, level(rng) * 0.5);
      if (!c.softmax && r % 3 == 0) scores_h.set(r, (r * 13) % c.experts, NAN);
    }
  }
  const DType vdt = c.f32_values ? DType::f32 : c.dtype;
  Mirrored scores(scores_h), values(HostTensor(vdt, {c.rows, c.k})),
      indices(HostTensor(DType::i32, {c.rows, c.k}));
  scores.upload();
  values.poison();
  indices.poison();
  // [rows, E] of the [rows, E + pad] buffer.
  const int64_t sizes[2] = {c.rows, c.experts}, strides[2] = {width, 1};
  auto narrow = [&](const TensorView& full) {
    return TensorView(full.data, full.dtype, full.device, sizes, strides);
  };
  topk(values.view(), indices.view(), narrow(scores.view()), c.k, c.softmax);
  testing::cuda_ok(cudaDeviceSynchronize(), "topk");
  values.download();
  indices.download();
  HostTensor want_v(vdt, {c.rows, c.k}), want_i(DType::i32, {c.rows, c.k});
  topk(want_v.view(), want_i.view(), narrow(scores_h.view()), c.k, c.softmax);
  EXPECT_EQ(indices.host.bytes, want_i.bytes) << "indices";
  if (c.softmax) {
    testing::expect_close(values.host, want_v, vdt == DType::f32 ? 1e-5 : 1e-2, "softmax values");
  } else {
    // The picked scores themselves: the same bits (NaN as NaN).
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t j = 0; j < c.k; ++j) {
        const double g = values.host.at(r, j), w = want_v.at(r, j);
        ASSERT_TRUE(g == w || (std::isnan(g) && std::isnan(w))) << r << ", " << j;
      }
    }
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (int64_t experts : {1, 7, 32, 33, 64, 256, 1000, 1024}) {
      std::vector<int64_t> ks{1, 2, 8, 32};
      if (experts <= 32 && std::find(ks.begin(), ks.end(), experts) == ks.end()) {
        ks.push_back(experts);  // k = E
      }
      for (int64_t k : ks) {
        if (k > experts) continue;
        for (bool softmax : {false, true}) {
          for (bool ties : {false, true}) {
            for (int64_t rows : testing::sweep_rows()) {
              cases.push_back(
                  {dtype, dtype == DType::f32 || softmax, softmax, ties, rows, experts, k});
            }
          }
        }
      }
    }
  }
  for (int64_t pad : {1, 4}) {  // E = 256: the strided path on a shape the run layout takes
    for (bool ties : {false, true}) {
      cases.push_back({DType::f32, true, false, ties, 1000, 256, 8, pad});
      cases.push_back({DType::bf16, false, false, ties, 1000, 256, 8, pad});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, TopkCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
