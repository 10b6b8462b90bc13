// The grouped expert GEMM (wgmma + TMA, Hopper only) against a float64 loop over row blocks:
// bf16 and f16; plain, plain + relu2, gated swiglu / gelu_tanh; with and without per-row scales;
// K a multiple of 64 and not (TMA zero-fills the tail); N a multiple of 128 and not; each on the
// default tile and every forced one (KILN_GROUPED_GEMM_TILE; the receipt must name the tile that
// ran); row blocks of every expert in runs of 1, 2 and 10 blocks, one block skipped (expert -1,
// its rows must stay untouched), a rows_used limit that skips the last block, and per-block row
// counts (blocks of 50, 64 (the second warpgroup idles) and 100 rows). Outputs poisoned first: the
// rows not to be written must still be NaN. FP8 (e4m3 A and B with 1 x 128 and 128 x 128 scales,
// bf16 out) against the float64 loop over the dequantized values, on the 128 x 128 tiles.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "cuda/moe/grouped_gemm_launch.h"
#include "ops/activation_math.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

struct Case {
  DType dtype;
  bool gated, activate, scaled;
  act::Kind kind;
  int64_t k, n;
  std::string tile;  // KILN_GROUPED_GEMM_TILE
  std::string name() const {
    return std::string(dtype_name(dtype)) +
           (gated      ? "_gated_"
            : activate ? "_act_"
                       : "_plain_") +
           act::kind_name(kind) + (scaled ? "_scaled" : "") + "_K" + std::to_string(k) + "_N" +
           std::to_string(n) + "_" + tile;
  }
};

class GroupedGemmCuda : public ::testing::TestWithParam<Case> {};

TEST_P(GroupedGemmCuda, MatchesFloat64Loop) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  if (testing::gpu_major() != 9) GTEST_FAIL() << "the grouped GEMM kernel needs a Hopper GPU";
  std::mt19937_64 rng(std::hash<std::string>{}(c.name()));
  // Runs of 2, 1 and 10 blocks (the CTA order goes by runs, in chunks of 8); block 3 is not held
  // here, the last block (partial) lies past the used rows.
  const std::vector<int32_t> block_expert = {2, 2, 0, -1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2};
  const std::vector<int32_t> block_rows = {128, 50,  128, 128, 64,  128, 128, 128,
                                           128, 128, 128, 128, 128, 100, 128};
  const int64_t experts = 3, blocks = 15, rows = 128 * blocks - 37;
  const int32_t rows_used = 128 * 14;
  const bool fp8 = c.dtype == DType::f8e4m3;
  const DType out_dtype = fp8 ? DType::bf16 : c.dtype;
  const int64_t kb = (c.k + 127) / 128, nb = (c.n + 127) / 128;
  HostTensor a(c.dtype, {rows, c.k}), b(c.dtype, {experts * c.n, c.k}), scale(DType::f32, {rows}),
      a_scale(DType::f32, {rows, kb}), b_scale(DType::f32, {experts * nb, kb});
  // FP8: values of order 1 and scales that keep the sums of order 1 (1 x 128 for A, 128 x 128
  // for B, every block its own).
  a.randn(rng, 0.0, fp8 ? 1.0 : 0.5);
  b.randn(rng, 0.0, fp8 ? 1.0 : 0.5);
  scale.randn(rng, 1.0, 0.5);
  std::uniform_real_distribution<double> spread(0.5, 1.5);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kb; ++j) a_scale.set(r, j, spread(rng));
  for (int64_t r = 0; r < experts * nb; ++r)
    for (int64_t j = 0; j < kb; ++j)
      b_scale.set(r, j, spread(rng) / std::sqrt(static_cast<double>(c.k)));
  const int64_t width = c.gated ? c.n / 2 : c.n;
  Mirrored da(a), db(b), ds(scale), das(a_scale), dbs(b_scale),
      out(HostTensor(out_dtype, {rows, width}));
  das.upload();
  dbs.upload();
  HostTensor ids(DType::i32, {blocks}), counts(DType::i32, {blocks}), used(DType::i32, {1});
  std::memcpy(ids.bytes.data(), block_expert.data(), blocks * 4);
  std::memcpy(counts.bytes.data(), block_rows.data(), blocks * 4);
  std::memcpy(used.bytes.data(), &rows_used, 4);
  Mirrored dids(ids), dcounts(counts), dused(used);
  for (Mirrored* m : {&da, &db, &ds, &dids, &dcounts, &dused}) m->upload();
  out.poison();

  cuda::GroupedGemm p;
  p.dtype = c.dtype;
  p.a = da.dev.data();
  p.rows = rows;
  p.k = c.k;
  p.a_stride = c.k;
  p.b = db.dev.data();
  p.experts = experts;
  p.n = c.n;
  p.block_expert = static_cast<const int32_t*>(dids.dev.data());
  p.block_rows = static_cast<const int32_t*>(dcounts.dev.data());
  p.rows_used = static_cast<const int32_t*>(dused.dev.data());
  p.row_scale = c.scaled ? static_cast<const float*>(ds.dev.data()) : nullptr;
  p.out = out.dev.data();
  p.out_stride = width;
  p.gated = c.gated;
  p.activate = c.activate;
  p.kind = c.kind;
  if (fp8) {
    p.out_dtype = out_dtype;
    p.a_scale = static_cast<const float*>(das.dev.data());
    p.a_scale_stride = kb;
    p.b_scale = static_cast<const float*>(dbs.dev.data());
  }
  std::string variant;
  {
    const testing::ScopedEnv force("KILN_GROUPED_GEMM_TILE",
                                   c.tile != "default" ? c.tile.c_str() : nullptr);
    variant = cuda::grouped_gemm_sm90(p, nullptr);
  }
  ASSERT_NE(variant, "") << "the kernel refused the problem";
  const bool wide_ok = !fp8 && (c.gated ? (c.n / 2) % 128 == 0 : c.n >= 256);
  // The default: gated wide where it can, plain two CTAs per SM; a forced wide tile the columns
  // do not allow gets the default.
  // FP8 takes the n128 tile with 128-element K slices, whatever is forced.
  const std::string k_slice = fp8 ? ",k128" : ",k64";
  const std::string narrow = ",n128" + k_slice + ",stages4",
                    narrow2 = ",n128" + k_slice + ",stages3,ctas2";
  const std::string fallback = !c.gated ? narrow2 : (wide_ok ? ",n256,k64,stages4" : narrow);
  std::string shape = fallback;
  if (c.tile == "n128") shape = narrow;
  if (c.tile == "n128x2") shape = narrow2;
  if (c.tile == "n256" && wide_ok) shape = ",n256,k64,stages4";
  if (fp8) shape = narrow;  // whatever was asked for
  EXPECT_NE(variant.find(shape), std::string::npos) << variant;
  EXPECT_EQ(variant.find("<e4m3->bf16,") != std::string::npos, fp8) << variant;
  testing::cuda_ok(cudaDeviceSynchronize(), "grouped_gemm_sm90");
  out.download();

  const double tol = out_dtype == DType::bf16 ? 2e-2 : 4e-3;
  int misses = 0;
  for (int64_t r = 0; r < rows && misses < 5; ++r) {
    const int expert = block_expert[r / 128];
    const bool skipped = expert < 0 || r >= rows_used || r % 128 >= block_rows[r / 128];
    const double s = c.scaled ? scale.at(0, r) : 1.0;
    auto dot = [&](int64_t col) {
      double sum = 0;
      if (!fp8) {
        for (int64_t i = 0; i < c.k; ++i) sum += a.at(r, i) * b.at(expert * c.n + col, i);
        return sum;
      }
      for (int64_t i = 0; i < c.k; ++i) {
        sum += a.at(r, i) * a_scale.at(r, i / 128) * b.at(expert * c.n + col, i) *
               b_scale.at(expert * nb + col / 128, i / 128);
      }
      return sum;
    };
    for (int64_t col = 0; col < width && misses < 5; ++col) {
      const double got = out.host.at(r, col);
      if (skipped) {
        if (!std::isnan(got)) {
          ADD_FAILURE() << "row " << r << " (skipped block) was written: " << got;
          ++misses;
        }
        continue;
      }
      double want = 0;
      if (c.gated) {
        want = act::forward<double>(c.kind, dot(col), dot(c.n / 2 + col)) * s;
      } else {
        want = (c.activate ? act::forward<double>(c.kind, dot(col), 0.0) : dot(col)) * s;
      }
      if (!(std::abs(got - want) <= tol * (1 + std::abs(want)))) {
        ADD_FAILURE() << "out(" << r << ", " << col << "): got " << got << ", want " << want;
        ++misses;
      }
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const char* tile : {"default", "n128", "n128x2", "n256"}) {
    for (DType dt : {DType::bf16, DType::f16}) {
      all.push_back({dt, false, false, false, act::Kind::swiglu, 256, 256, tile});
      all.push_back({dt, false, false, true, act::Kind::swiglu, 200, 200, tile});  // K, N tails
      all.push_back({dt, false, true, true, act::Kind::relu2, 320, 128, tile});
      all.push_back({dt, true, false, false, act::Kind::swiglu, 256, 256, tile});
      all.push_back({dt, true, false, true, act::Kind::gelu_tanh, 136, 384, tile});
      all.push_back({dt, false, false, true, act::Kind::swiglu, 192, 600, tile});  // N tail
      all.push_back({dt, true, false, true, act::Kind::swiglu, 448, 512, tile});
    }
  }
  // FP8 (e4m3 in, bf16 out): K a multiple of 16 (208: a partial last 128-slice), N tails, gated
  // and plain; every forced tile must run n128.
  for (const char* tile : {"default", "n128", "n128x2", "n256"}) {
    const DType f8 = DType::f8e4m3;
    all.push_back({f8, false, false, false, act::Kind::swiglu, 256, 256, tile});
    all.push_back({f8, false, false, true, act::Kind::swiglu, 208, 200, tile});
    all.push_back({f8, false, true, true, act::Kind::relu2, 320, 128, tile});
    all.push_back({f8, true, false, false, act::Kind::swiglu, 256, 256, tile});
    all.push_back({f8, true, false, true, act::Kind::gelu_tanh, 448, 384, tile});
    all.push_back({f8, true, false, true, act::Kind::swiglu, 192, 640, tile});
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Shapes, GroupedGemmCuda, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
