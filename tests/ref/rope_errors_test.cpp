// rope and rope_backward reject every bad input with a kiln::Error naming the op, the argument,
// what was expected and what was given.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/rope.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

// A valid call (T = 2, Hq = 2, Hk = 1, D = 8, R = 8, f32) whose arguments a test breaks one at
// a time.
struct Call {
  HostTensor q{DType::f32, {2, 2, 8}}, k{DType::f32, {2, 1, 8}};
  HostTensor q_out{DType::f32, {2, 2, 8}}, k_out{DType::f32, {2, 1, 8}};
  HostTensor cache_t{DType::f32, {16, 8}};
  std::vector<int64_t> pos = {0, 1};
  int32_t bad = 0;
  TensorView vq = q.view(), vk = k.view(), vq_out = q_out.view(), vk_out = k_out.view();
  TensorView cache = cache_t.view();
  TensorView positions{pos.data(), DType::i64, Device::cpu(), {2}};
  TensorView counter{&bad, DType::i32, Device::cpu(), {1}};
  int64_t rotary_dim = 8;

  void forward() {
    rope(vq_out, vk_out, vq, vk, cache, positions, RopeLayout::neox, rotary_dim, counter);
  }
  void backward() {
    rope_backward(vq_out, vk_out, vq, vk, cache, positions, RopeLayout::gptj, rotary_dim, counter);
  }
};

void expect_forward_error(const std::function<void(Call&)>& breakage, const std::string& what) {
  Call c;
  breakage(c);
  expect_error([&] { c.forward(); }, what);
}

TensorView with_dtype(TensorView t, DType d) {
  t.dtype = d;
  return t;
}

TEST(RopeRef, ValidCallRuns) {
  Call c;
  c.forward();
  c.backward();
  EXPECT_EQ(c.bad, 0);
}

TEST(RopeRef, BadQAndKAreReported) {
  std::vector<int32_t> words(64);
  expect_forward_error([](Call& c) { c.vq = TensorView(); },
                       "rope: argument 'q': expected a tensor");
  expect_forward_error(
      [](Call& c) {
        c.vq = c.q_out.view();
        c.vq.rank = 2;
      },
      "rope: argument 'q': expected rank 3 ([T, Hq, D]), got shape [2, 2]");
  expect_forward_error(
      [&](Call& c) {
        c.vq = TensorView(words.data(), DType::i32, Device::cpu(), {2, 2, 8});
      },
      "rope: argument 'q': expected dtype in {f32, bf16, f16}, got i32");
  expect_forward_error([](Call& c) { c.vk = with_dtype(c.vk, DType::bf16); },
                       "rope: argument 'k': expected dtype f32, got bf16");
  HostTensor k3(DType::f32, {3, 1, 8}), k_wide(DType::f32, {2, 1, 16});
  expect_forward_error(
      [&](Call& c) { c.vk = k3.view(); },
      "rope: argument 'k': expected shape [2, 1, 8] ([T, H, D]), got shape [3, 1, 8]");
  expect_forward_error(
      [&](Call& c) { c.vk = k_wide.view(); },
      "rope: argument 'k': expected shape [2, 1, 8] ([T, H, D]), got shape [2, 1, 16]");
  expect_forward_error([](Call& c) { c.vk.device = Device::cuda(0); },
                       "rope: argument 'k': expected a tensor on cpu, got one on cuda:0");
  expect_forward_error([](Call& c) { c.vk_out = TensorView(); },
                       "rope: argument 'k_out': expected a tensor, got absent");
  expect_forward_error([](Call& c) { c.vq_out = c.k_out.view(); },
                       "rope: argument 'q_out': expected shape [2, 2, 8], got shape [2, 1, 8]");
  HostTensor wide(DType::f32, {2, 2, 16});
  expect_forward_error(
      [&](Call& c) {
        const int64_t sizes[3] = {2, 2, 8}, strides[3] = {32, 16, 2};
        c.vq = TensorView(wide.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
      },
      "rope: argument 'q': expected a contiguous last dim (stride 1), got stride 2");
  expect_forward_error(
      [](Call& c) {
        const int64_t sizes[3] = {2, 2, 8}, strides[3] = {8, 4, 1};  // heads overlap
        c.vq_out = TensorView(c.q_out.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
      },
      "rope: argument 'q_out': expected tokens and heads that do not overlap");
  expect_forward_error(
      [](Call& c) {
        const int64_t sizes[3] = {2, 2, 8}, strides[3] = {8, 16, 1};  // heads-major is fine...
        c.vq_out = TensorView(c.q_out.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
        c.vq = c.vq_out;
        c.vq.strides = {16, 8, 1};  // ...but in place needs q's own strides
      },
      "rope: argument 'q_out': expected the same view as q (in place) or other memory");
}

TEST(RopeRef, BadRotaryDimCacheAndPositionsAreReported) {
  for (int64_t r : {int64_t{0}, int64_t{5}, int64_t{10}}) {
    expect_forward_error([&](Call& c) { c.rotary_dim = r; },
                         "rope: argument 'rotary_dim': expected an even value in [2, D = 8], got " +
                             std::to_string(r));
  }
  expect_forward_error([](Call& c) { c.rotary_dim = 4; },
                       "rope: argument 'cos_sin_cache': expected a contiguous [max_position, "
                       "rotary_dim = 4] (cos | sin), got shape [16, 8]");
  expect_forward_error([](Call& c) { c.cache = with_dtype(c.cache, DType::bf16); },
                       "rope: argument 'cos_sin_cache': expected dtype in {f32}, got bf16");
  expect_forward_error(
      [](Call& c) {
        c.cache.strides = {1, 16};
      },
      "rope: argument 'cos_sin_cache': expected a contiguous [max_position, "
      "rotary_dim = 8] (cos | sin), got shape [16, 8] (not contiguous)");
  expect_forward_error([](Call& c) { c.cache.device = Device::cuda(0); },
                       "rope: argument 'cos_sin_cache': expected a tensor on cpu");
  expect_forward_error([](Call& c) { c.positions = with_dtype(c.positions, DType::i32); },
                       "rope: argument 'positions': expected dtype in {i64}, got i32");
  expect_forward_error([](Call& c) { c.positions.sizes[0] = 3; },
                       "rope: argument 'positions': expected shape [2], got shape [3]");
  expect_forward_error([](Call& c) { c.positions = TensorView(); },
                       "rope: argument 'positions': expected a tensor, got absent");
}

// An absent counter is a call that asks for no count: bad positions are still never read and
// leave their token as it is (copied through, out of place).
TEST(RopeRef, AbsentCounterCountsNothingAndStillSkipsBadPositions) {
  Call c;
  std::mt19937_64 rng(5);
  c.q.randn(rng);
  c.k.randn(rng);
  c.q_out.poison();
  c.k_out.poison();
  c.pos = {3, 16};  // token 1's position is past the cache's 16 rows
  c.counter = TensorView();
  c.forward();
  for (int64_t e = 0; e < 8; ++e) {  // rows: q [T * Hq, D], k [T * Hk, D]
    EXPECT_EQ(c.q_out.at(2, e), c.q.at(2, e)) << e;
    EXPECT_EQ(c.q_out.at(3, e), c.q.at(3, e)) << e;
    EXPECT_EQ(c.k_out.at(1, e), c.k.at(1, e)) << e;
  }
  EXPECT_EQ(c.bad, 0);
}

TEST(RopeRef, BadCounterIsReported) {
  expect_forward_error([](Call& c) { c.counter = with_dtype(c.counter, DType::i64); },
                       "rope: argument 'bad_positions': expected dtype in {i32}, got i64");
  expect_forward_error([](Call& c) { c.counter.sizes[0] = 2; },
                       "rope: argument 'bad_positions': expected shape [1], got shape [2]");
  expect_forward_error([](Call& c) { c.counter.device = Device::cuda(0); },
                       "rope: argument 'bad_positions': expected a tensor on cpu");
}

TEST(RopeRef, BackwardNamesItsOwnArguments) {
  Call c;
  c.vq = with_dtype(c.vq, DType::u8);
  expect_error([&] { c.backward(); }, "rope_backward: argument 'dq_out': expected dtype in");
  Call d;
  d.vk_out = d.q_out.view();
  expect_error([&] { d.backward(); }, "rope_backward: argument 'dk': expected shape [2, 1, 8]");
}

}  // namespace
}  // namespace kiln
