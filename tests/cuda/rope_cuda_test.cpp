// CUDA rope / rope_backward against the reference over dtypes, both layouts, head dims 64 / 128 /
// 256 (and odd ones that take the scalar path), partial rotation, token counts from one up, and
// four storages: in place on strided q, k views of a fused qkv buffer (GQA), out of place from one
// fused buffer into another, out of place between contiguous tensors (GQA), in place on
// contiguous tensors. Positions are random with out-of-range ones mixed in; outputs are poisoned
// (NaN) before each out-of-place run, and the columns an op must not write (v, or the poisoned
// rest) are checked to the byte.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/rope.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;

enum class Storage { fused_in_place, fused_out_of_place, separate_out_of_place, separate_in_place };

const char* storage_name(Storage s) {
  switch (s) {
    case Storage::fused_in_place:
      return "fused_inplace";
    case Storage::fused_out_of_place:
      return "fused_out";
    case Storage::separate_out_of_place:
      return "separate_out";
    case Storage::separate_in_place:
      return "separate_inplace";
  }
  return "?";
}

bool fused(Storage s) {
  return s == Storage::fused_in_place || s == Storage::fused_out_of_place;
}
bool in_place(Storage s) {
  return s == Storage::fused_in_place || s == Storage::separate_in_place;
}

struct Case {
  DType dtype;
  RopeLayout layout;
  bool backward;
  Storage storage;
  int64_t tokens, hq, hk, dim, rotary;
  std::string name() const {
    return std::string(dtype_name(dtype)) + "_" + std::string(rope_layout_name(layout)) +
           (backward ? "_bwd_" : "_fwd_") + storage_name(storage) + "_T" + std::to_string(tokens) +
           "_H" + std::to_string(hq) + "x" + std::to_string(hk) + "_D" + std::to_string(dim) +
           "_R" + std::to_string(rotary);
  }
};

// q and k: in one fused [T, (Hq + 2 Hk) D] buffer (a), or in two contiguous ones (a = q, b = k).
struct QkStorage {
  bool fused;
  int64_t hq, hk, dim;
  Mirrored a, b;
  QkStorage(DType dtype, bool fused, int64_t t, int64_t hq, int64_t hk, int64_t d)
      : fused(fused),
        hq(hq),
        hk(hk),
        dim(d),
        a(HostTensor(dtype, {t, (fused ? hq + 2 * hk : hq) * d})),
        b(HostTensor(dtype, {t, fused ? 1 : hk * d})) {}
  // heads [first, first + n) of buffer m as [T, n, D], on the host or the device.
  TensorView heads(Mirrored& m, int64_t first, int64_t n, bool device) {
    const int64_t sizes[3] = {m.host.sizes[0], n, dim}, strides[3] = {m.host.cols(), dim, 1};
    char* base =
        device ? static_cast<char*>(m.dev.data()) : reinterpret_cast<char*>(m.host.bytes.data());
    return TensorView(base + first * dim * dtype_size(m.host.dtype), m.host.dtype,
                      device ? Device::cuda(0) : Device::cpu(), sizes, strides);
  }
  TensorView q(bool device) { return heads(a, 0, hq, device); }
  TensorView k(bool device) { return fused ? heads(a, hq, hk, device) : heads(b, 0, hk, device); }
  // Columns of buffer m holding q or k (the rest must be left as it was; a fused storage's b is
  // unused).
  int64_t qk_cols(const Mirrored& m) const {
    if (!fused) return m.host.cols();
    return &m == &a ? (hq + hk) * dim : 0;
  }
};

// Plain RoPE's cache (base 10000): row p = cos(p theta_i) | sin(p theta_i), i < R/2.
HostTensor rope_cache(int64_t rows, int64_t r) {
  HostTensor c(DType::f32, {rows, r});
  rope_fill_cache(reinterpret_cast<float*>(c.bytes.data()), rows, r);
  return c;
}

// got vs the reference's buffer: q/k columns within tol * (1 + |want|), every other column the
// same bytes (v left alone in place; the poison left alone out of place).
void expect_buffer(const HostTensor& got, const HostTensor& want, int64_t qk_cols, double tol,
                   const std::string& what) {
  int misses = 0;
  const size_t esize = dtype_size(want.dtype);
  for (int64_t r = 0; r < want.rows() && misses < 5; ++r) {
    for (int64_t c = 0; c < want.cols() && misses < 5; ++c) {
      const double g = got.at(r, c), w = want.at(r, c);
      const size_t at = (r * want.row_pitch + c) * esize;
      const bool ok = c < qk_cols ? std::abs(g - w) <= tol * (1 + std::abs(w))
                                  : std::memcmp(&got.bytes[at], &want.bytes[at], esize) == 0;
      if (!ok) {
        ADD_FAILURE() << what << "(" << r << ", " << c << "): got " << g << ", want " << w;
        ++misses;
      }
    }
  }
}

class RopeCuda : public ::testing::TestWithParam<Case> {};

TEST_P(RopeCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.tokens * 7 + c.dim * 3 + c.rotary + c.hq);
  const int64_t max_pos = 300;
  const bool f = fused(c.storage);
  QkStorage in(c.dtype, f, c.tokens, c.hq, c.hk, c.dim);
  in.a.host.randn(rng);
  in.b.host.randn(rng);
  QkStorage out_of_place(c.dtype, f, c.tokens, c.hq, c.hk, c.dim);  // NaN-filled
  QkStorage& out = in_place(c.storage) ? in : out_of_place;
  Mirrored cache(rope_cache(max_pos, c.rotary));
  std::vector<int64_t> pos(c.tokens);
  std::uniform_int_distribution<int64_t> pick(-1, max_pos);
  for (auto& p : pos) p = pick(rng);
  DeviceBuffer pos_d(Device::cuda(0), c.tokens * 8), bad_d(Device::cuda(0), 4);
  pos_d.upload(pos.data(), c.tokens * 8);
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  for (Mirrored* m : {&in.a, &in.b, &cache}) m->upload();
  if (!in_place(c.storage)) {
    out.a.poison();
    out.b.poison();
  }
  auto call = [&](bool device, void* positions, void* bad) {
    const Device d = device ? Device::cuda(0) : Device::cpu();
    const TensorView pv(positions, DType::i64, d, {c.tokens}), bv(bad, DType::i32, d, {1});
    const TensorView cv = device ? cache.view() : cache.host.view();
    auto op = c.backward ? &rope_backward : &rope;
    op(out.q(device), out.k(device), in.q(device), in.k(device), cv, pv, c.layout, c.rotary, bv,
       nullptr);
  };
  call(true, pos_d.data(), bad_d.data());
  EXPECT_NE(last_receipt().variant.find(c.backward ? "rope_backward<" : "rope<"),
            std::string::npos);
  int32_t bad_ref = 0;
  call(false, pos.data(), &bad_ref);
  testing::cuda_ok(cudaDeviceSynchronize(), "rope");
  int32_t bad = -1;
  bad_d.download(&bad, 4);
  EXPECT_EQ(bad, bad_ref);
  const double tol = c.dtype == DType::f32 ? 1e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  for (Mirrored* m : {&out.a, &out.b}) {
    HostTensor got = m->host;
    m->dev.download(got.bytes.data(), got.bytes.size());
    expect_buffer(got, m->host, out.qk_cols(*m), tol, m == &out.a ? "a" : "b");
  }
  if (!in_place(c.storage)) {
    for (Mirrored* m : {&in.a, &in.b}) {
      std::vector<uint8_t> now(m->host.bytes.size());
      m->dev.download(now.data(), now.size());
      EXPECT_TRUE(now == m->host.bytes) << "out of place must not write its input";
    }
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  // (D, R): full and partial rotation at 64 / 128 / 256; D = 10 and R = 24 (R/2 not a whole
  // number of 16-byte accesses in bf16/f16) take the scalar path.
  const std::pair<int64_t, int64_t> dims[] = {{64, 64},  {128, 128}, {128, 64}, {256, 256},
                                              {256, 96}, {10, 6},    {64, 24}};
  // Storage and heads together (all four storages at every shape would triple the sweep for
  // no new code path: the kernel sees only pointers and strides): GQA on the strided and the
  // contiguous layouts, and heads enough that a thread rotates several (rope_config.h).
  const std::tuple<Storage, int64_t, int64_t> layouts[] = {{Storage::fused_in_place, 8, 2},
                                                           {Storage::fused_out_of_place, 4, 4},
                                                           {Storage::separate_out_of_place, 8, 2},
                                                           {Storage::separate_in_place, 1, 1},
                                                           // Threads over 2-3 heads, the last
                                                           // batch part empty (41 heads).
                                                           {Storage::fused_in_place, 32, 9}};
  for (DType dtype : {DType::bf16, DType::f16, DType::f32}) {
    for (RopeLayout layout : {RopeLayout::neox, RopeLayout::gptj}) {
      for (auto [dim, rotary] : dims) {
        // f16 shares bf16's kernel but for the conversions: one vector and one scalar shape.
        if (dtype == DType::f16 && !(dim == 128 && rotary == 64) && dim != 10) continue;
        for (int64_t tokens : testing::sweep_rows()) {
          for (auto [storage, hq, hk] : layouts) {
            cases.push_back({dtype, layout, false, storage, tokens, hq, hk, dim, rotary});
            // The backward is the same kernel with sin negated: a vector and a scalar shape, in
            // place on the fused buffer and out of place, are enough.
            const bool backward_shape = (dim == 128 && rotary == 128) || dim == 10;
            if (backward_shape &&
                (storage == Storage::fused_in_place || storage == Storage::separate_out_of_place)) {
              cases.push_back({dtype, layout, true, storage, tokens, hq, hk, dim, rotary});
            }
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, RopeCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

TEST(RopeCudaExtra, MoreThan2Pow31Elements) {
  ASSERT_TRUE(testing::have_gpu());
  // In place on a fused bf16 qkv buffer of 349536 tokens x (32 + 2 x 8) x 128 = 2^31 + 49152
  // elements: offsets past 2^31 must not wrap. Checked on the first and last 64 tokens (tokens
  // are independent).
  const int64_t hq = 32, hk = 8, d = 128, width = (hq + 2 * hk) * d;
  const int64_t t = (int64_t{1} << 31) / width + 8, max_pos = 4096;
  std::mt19937_64 rng(9);
  QkStorage qkv(DType::bf16, true, t, hq, hk, d);
  qkv.a.host.randn(rng);
  qkv.a.upload();
  Mirrored cache(rope_cache(max_pos, d));
  cache.upload();
  std::vector<int64_t> pos(t);
  for (int64_t i = 0; i < t; ++i) pos[i] = (i * 7) % (max_pos + 1);  // max_pos itself is bad
  DeviceBuffer pos_d(Device::cuda(0), t * 8), bad_d(Device::cuda(0), 4);
  pos_d.upload(pos.data(), t * 8);
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  rope(qkv.q(true), qkv.k(true), qkv.q(true), qkv.k(true), cache.view(),
       TensorView(pos_d.data(), DType::i64, Device::cuda(0), {t}), RopeLayout::neox, d,
       TensorView(bad_d.data(), DType::i32, Device::cuda(0), {1}));
  testing::cuda_ok(cudaDeviceSynchronize(), "rope");
  int32_t bad = -1;
  bad_d.download(&bad, 4);
  int32_t bad_want = 0;
  for (int64_t p : pos) bad_want += p >= max_pos;
  EXPECT_EQ(bad, bad_want);
  for (int64_t first : {int64_t{0}, t - 64}) {
    QkStorage want(DType::bf16, true, 64, hq, hk, d);
    HostTensor got = want.a.host;
    const size_t row = width * 2;
    std::memcpy(want.a.host.bytes.data(), qkv.a.host.bytes.data() + first * row, 64 * row);
    qkv.a.dev.download(got.bytes.data(), 64 * row, first * row);
    int32_t unused = 0;
    rope(want.q(false), want.k(false), want.q(false), want.k(false), cache.host.view(),
         TensorView(pos.data() + first, DType::i64, Device::cpu(), {64}), RopeLayout::neox, d,
         TensorView(&unused, DType::i32, Device::cpu(), {1}));
    expect_buffer(got, want.a.host, (hq + hk) * d, 1.6e-2, "tokens from " + std::to_string(first));
  }
}

}  // namespace
}  // namespace kiln
