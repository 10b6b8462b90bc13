// attention_varlen / attention_varlen_backward on the CPU (the float64 reference behind the full
// contract): bf16 results equal the float64 math rounded once, fused-qkv views equal contiguous
// tensors, and every bad input's message.
#include "kiln/ops/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "core/element.h"
#include "ref/attention.h"

namespace kiln {
namespace {

using testing::HostTensor;

constexpr int64_t kHq = 4, kHkv = 2, kD = 64;

struct Problem {
  std::vector<int32_t> cu_q{0, 3, 8}, cu_k{0, 5, 10};
  HostTensor q{DType::bf16, {8, kHq, kD}}, k{DType::bf16, {10, kHkv, kD}},
      v{DType::bf16, {10, kHkv, kD}};
  AttentionMasks masks() {
    AttentionMasks m;
    m.cu_seqlens_q = TensorView(cu_q.data(), DType::i32, Device::cpu(), {3});
    m.cu_seqlens_k = TensorView(cu_k.data(), DType::i32, Device::cpu(), {3});
    m.causal = true;
    return m;
  }
  Problem() {
    std::mt19937_64 rng(9);
    q.randn(rng);
    k.randn(rng);
    v.randn(rng);
  }
  ref::AttentionShape shape(double scale) const {
    ref::AttentionShape s;
    s.cu_q = cu_q;
    s.cu_k = cu_k;
    s.hq = kHq;
    s.hkv = kHkv;
    s.d = s.dv = kD;
    s.scale = scale;
    s.rules.causal = true;
    return s;
  }
};

std::vector<double> doubles(const HostTensor& t) {
  std::vector<double> out(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = element::load(t.bytes.data(), t.dtype, i);
  return out;
}

TEST(AttentionOp, Bf16IsTheFloat64MathRoundedOnce) {
  Problem p;
  const AttentionOptions opt{1 / std::sqrt(double(kD)), 0};
  HostTensor out(DType::bf16, {8, kHq, kD});  // poisoned (NaN) until written
  std::vector<float> lse(kHq * 8, NAN);
  attention_varlen(out.view(), TensorView(lse.data(), DType::f32, Device::cpu(), {kHq, 8}),
                   p.q.view(), p.k.view(), p.v.view(), p.masks(), opt);
  const ref::AttentionShape s = p.shape(opt.softmax_scale);
  std::vector<double> want(out.numel()), want_lse(kHq * 8);
  ref::attention_forward(s, doubles(p.q).data(), doubles(p.k).data(), doubles(p.v).data(),
                         want.data(), want_lse.data());
  for (int64_t i = 0; i < out.numel(); ++i) {
    uint16_t bits = 0;
    element::store(&bits, DType::bf16, 0, want[i]);
    const double rounded = element::load(&bits, DType::bf16, 0);
    ASSERT_EQ(element::load(out.bytes.data(), DType::bf16, i), rounded) << i;
  }
  for (int64_t i = 0; i < kHq * 8; ++i) EXPECT_EQ(lse[i], static_cast<float>(want_lse[i])) << i;
  EXPECT_EQ(last_receipt().backend, "reference");
}

TEST(AttentionOp, FusedQkvViewsEqualContiguousTensors) {
  Problem p;
  const AttentionOptions opt{0.125, 0};
  // One buffer [T, (Hq + 2 Hkv) * D] with q | k | v per token; here T = total_q = total_k.
  std::vector<int32_t> cu{0, 4, 10};
  const int64_t t = 10, row = (kHq + 2 * kHkv) * kD;
  HostTensor qkv(DType::bf16, {t, row});
  std::mt19937_64 rng(10);
  qkv.randn(rng);
  auto view = [&](int64_t offset, int64_t heads) {
    const int64_t sizes[3] = {t, heads, kD}, strides[3] = {row, kD, 1};
    return TensorView(qkv.bytes.data() + offset * 2, DType::bf16, Device::cpu(), sizes, strides);
  };
  HostTensor qc(DType::bf16, {t, kHq, kD}), kc(DType::bf16, {t, kHkv, kD}),
      vc(DType::bf16, {t, kHkv, kD});
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t e = 0; e < kHq * kD; ++e) {
      element::store(qc.bytes.data(), DType::bf16, r * kHq * kD + e, qkv.at(r, e));
    }
    for (int64_t e = 0; e < kHkv * kD; ++e) {
      element::store(kc.bytes.data(), DType::bf16, r * kHkv * kD + e, qkv.at(r, kHq * kD + e));
      element::store(vc.bytes.data(), DType::bf16, r * kHkv * kD + e,
                     qkv.at(r, (kHq + kHkv) * kD + e));
    }
  }
  AttentionMasks m;
  m.cu_seqlens_q = m.cu_seqlens_k = TensorView(cu.data(), DType::i32, Device::cpu(), {3});
  m.causal = true;
  HostTensor out1(DType::bf16, {t, kHq, kD}), out2(DType::bf16, {t, kHq, kD});
  std::vector<float> lse1(kHq * t), lse2(kHq * t);
  attention_varlen(out1.view(), TensorView(lse1.data(), DType::f32, Device::cpu(), {kHq, t}),
                   view(0, kHq), view(kHq * kD, kHkv), view((kHq + kHkv) * kD, kHkv), m, opt);
  attention_varlen(out2.view(), TensorView(lse2.data(), DType::f32, Device::cpu(), {kHq, t}),
                   qc.view(), kc.view(), vc.view(), m, opt);
  EXPECT_EQ(out1.bytes, out2.bytes);
  EXPECT_EQ(lse1, lse2);
}

// CUDA tensors are checked on the host before any launch (the fake device addresses below are
// never dereferenced: every call fails a check first).
TEST(AttentionOp, CudaArgumentsAreCheckedBeforeALaunch) {
  using testing::expect_error;
  Problem p;
  const AttentionOptions opt{0.125, 0};
  auto gpu = [](HostTensor& t, uintptr_t address = 4096) {
    return t.view(reinterpret_cast<void*>(address), Device::cuda(0));
  };
  HostTensor out(DType::bf16, {8, kHq, kD});
  const TensorView lse(reinterpret_cast<void*>(8192), DType::f32, Device::cuda(0), {kHq, 8});
  expect_error(
      [&] { attention_varlen(gpu(out), lse, gpu(p.q), gpu(p.k), gpu(p.v), p.masks(), opt); },
      "attention_varlen: argument 'cu_seqlens_q': expected a tensor on cuda:0, got one "
      "on cpu");
  AttentionMasks m;
  m.cu_seqlens_q = m.cu_seqlens_k =
      TensorView(reinterpret_cast<void*>(512), DType::i32, Device::cuda(0), {3});
  expect_error([&] { attention_varlen(gpu(out), lse, gpu(p.q, 4098), gpu(p.k), gpu(p.v), m, opt); },
               "attention_varlen: argument 'q': expected a 16-byte aligned data pointer on the "
               "GPU, got an address = 2 mod 16");
  m.cu_seqlens_k = TensorView(reinterpret_cast<void*>(512), DType::i32, Device::cuda(0), {4});
  expect_error([&] { attention_varlen(gpu(out), lse, gpu(p.q), gpu(p.k), gpu(p.v), m, opt); },
               "attention_varlen: argument 'cu_seqlens_k': expected int32 [3]");
  HostTensor dq(DType::bf16, {8, kHq, kD}), dk(DType::bf16, {10, kHkv, kD}),
      dv(DType::bf16, {10, kHkv, kD});
  m.cu_seqlens_k = m.cu_seqlens_q;
  expect_error(
      [&] {
        attention_varlen_backward(gpu(dq, 4100), gpu(dk), gpu(dv), gpu(out), gpu(p.q), gpu(p.k),
                                  gpu(p.v), gpu(out), lse, m, opt);
      },
      "attention_varlen_backward: argument 'dq': expected a 16-byte aligned data pointer on the "
      "GPU, got an address = 4 mod 16");
}

TEST(AttentionOp, BackwardIsTheReferenceRounded) {
  Problem p;
  const AttentionOptions opt{0.125, 0};
  HostTensor out(DType::bf16, {8, kHq, kD}), dout(DType::bf16, {8, kHq, kD});
  std::mt19937_64 rng(12);
  dout.randn(rng);
  std::vector<float> lse(kHq * 8);
  const TensorView lse_view(lse.data(), DType::f32, Device::cpu(), {kHq, 8});
  attention_varlen(out.view(), lse_view, p.q.view(), p.k.view(), p.v.view(), p.masks(), opt);
  HostTensor dq(DType::bf16, {8, kHq, kD}), dk(DType::bf16, {10, kHkv, kD}),
      dv(DType::bf16, {10, kHkv, kD});
  attention_varlen_backward(dq.view(), dk.view(), dv.view(), dout.view(), p.q.view(), p.k.view(),
                            p.v.view(), out.view(), lse_view, p.masks(), opt);
  std::vector<double> gq(dq.numel()), gk(dk.numel()), gv(dv.numel());
  ref::attention_backward(p.shape(0.125), doubles(p.q).data(), doubles(p.k).data(),
                          doubles(p.v).data(), doubles(dout).data(), gq.data(), gk.data(),
                          gv.data());
  const std::vector<double> got_k = doubles(dk);
  double norm = 0;
  for (size_t i = 0; i < gk.size(); ++i) {
    EXPECT_NEAR(got_k[i], gk[i], 1e-2 * (std::fabs(gk[i]) + 1e-3)) << i;
    norm += gk[i] * gk[i];
  }
  EXPECT_GT(norm, 1e-2);
  const std::vector<double> got_q = doubles(dq);
  for (size_t i = 0; i < gq.size(); ++i) {
    EXPECT_NEAR(got_q[i], gq[i], 1e-2 * (std::fabs(gq[i]) + 1e-3)) << i;
  }
}

TEST(AttentionOp, BadInput) {
  Problem p;
  const AttentionOptions opt{0.125, 0};
  HostTensor out(DType::bf16, {8, kHq, kD});
  std::vector<float> lse(kHq * 8);
  const TensorView lse_view(lse.data(), DType::f32, Device::cpu(), {kHq, 8});
  auto run = [&](const TensorView& q, const TensorView& k, const TensorView& v,
                 const AttentionMasks& m, const AttentionOptions& o) {
    attention_varlen(out.view(), lse_view, q, k, v, m, o);
  };
  using testing::expect_error;
  HostTensor k3(DType::bf16, {10, 3, kD});
  expect_error([&] { run(p.q.view(), k3.view(), k3.view(), p.masks(), opt); },
               "attention_varlen: argument 'q': expected a head count that is a multiple of k's "
               "(3), got 4 heads");
  HostTensor q32(DType::bf16, {8, kHq, 32}), k32(DType::bf16, {10, kHkv, 32});
  expect_error([&] { run(q32.view(), k32.view(), k32.view(), p.masks(), opt); },
               "expected head dims D = Dv in {64, 128, 256} or D = 192 with Dv = 128, got D = 32, "
               "Dv = 32");
  std::vector<int32_t> bad_cu{0, 9, 8};
  AttentionMasks m = p.masks();
  m.cu_seqlens_q = TensorView(bad_cu.data(), DType::i32, Device::cpu(), {3});
  expect_error([&] { run(p.q.view(), p.k.view(), p.v.view(), m, opt); },
               "argument 'cu_seqlens_q': expected non-decreasing offsets, got cu_seqlens[2] = 8 < "
               "cu_seqlens[1] = 9");
  std::vector<int32_t> short_cu{0, 3, 7};
  m.cu_seqlens_q = TensorView(short_cu.data(), DType::i32, Device::cpu(), {3});
  expect_error([&] { run(p.q.view(), p.k.view(), p.v.view(), m, opt); },
               "argument 'cu_seqlens_q': expected to end at total_q = 8, got 7");
  expect_error(
      [&] {
        run(p.q.view(), p.k.view(), p.v.view(), p.masks(), {0, 0});
      },
      "argument 'softmax_scale': expected a finite value > 0");
  HostTensor f32q(DType::f32, {8, kHq, kD});
  expect_error([&] { run(f32q.view(), p.k.view(), p.v.view(), p.masks(), opt); },
               "attention_varlen: argument 'q'");
  std::vector<int32_t> docs(8, 0);
  m = p.masks();
  m.doc_ids_q = TensorView(docs.data(), DType::i32, Device::cpu(), {8});
  expect_error([&] { run(p.q.view(), p.k.view(), p.v.view(), m, opt); },
               "argument 'doc_ids_k': expected both document id tensors or neither, got only one");
  const TensorView wrong_lse(lse.data(), DType::f32, Device::cpu(), {8, kHq});
  expect_error(
      [&] {
        attention_varlen(out.view(), wrong_lse, p.q.view(), p.k.view(), p.v.view(), p.masks(), opt);
      },
      "argument 'lse': expected shape [Hq, total_q] = [4, 8], got");
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// The paged form on the CPU: keys gathered through the page table give the contiguous result
// exactly; a page id past the cache is a kiln::Error naming the entry.
TEST(AttentionOp, PagedCacheIsTheContiguousResult) {
  Problem p;  // sequences of 5 and 5 keys: pages of 16, one page each
  constexpr int64_t kPage = 16, kPages = 3;
  HostTensor kc(DType::bf16, {kPages * kPage, kHkv, kD}),
      vc(DType::bf16, {kPages * kPage, kHkv, kD});
  std::vector<int32_t> table{2, 0};  // sequence 0 in page 2, sequence 1 in page 0
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t j = 0; j < 5; ++j) {
      for (int64_t h = 0; h < kHkv; ++h) {  // HostTensor rows are (token, head) pairs
        for (int64_t e = 0; e < kD; ++e) {
          kc.set((table[b] * kPage + j) * kHkv + h, e, p.k.at((b * 5 + j) * kHkv + h, e));
          vc.set((table[b] * kPage + j) * kHkv + h, e, p.v.at((b * 5 + j) * kHkv + h, e));
        }
      }
    }
  }
  const int64_t sizes[] = {kPages, kPage, kHkv, kD};
  const TensorView kv(kc.bytes.data(), DType::bf16, Device::cpu(), sizes),
      vv(vc.bytes.data(), DType::bf16, Device::cpu(), sizes);
  const TensorView bt(table.data(), DType::i32, Device::cpu(), {2, 1});
  const AttentionOptions opt{0.125, 0};
  HostTensor out1(DType::bf16, {8, kHq, kD}), out2(DType::bf16, {8, kHq, kD});
  std::vector<float> lse1(kHq * 8), lse2(kHq * 8);
  attention_varlen(out1.view(), TensorView(lse1.data(), DType::f32, Device::cpu(), {kHq, 8}),
                   p.q.view(), p.k.view(), p.v.view(), p.masks(), opt);
  attention_varlen_paged(out2.view(), TensorView(lse2.data(), DType::f32, Device::cpu(), {kHq, 8}),
                         p.q.view(), kv, vv, bt, p.masks(), opt);
  EXPECT_EQ(out1.bytes, out2.bytes);
  EXPECT_EQ(lse1, lse2);
  table[1] = 3;
  testing::expect_error(
      [&] {
        attention_varlen_paged(out2.view(),
                               TensorView(lse2.data(), DType::f32, Device::cpu(), {kHq, 8}),
                               p.q.view(), kv, vv, bt, p.masks(), opt);
      },
      "attention_varlen_paged: argument 'block_table': expected page ids in [0, 3), got "
      "block_table[1][0] = 3");
  const int64_t bad_sizes[] = {kPages, 12, kHkv, kD};
  testing::expect_error(
      [&] {
        attention_varlen_paged(
            out2.view(), TensorView(lse2.data(), DType::f32, Device::cpu(), {kHq, 8}), p.q.view(),
            TensorView(kc.bytes.data(), DType::bf16, Device::cpu(), bad_sizes),
            TensorView(vc.bytes.data(), DType::bf16, Device::cpu(), bad_sizes), bt, p.masks(), opt);
      },
      "argument 'key_cache': expected a page size that is a power of two >= 16, got 12");
}

}  // namespace
}  // namespace kiln
