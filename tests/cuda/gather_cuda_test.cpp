// CUDA row gathers against the reference: bytes equal, the bad-index count equal, over row
// widths (every copy unit from 1 to 16 bytes), dtypes, index dtypes, single and pair, with
// out-of-range indices mixed in. Outputs NaN-poisoned.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/gather.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;

struct Case {
  bool pair, index64;
  DType dtype;
  int64_t n, m, width;  // width: elements a row
  std::string name() const {
    return std::string(pair ? "pair_" : "single_") + (index64 ? "i64_" : "i32_") +
           std::string(dtype_name(dtype)) + "_N" + std::to_string(n) + "_M" + std::to_string(m) +
           "_W" + std::to_string(width);
  }
};

class GatherCuda : public ::testing::TestWithParam<Case> {};

TEST_P(GatherCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.n * 7 + c.m * 13 + c.width);
  HostTensor k_h(c.dtype, {c.n, c.width}), v_h(DType::f32, {c.n, c.width + 1});
  for (auto* t : {&k_h, &v_h}) {
    for (auto& byte : t->bytes) byte = static_cast<uint8_t>(rng() & 0x7f);  // finite, not NaN
  }
  std::vector<int64_t> idx(c.m);
  std::uniform_int_distribution<int64_t> pick(-2, c.n + 1);  // some out of range
  for (auto& i : idx) i = pick(rng);
  std::vector<int32_t> idx32(idx.begin(), idx.end());
  const size_t ibytes = c.index64 ? idx.size() * 8 : idx32.size() * 4;
  DeviceBuffer index(Device::cuda(0), std::max<size_t>(ibytes, 8)), bad(Device::cuda(0), 4);
  if (ibytes) index.upload(c.index64 ? static_cast<void*>(idx.data()) : idx32.data(), ibytes);
  const int32_t zero = 0;
  bad.upload(&zero, 4);
  Mirrored k(k_h), v(v_h);
  Mirrored ok(HostTensor(c.dtype, {c.m, c.width})), ov(HostTensor(DType::f32, {c.m, c.width + 1}));
  k.upload();
  v.upload();
  ok.poison();
  ov.poison();
  const DType idt = c.index64 ? DType::i64 : DType::i32;
  const TensorView index_d(index.data(), idt, Device::cuda(0), {c.m});
  const TensorView bad_d(bad.data(), DType::i32, Device::cuda(0), {1});
  HostTensor rk(c.dtype, {c.m, c.width}), rv(DType::f32, {c.m, c.width + 1});
  int32_t bad_ref = 0;
  const TensorView index_h(c.index64 ? static_cast<void*>(idx.data()) : idx32.data(), idt,
                           Device::cpu(), {c.m});
  const TensorView bad_h(&bad_ref, DType::i32, Device::cpu(), {1});
  if (c.pair) {
    gather_rows_pair(ok.view(), ov.view(), k.view(), v.view(), index_d, bad_d);
    gather_rows_pair(rk.view(), rv.view(), k_h.view(), v_h.view(), index_h, bad_h);
  } else {
    gather_rows(ok.view(), k.view(), index_d, bad_d);
    gather_rows(rk.view(), k_h.view(), index_h, bad_h);
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "gather_rows");
  ok.download();
  int32_t bad_got = -1;
  bad.download(&bad_got, 4);
  EXPECT_EQ(bad_got, bad_ref);
  EXPECT_EQ(ok.host.bytes, rk.bytes);
  if (c.pair) {
    ov.download();
    EXPECT_EQ(ov.host.bytes, rv.bytes);
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (bool pair : {false, true}) {
    for (bool index64 : {false, true}) {
      for (DType dtype : {DType::bf16, DType::f32, DType::f8e4m3}) {
        for (int64_t m : {1, 7, 1000}) {
          for (int64_t width : {1, 3, 8, 64, 1024})
            cases.push_back({pair, index64, dtype, 50, m, width});
        }
      }
    }
  }
  // More rows than a grid dimension of 65535 blocks of 4 rows holds (16-byte rows).
  cases.push_back({false, false, DType::bf16, 50, 300000, 8});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, GatherCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
