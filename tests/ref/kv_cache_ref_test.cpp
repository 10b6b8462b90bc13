// The reference kv_cache_write: tokens land in their slots (block * block_size + offset), padding
// slots skip, slots past the cache are counted and never written, e4m3 caches hold x / scale
// (per tensor or per head, saturating), and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/kv_cache.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

struct Fixture {
  static constexpr int64_t tokens = 4, heads = 2, dim = 8, blocks = 3, block_size = 4;
  HostTensor k{DType::bf16, {tokens, heads, dim}}, v{DType::bf16, {tokens, heads, dim}};
  std::vector<int64_t> slots = {5, -1, 11, 12};  // 12 is past 3 x 4 slots
  int32_t bad = 0;
  Fixture() {
    std::mt19937_64 rng(1);
    k.randn(rng, 0.0, 100.0);
    v.randn(rng, 0.0, 100.0);
  }
  TensorView slot_view() { return TensorView(slots.data(), DType::i64, Device::cpu(), {tokens}); }
  TensorView bad_view() { return TensorView(&bad, DType::i32, Device::cpu(), {1}); }
  static HostTensor cache(DType dtype = DType::bf16) {
    return HostTensor(dtype, {blocks, block_size, heads, dim});
  }
};

TEST(KvCacheRef, TokensLandInTheirSlots) {
  Fixture f;
  HostTensor kc = f.cache(), vc = f.cache();
  const std::vector<uint8_t> untouched = kc.bytes;
  kv_cache_write(kc.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(), TensorView(),
                 f.bad_view());
  EXPECT_EQ(f.bad, 1);
  for (int64_t t : {0, 2}) {
    const int64_t slot = f.slots[t];
    for (int64_t e = 0; e < f.heads * f.dim; ++e) {
      EXPECT_EQ(kc.at(slot * f.heads + e / f.dim, e % f.dim),
                f.k.at(t * f.heads + e / f.dim, e % f.dim));
      EXPECT_EQ(vc.at(slot * f.heads + e / f.dim, e % f.dim),
                f.v.at(t * f.heads + e / f.dim, e % f.dim));
    }
  }
  // Every other slot keeps its bytes (the poison HostTensor starts with).
  size_t changed = 0;
  for (size_t i = 0; i < kc.bytes.size(); ++i) changed += kc.bytes[i] != untouched[i];
  EXPECT_LE(changed, size_t{2 * f.heads * f.dim * 2});
  EXPECT_EQ(last_receipt().op, "kv_cache_write");
}

TEST(KvCacheRef, Fp8CachesHoldScaledSaturatedValues) {
  Fixture f;
  for (bool per_head : {false, true}) {
    HostTensor kc = f.cache(DType::f8e4m3), vc = f.cache(DType::f8e4m3);
    std::vector<float> scale =
        per_head ? std::vector<float>{0.05f, 0.5f} : std::vector<float>{0.25f};
    f.bad = 0;
    kv_cache_write(
        kc.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(),
        TensorView(scale.data(), DType::f32, Device::cpu(), {static_cast<int64_t>(scale.size())}),
        f.bad_view());
    EXPECT_EQ(f.bad, 1);
    const int64_t slot = f.slots[0];
    for (int64_t e = 0; e < f.heads * f.dim; ++e) {
      const double s = per_head ? scale[e / f.dim] : scale[0];
      const double x = f.k.at(e / f.dim, e % f.dim) / s;
      const double want = std::copysign(std::min(std::abs(x), 448.0), x);
      // One e4m3 step is 1/8 of the value's power of two.
      EXPECT_NEAR(kc.at(slot * f.heads + e / f.dim, e % f.dim), want, std::abs(want) / 16 + 1e-3)
          << e;
    }
  }
}

TEST(KvCacheRef, BadInputIsReported) {
  Fixture f;
  HostTensor kc(DType::bf16, {3, 4, 2, 8}), vc(DType::bf16, {3, 4, 2, 8}),
      fp8(DType::f8e4m3, {3, 4, 2, 8});
  HostTensor wrong_heads(DType::bf16, {3, 4, 3, 8});
  float scale = 1.f;
  const TensorView s(&scale, DType::f32, Device::cpu(), {1});
  expect_error(
      [&] {
        kv_cache_write(wrong_heads.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(),
                       TensorView(), f.bad_view());
      },
      "kv_cache_write: argument 'key_cache': expected a contiguous [num_blocks, block_size, 2, 8]");
  expect_error(
      [&] {
        kv_cache_write(fp8.view(), fp8.view(), f.k.view(), f.v.view(), f.slot_view(), TensorView(),
                       f.bad_view());
      },
      "kv_cache_write: argument 'kv_scale'");
  expect_error(
      [&] {
        kv_cache_write(kc.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(), s,
                       f.bad_view());
      },
      "kv_cache_write: argument 'kv_scale': expected absent for a bf16 cache");
  expect_error(
      [&] {
        kv_cache_write(kc.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(), TensorView(),
                       TensorView(&f.slots[0], DType::i64, Device::cpu(), {1}));
      },
      "kv_cache_write: argument 'bad_slots': expected dtype in {i32}");
}

// An absent counter is a call that asks for no count: a slot past the cache is still never
// written.
TEST(KvCacheRef, AbsentCounterCountsNothingAndStillSkipsBadSlots) {
  Fixture f;
  HostTensor kc = f.cache(), vc = f.cache();
  const std::vector<uint8_t> untouched = kc.bytes;
  kv_cache_write(kc.view(), vc.view(), f.k.view(), f.v.view(), f.slot_view(), TensorView(),
                 TensorView());
  EXPECT_EQ(f.bad, 0);
  size_t changed = 0;  // slots 5 and 11 only (token 3's slot 12 is past the cache)
  for (size_t i = 0; i < kc.bytes.size(); ++i) changed += kc.bytes[i] != untouched[i];
  EXPECT_LE(changed, size_t{2 * f.heads * f.dim * 2});
  EXPECT_EQ(kc.at(5 * f.heads, 0), f.k.at(0, 0));
}

}  // namespace
}  // namespace kiln
