// CUDA tau_tail against the reference over tokens, heads, head dims (aligned and not), dtypes,
// parameter dtypes and position dtypes, with out-of-range positions mixed in.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/tau_tail.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;

struct Case {
  DType dtype;
  bool f32_params, pos64;
  int64_t tokens, heads, dim;
  std::string name() const {
    return std::string(dtype_name(dtype)) + (f32_params ? "_p32" : "_p") +
           (pos64 ? "_i64" : "_i32") + "_T" + std::to_string(tokens) + "_H" +
           std::to_string(heads) + "_D" + std::to_string(dim);
  }
};

class TauTailCuda : public ::testing::TestWithParam<Case> {};

TEST_P(TauTailCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.tokens * 5 + c.heads * 3 + c.dim);
  const DType pdt = c.f32_params ? DType::f32 : c.dtype;
  const int64_t rows = 64;
  HostTensor qkv_h(c.dtype, {c.tokens, 3 * c.heads * c.dim}), tok_h(pdt, {c.tokens, 2 * c.heads});
  HostTensor table_h(pdt, {rows, c.heads});
  qkv_h.randn(rng);
  tok_h.randn(rng);
  table_h.randn(rng);
  std::vector<int64_t> pos(c.tokens);
  std::uniform_int_distribution<int64_t> pick(-1, rows);
  for (auto& p : pos) p = pick(rng);
  std::vector<int32_t> pos32(pos.begin(), pos.end());
  const DType idt = c.pos64 ? DType::i64 : DType::i32;
  const size_t pbytes = c.tokens * (c.pos64 ? 8 : 4);
  DeviceBuffer pos_d(Device::cuda(0), pbytes), bad_d(Device::cuda(0), 4);
  pos_d.upload(c.pos64 ? static_cast<void*>(pos.data()) : pos32.data(), pbytes);
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  Mirrored qkv(qkv_h), tok(tok_h), table(table_h);
  for (Mirrored* m : {&qkv, &tok, &table}) m->upload();
  tau_tail(qkv.view(), tok.view(), table.view(),
           TensorView(pos_d.data(), idt, Device::cuda(0), {c.tokens}), c.heads,
           TensorView(bad_d.data(), DType::i32, Device::cuda(0), {1}));
  int32_t bad_ref = 0;
  tau_tail(qkv_h.view(), tok_h.view(), table_h.view(),
           TensorView(c.pos64 ? static_cast<void*>(pos.data()) : pos32.data(), idt, Device::cpu(),
                      {c.tokens}),
           c.heads, TensorView(&bad_ref, DType::i32, Device::cpu(), {1}));
  testing::cuda_ok(cudaDeviceSynchronize(), "tau_tail");
  qkv.download();
  int32_t bad = -1;
  bad_d.download(&bad, 4);
  EXPECT_EQ(bad, bad_ref);
  const double tol = c.dtype == DType::f32 ? 1e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  testing::expect_close(qkv.host, qkv_h, tol, "qkv");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::bf16, DType::f16, DType::f32}) {
    for (bool f32_params : {false, true}) {
      for (bool pos64 : {false, true}) {
        for (int64_t tokens : testing::sweep_rows()) {
          for (auto [heads, dim] : {std::pair<int64_t, int64_t>{1, 8}, {4, 64}, {8, 128}, {3, 7}}) {
            cases.push_back({dtype, f32_params, pos64, tokens, heads, dim});
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, TauTailCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
