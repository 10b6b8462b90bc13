// CUDA kv_cache_write against the reference: bf16/f16 caches bit-exact, e4m3 caches (per-tensor
// and per-head scales) within one e4m3 step, the bad-slot count equal; padding and bad slots mixed
// in, untouched slots keep their bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/kv_cache.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;

enum class Cache { same, fp8_tensor, fp8_head };

struct Case {
  DType dtype;
  Cache cache;
  bool slots64;
  int64_t tokens, heads, dim;
  std::string name() const {
    const char* cs[] = {"same", "fp8t", "fp8h"};
    return std::string(dtype_name(dtype)) + "_" + cs[static_cast<int>(cache)] +
           (slots64 ? "_i64" : "_i32") + "_T" + std::to_string(tokens) + "_H" +
           std::to_string(heads) + "_D" + std::to_string(dim);
  }
};

class KvCacheCuda : public ::testing::TestWithParam<Case> {};

TEST_P(KvCacheCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.tokens * 11 + c.heads * 7 + c.dim);
  const int64_t block_size = 16, blocks = (c.tokens + block_size - 1) / block_size + 2;
  const DType cdt = c.cache == Cache::same ? c.dtype : DType::f8e4m3;
  HostTensor k_h(c.dtype, {c.tokens, c.heads, c.dim}), v_h(c.dtype, {c.tokens, c.heads, c.dim});
  k_h.randn(rng, 0.0, 50.0);
  v_h.randn(rng, 0.0, 50.0);
  // Distinct slots (a permutation of the cache), some padding (-1) and some past the end.
  std::vector<int64_t> perm(blocks * block_size);
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int64_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int64_t> slots(c.tokens);
  for (int64_t t = 0; t < c.tokens; ++t) {
    slots[t] = t % 7 == 3 ? -1 : t % 11 == 5 ? blocks * block_size + t : perm[t];
  }
  std::vector<int32_t> slots32(slots.begin(), slots.end());
  std::vector<float> scale =
      c.cache == Cache::fp8_head ? std::vector<float>(c.heads, 0.0f) : std::vector<float>{0.2f};
  for (size_t h = 0; h < scale.size() && c.cache == Cache::fp8_head; ++h)
    scale[h] = 0.05f * (h + 1);
  const bool fp8 = c.cache != Cache::same;
  DeviceBuffer slots_d(Device::cuda(0), c.tokens * 8), scale_d(Device::cuda(0), scale.size() * 4),
      bad_d(Device::cuda(0), 4);
  slots_d.upload(c.slots64 ? static_cast<void*>(slots.data()) : slots32.data(),
                 c.tokens * (c.slots64 ? 8 : 4));
  scale_d.upload(scale.data(), scale.size() * 4);
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  HostTensor kc_h(cdt, {blocks, block_size, c.heads, c.dim}),
      vc_h(cdt, {blocks, block_size, c.heads, c.dim});
  for (auto* t : {&kc_h, &vc_h}) {
    for (auto& b : t->bytes) b = static_cast<uint8_t>(rng() & 0x3f);  // prior contents, finite
  }
  Mirrored k(k_h), v(v_h), kc(kc_h), vc(vc_h);
  for (Mirrored* m : {&k, &v, &kc, &vc}) m->upload();
  const DType sdt = c.slots64 ? DType::i64 : DType::i32;
  const int64_t ns = static_cast<int64_t>(scale.size());
  kv_cache_write(kc.view(), vc.view(), k.view(), v.view(),
                 TensorView(slots_d.data(), sdt, Device::cuda(0), {c.tokens}),
                 fp8 ? TensorView(scale_d.data(), DType::f32, Device::cuda(0), {ns}) : TensorView(),
                 TensorView(bad_d.data(), DType::i32, Device::cuda(0), {1}));
  int32_t bad_ref = 0;
  kv_cache_write(kc_h.view(), vc_h.view(), k_h.view(), v_h.view(),
                 TensorView(c.slots64 ? static_cast<void*>(slots.data()) : slots32.data(), sdt,
                            Device::cpu(), {c.tokens}),
                 fp8 ? TensorView(scale.data(), DType::f32, Device::cpu(), {ns}) : TensorView(),
                 TensorView(&bad_ref, DType::i32, Device::cpu(), {1}));
  testing::cuda_ok(cudaDeviceSynchronize(), "kv_cache_write");
  kc.download();
  vc.download();
  int32_t bad = -1;
  bad_d.download(&bad, 4);
  EXPECT_EQ(bad, bad_ref);
  if (!fp8) {
    EXPECT_EQ(kc.host.bytes, kc_h.bytes);
    EXPECT_EQ(vc.host.bytes, vc_h.bytes);
  } else {
    testing::expect_close(kc.host, kc_h, 1.0 / 16, "key_cache");
    testing::expect_close(vc.host, vc_h, 1.0 / 16, "value_cache");
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (Cache cache : {Cache::same, Cache::fp8_tensor, Cache::fp8_head}) {
      for (bool slots64 : {false, true}) {
        for (int64_t tokens : testing::sweep_rows()) {
          for (auto [heads, dim] : {std::pair<int64_t, int64_t>{1, 64}, {8, 128}, {3, 7}}) {
            cases.push_back({dtype, cache, slots64, tokens, heads, dim});
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, KvCacheCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
