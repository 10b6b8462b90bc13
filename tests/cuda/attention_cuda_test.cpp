// CUDA attention forward and backward against the float64 reference (the CPU path of the same
// entry point), the backward run twice for the same bits:
// every head dim, bf16 and f16, GQA 1/4/8, causal and not, windows, documents, valid prefixes,
// soft-capping, ragged batches with empty and one-token sequences, q shorter and longer than k,
// strided views and one fused qkv buffer; outputs poisoned before each run. Bad device metadata
// is counted and skipped without touching the good sequences; decreasing document ids are
// counted.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/attention.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

struct Case {
  std::string name;
  DType dtype = DType::bf16;
  int d = 128, dv = 128, hq = 4, hkv = 4;
  std::vector<int> lq, lk;  // per sequence
  bool causal = false;
  int64_t left = -1, right = -1;
  bool docs = false, valid = false, fused = false, backward = true;
  double softcap = 0;
};

// [tokens, heads, dim] over rows of `pitch` elements (>= heads * dim: strided tokens).
TensorView heads_view(void* data, DType dtype, Device device, int64_t tokens, int64_t heads,
                      int64_t dim, int64_t pitch) {
  const int64_t sizes[] = {tokens, heads, dim}, strides[] = {pitch, dim, 1};
  return TensorView(data, dtype, device, sizes, strides);
}

HostTensor int32_tensor(const std::vector<int32_t>& v) {
  HostTensor t(DType::i32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.bytes.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

std::vector<int32_t> offsets(const std::vector<int>& lengths) {
  std::vector<int32_t> cu{0};
  for (int l : lengths) cu.push_back(cu.back() + l);
  return cu;
}

// Non-decreasing document ids along each sequence: runs of random length.
std::vector<int32_t> documents(const std::vector<int>& lengths, std::mt19937_64& rng) {
  std::vector<int32_t> ids;
  for (int l : lengths) {
    std::uniform_int_distribution<int> run(1, 24);
    int doc = 0, left = run(rng);
    for (int t = 0; t < l; ++t) {
      if (left-- == 0) {
        ++doc;
        left = run(rng);
      }
      ids.push_back(doc);
    }
  }
  return ids;
}

class AttentionCuda : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionCuda, ForwardMatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(std::hash<std::string>{}(c.name));
  const std::vector<int32_t> cu_q = offsets(c.lq), cu_k = offsets(c.lk);
  const int64_t tq = cu_q.back(), tk = cu_k.back(), batch = c.lq.size();

  // q, k, v: one fused [T, (hq + 2 hkv) * d] buffer, or three with padded (strided) rows.
  const int64_t qw = c.hq * c.d, kw = c.hkv * c.d, vw = c.hkv * c.dv;
  HostTensor q_h, k_h, v_h;
  int64_t q_pitch, k_pitch, v_pitch, k_off = 0, v_off = 0;
  if (c.fused) {
    q_h = HostTensor(c.dtype, {tq, qw + kw + vw});
    q_h.randn(rng);
    q_pitch = k_pitch = v_pitch = qw + kw + vw;
    k_off = qw;
    v_off = qw + kw;
  } else {
    q_pitch = qw + 8;
    k_pitch = kw + 16;
    v_pitch = vw + 8;
    q_h = HostTensor(c.dtype, {tq, qw}, q_pitch);
    k_h = HostTensor(c.dtype, {tk, kw}, k_pitch);
    v_h = HostTensor(c.dtype, {tk, vw}, v_pitch);
    q_h.randn(rng);
    k_h.randn(rng);
    v_h.randn(rng);
  }
  const size_t es = dtype_size(c.dtype);
  Mirrored q(q_h), k(c.fused ? HostTensor(c.dtype, {1, 8}) : k_h),
      v(c.fused ? HostTensor(c.dtype, {1, 8}) : v_h);
  q.upload();
  k.upload();
  v.upload();
  auto views = [&](bool gpu) {
    const Device dev = gpu ? Device::cuda(0) : Device::cpu();
    auto base = [&](Mirrored& m) -> char* {
      return gpu ? static_cast<char*>(m.dev.data()) : reinterpret_cast<char*>(m.host.bytes.data());
    };
    char* qb = base(q);
    char* kb = c.fused ? qb + k_off * es : base(k);
    char* vb = c.fused ? qb + v_off * es : base(v);
    return std::vector<TensorView>{heads_view(qb, c.dtype, dev, tq, c.hq, c.d, q_pitch),
                                   heads_view(kb, c.dtype, dev, tk, c.hkv, c.d, k_pitch),
                                   heads_view(vb, c.dtype, dev, tk, c.hkv, c.dv, v_pitch)};
  };

  Mirrored cuq(int32_tensor(cu_q)), cuk(int32_tensor(cu_k));
  std::vector<int32_t> vq, vk;
  for (int64_t b = 0; b < batch; ++b) {
    vq.push_back(c.lq[b] == 0 ? 0 : static_cast<int32_t>(rng() % (c.lq[b] + 1)));
    vk.push_back(c.lk[b] == 0 ? 0 : static_cast<int32_t>(rng() % (c.lk[b] + 1)));
  }
  Mirrored valq(int32_tensor(vq.empty() ? std::vector<int32_t>{0} : vq)),
      valk(int32_tensor(vk.empty() ? std::vector<int32_t>{0} : vk));
  Mirrored docq(int32_tensor(c.docs ? documents(c.lq, rng) : std::vector<int32_t>{0})),
      dock(int32_tensor(c.docs ? documents(c.lk, rng) : std::vector<int32_t>{0}));
  Mirrored bad(int32_tensor({0}));
  for (Mirrored* m : {&cuq, &cuk, &valq, &valk, &docq, &dock, &bad}) m->upload();
  auto masks = [&](bool gpu) {
    auto view = [&](Mirrored& m) { return gpu ? m.view() : m.host.view(); };
    AttentionMasks m;
    m.cu_seqlens_q = view(cuq);
    m.cu_seqlens_k = view(cuk);
    if (c.valid) {
      m.valid_q = view(valq);
      m.valid_k = view(valk);
    }
    if (c.docs) {
      m.doc_ids_q = view(docq);
      m.doc_ids_k = view(dock);
    }
    if (gpu) m.bad_metadata = bad.view();
    m.causal = c.causal;
    m.window_left = c.left;
    m.window_right = c.right;
    return m;
  };
  AttentionOptions opt;
  opt.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  opt.softcap = c.softcap;

  HostTensor want(c.dtype, {tq, c.hq * c.dv}), want_lse(DType::f32, {c.hq, tq});
  const std::vector<TensorView> h = views(false);
  attention_varlen(
      heads_view(want.bytes.data(), c.dtype, Device::cpu(), tq, c.hq, c.dv, c.hq * c.dv),
      want_lse.view(), h[0], h[1], h[2], masks(false), opt);

  // Every head dim runs on the wgmma kernels on Hopper and, forced by KILN_ATTENTION_FWD, on the
  // mma.sync kernels too: both against the reference. The last run (the default) feeds the
  // backward.
  Mirrored out(HostTensor(c.dtype, {tq, c.hq * c.dv})), lse(HostTensor(DType::f32, {c.hq, tq}));
  const std::vector<TensorView> g = views(true);
  for (const bool forced_mma_sync : {true, false}) {
    SCOPED_TRACE(forced_mma_sync ? "KILN_ATTENTION_FWD=mma_sync" : "default kernel");
    if (forced_mma_sync) setenv("KILN_ATTENTION_FWD", "mma_sync", 1);
    out.poison();
    lse.poison();
    attention_varlen(
        heads_view(out.dev.data(), c.dtype, Device::cuda(0), tq, c.hq, c.dv, c.hq * c.dv),
        lse.view(), g[0], g[1], g[2], masks(true), opt);
    unsetenv("KILN_ATTENTION_FWD");
    EXPECT_EQ(last_receipt().backend, "cuda");
    const bool wgmma = last_receipt().variant.find("wgmma") != std::string::npos;
    EXPECT_EQ(wgmma, !forced_mma_sync && testing::gpu_major() == 9 && tq > 0 && tk > 0)
        << last_receipt().variant;
    testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen");
    out.download();
    lse.download();
    bad.download();
    EXPECT_EQ(reinterpret_cast<const int32_t*>(bad.host.bytes.data())[0], 0) << "bad_metadata";

    const double tol = c.dtype == DType::bf16 ? 1e-2 : 2e-3;
    testing::expect_close(out.host, want, tol, "out");
    const testing::Comparison cmp = testing::compare(out.host, want, tol / 5);
    EXPECT_LE(cmp.rel_l2, tol / 2) << "out rel_l2 " << cmp.rel_l2;
    int misses = 0;
    for (int64_t hd = 0; hd < c.hq && misses < 5; ++hd) {
      for (int64_t t = 0; t < tq && misses < 5; ++t) {
        const double got = lse.host.at(hd, t), w = want_lse.at(hd, t);
        const bool ok = std::isinf(w) ? got == w : std::abs(got - w) <= 2e-3 * (1 + std::abs(w));
        if (!ok) {
          ADD_FAILURE() << "lse(" << hd << ", " << t << "): got " << got << ", want " << w;
          ++misses;
        }
      }
    }
  }
  // The wgmma forward walks its (head, query tile) items with one CTA a SM: a few CTAs walking
  // many items each (every ring wrapping around, Q reloaded under the previous item's P V), and a
  // CTA an item, give the default run's bits.
  if (testing::gpu_major() == 9 && tq > 0 && tk > 0) {
    for (const char* ctas : {"3", "0"}) {
      SCOPED_TRACE(std::string("KILN_ATTENTION_FWD_PERSISTENT=") + ctas);
      Mirrored out2(HostTensor(c.dtype, {tq, c.hq * c.dv})),
          lse2(HostTensor(DType::f32, {c.hq, tq}));
      out2.poison();
      lse2.poison();
      setenv("KILN_ATTENTION_FWD_PERSISTENT", ctas, 1);
      attention_varlen(
          heads_view(out2.dev.data(), c.dtype, Device::cuda(0), tq, c.hq, c.dv, c.hq * c.dv),
          lse2.view(), g[0], g[1], g[2], masks(true), opt);
      unsetenv("KILN_ATTENTION_FWD_PERSISTENT");
      EXPECT_EQ(last_receipt().variant.find("persistent") != std::string::npos,
                std::string(ctas) == "3")
          << last_receipt().variant;
      testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen, other grid");
      out2.download();
      lse2.download();
      EXPECT_EQ(out2.host.bytes, out.host.bytes) << "out";
      EXPECT_EQ(lse2.host.bytes, lse.host.bytes) << "lse";
    }
  }
  if (!c.backward) return;

  // Backward from the GPU's out and lse; twice, the same bits (deterministic).
  HostTensor dout_h(c.dtype, {tq, c.hq * c.dv});
  dout_h.randn(rng);
  Mirrored dout(dout_h), dq(HostTensor(c.dtype, {tq, c.hq * c.d})),
      dk(HostTensor(c.dtype, {tk, c.hkv * c.d})), dv(HostTensor(c.dtype, {tk, c.hkv * c.dv}));
  dout.upload();
  auto flat = [&](Mirrored& m, int64_t rows, int64_t heads, int64_t dim) {
    return heads_view(m.dev.data(), c.dtype, Device::cuda(0), rows, heads, dim, heads * dim);
  };
  HostTensor wq(c.dtype, {tq, c.hq * c.d}), wk(c.dtype, {tk, c.hkv * c.d}),
      wv(c.dtype, {tk, c.hkv * c.dv});
  auto host = [&](HostTensor& t, int64_t rows, int64_t heads, int64_t dim) {
    return heads_view(t.bytes.data(), c.dtype, Device::cpu(), rows, heads, dim, heads * dim);
  };
  attention_varlen_backward(host(wq, tq, c.hq, c.d), host(wk, tk, c.hkv, c.d),
                            host(wv, tk, c.hkv, c.dv), host(dout.host, tq, c.hq, c.dv), h[0], h[1],
                            h[2], host(want, tq, c.hq, c.dv), want_lse.view(), masks(false), opt);
  // Per element within gtol of |want| + the gradient's RMS (a wrong tile or mask is off by the
  // RMS or more); in aggregate (relative L2) within gtol / 5. Measured at 3615526: the largest
  // element errors were ~5% (bf16) and ~0.5% (f16) of the RMS, scaling with the format's
  // epsilon, and the gradients' distance to SDPA-flash's is the same as cuDNN's.
  const double gtol = c.dtype == DType::bf16 ? 0.1 : 0.02;
  const char* names[] = {"dq", "dk", "dv"};
  const HostTensor* wants[] = {&wq, &wk, &wv};

  // The mma.sync kernels (forced by KILN_ATTENTION_BWD) and the default ones (wgmma for D = Dv
  // = 64 and 128 on Hopper), each twice for the same bits, each against the reference.
  for (const bool forced_mma_sync : {true, false}) {
    SCOPED_TRACE(forced_mma_sync ? "KILN_ATTENTION_BWD=mma_sync" : "default kernel");
    std::vector<uint8_t> first[3];
    for (int run = 0; run < 2; ++run) {
      for (Mirrored* m : {&dq, &dk, &dv}) m->poison();
      if (forced_mma_sync) setenv("KILN_ATTENTION_BWD", "mma_sync", 1);
      attention_varlen_backward(flat(dq, tq, c.hq, c.d), flat(dk, tk, c.hkv, c.d),
                                flat(dv, tk, c.hkv, c.dv), flat(dout, tq, c.hq, c.dv), g[0], g[1],
                                g[2], flat(out, tq, c.hq, c.dv), lse.view(), masks(true), opt);
      unsetenv("KILN_ATTENTION_BWD");
      EXPECT_EQ(last_receipt().backend, "cuda");
      const bool wgmma = last_receipt().variant.find("wgmma") != std::string::npos;
      EXPECT_EQ(wgmma, !forced_mma_sync && testing::gpu_major() == 9 && tq > 0 && tk > 0 &&
                           c.d == c.dv && c.d <= 128)
          << last_receipt().variant;
      testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen_backward");
      int i = 0;
      for (Mirrored* m : {&dq, &dk, &dv}) {
        m->download();
        if (run == 0)
          first[i] = m->host.bytes;
        else
          EXPECT_EQ(m->host.bytes, first[i]) << "not deterministic: output " << i;
        ++i;
      }
    }
    int i = 0;
    for (Mirrored* m : {&dq, &dk, &dv}) {
      const HostTensor& w = *wants[i];
      double sq = 0;
      for (int64_t r = 0; r < w.rows(); ++r)
        for (int64_t e = 0; e < w.cols(); ++e) sq += w.at(r, e) * w.at(r, e);
      const double rms = std::sqrt(sq / std::max<int64_t>(1, w.numel()));
      int bad = 0;
      for (int64_t r = 0; r < w.rows() && bad < 5; ++r) {
        for (int64_t e = 0; e < w.cols() && bad < 5; ++e) {
          const double got = m->host.at(r, e), want_e = w.at(r, e);
          if (!(std::abs(got - want_e) <= gtol * (std::abs(want_e) + rms))) {
            ADD_FAILURE() << names[i] << "(" << r << ", " << e << "): got " << got << ", want "
                          << want_e << " (rms " << rms << ")";
            ++bad;
          }
        }
      }
      const testing::Comparison gc = testing::compare(m->host, *wants[i], gtol / 20);
      EXPECT_LE(gc.rel_l2, gtol / 5) << names[i] << " rel_l2 " << gc.rel_l2;
      ++i;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> all;
  auto add = [&](Case c) {
    c.name += "_" + std::string(dtype_name(c.dtype)) + "_d" + std::to_string(c.d) +
              (c.dv != c.d ? "v" + std::to_string(c.dv) : "") + "_h" + std::to_string(c.hq) + "x" +
              std::to_string(c.hkv);
    all.push_back(c);
  };
  const bool quick = testing::quick_sweep();
  const std::vector<std::pair<int, int>> dims = {{64, 64}, {128, 128}, {256, 256}, {192, 128}};
  for (DType dt : {DType::bf16, DType::f16}) {
    for (auto [d, dv] : dims) {
      for (auto [hq, hkv] : std::vector<std::pair<int, int>>{{2, 2}, {4, 1}, {8, 1}}) {
        Case base;
        base.dtype = dt;
        base.d = d;
        base.dv = dv;
        base.hq = hq;
        base.hkv = hkv;
        Case c = base;
        c.name = "ragged";
        c.lq = c.lk = {1, 0, 130, 7, quick ? 65 : 300};
        add(c);
        c.name = "ragged_causal";
        c.causal = true;
        add(c);
        c = base;
        c.name = "q_shorter_causal";
        c.lq = {5, 64, 1};
        c.lk = {200, 129, 77};
        c.causal = true;
        add(c);
        if (hkv != 1) continue;  // the feature cases once per head dim, at GQA
        c = base;
        c.name = "q_longer_causal";
        c.lq = {150, 40};
        c.lk = {20, 33};
        c.causal = true;
        add(c);
        c = base;
        c.name = "window";
        c.lq = c.lk = {quick ? 160 : 700, 33};
        c.left = 50;
        c.right = 9;
        add(c);
        c.name = "window_causal";
        c.right = -1;
        c.causal = true;
        add(c);
        c = base;
        c.name = "docs_causal";
        c.lq = c.lk = {quick ? 140 : 500, 90};
        c.docs = true;
        c.causal = true;
        add(c);
        c.name = "docs_valid";
        c.causal = false;
        c.valid = true;
        add(c);
        c = base;
        c.name = "softcap_fused";
        c.lq = c.lk = {quick ? 100 : 260, 3};
        c.softcap = 2.0;
        c.fused = true;
        add(c);
      }
    }
  }
  if (!quick) {
    Case c;
    c.name = "long";
    c.lq = c.lk = {4096};
    c.causal = true;
    c.backward = false;  // the float64 backward reference would take minutes
    add(c);
    c.name = "long_noncausal";
    c.causal = false;
    c.lq = {1000};
    add(c);
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Sweep, AttentionCuda, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Bad device metadata: a sequence whose offsets go backwards is counted and skipped; the others
// are computed as usual.
TEST(AttentionCudaMetadata, BadSequencesAreCountedAndSkipped) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  std::mt19937_64 rng(11);
  const int64_t t = 64, h = 2, d = 64;
  Mirrored q(HostTensor(DType::bf16, {t, h * d})), k(HostTensor(DType::bf16, {t, h * d})),
      v(HostTensor(DType::bf16, {t, h * d}));
  for (Mirrored* m : {&q, &k, &v}) {
    m->host.randn(rng);
    m->upload();
  }
  // Sequence 1 ([20, 70)) ends past the 64 tokens and sequence 2 ([70, 64)) runs backwards:
  // both are counted and skipped; sequence 0 ([0, 20)) is computed.
  Mirrored cu(int32_tensor({0, 20, 70, 64})), bad(int32_tensor({0}));
  cu.upload();
  bad.upload();
  Mirrored out(HostTensor(DType::bf16, {t, h * d})), lse(HostTensor(DType::f32, {h, t}));
  out.poison();
  lse.poison();
  AttentionMasks m;
  m.cu_seqlens_q = m.cu_seqlens_k = cu.view();
  m.bad_metadata = bad.view();
  AttentionOptions opt;
  opt.softmax_scale = 0.125;
  auto view3 = [&](Mirrored& x) {
    return heads_view(x.dev.data(), DType::bf16, Device::cuda(0), t, h, d, h * d);
  };
  attention_varlen(view3(out), lse.view(), view3(q), view3(k), view3(v), m, opt);
  testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen");
  bad.download();
  out.download();
  EXPECT_EQ(reinterpret_cast<const int32_t*>(bad.host.bytes.data())[0], 2);
  // Sequence 0 ([0, 20)) is good: compare it with the reference on its own.
  HostTensor want(DType::bf16, {20, h * d}), want_lse(DType::f32, {h, 20});
  Mirrored cu0(int32_tensor({0, 20}));
  AttentionMasks mh;
  mh.cu_seqlens_q = mh.cu_seqlens_k = cu0.host.view();
  auto host3 = [&](HostTensor& x, int64_t rows) {
    return heads_view(x.bytes.data(), DType::bf16, Device::cpu(), rows, h, d, h * d);
  };
  attention_varlen(host3(want, 20), want_lse.view(), host3(q.host, 20), host3(k.host, 20),
                   host3(v.host, 20), mh, opt);
  HostTensor got(DType::bf16, {20, h * d});
  std::memcpy(got.bytes.data(), out.host.bytes.data(), got.bytes.size());
  testing::expect_close(got, want, 1e-2, "sequence 0");
}

// Document ids that decrease along a sequence break the contract the kernels' tile skipping
// rests on: every pass (forward and backward, wgmma and mma.sync kernels) counts each decrease,
// of the query ids and of the key ids, into bad_metadata; ids that do not decrease count none.
TEST(AttentionCudaMetadata, DecreasingDocumentIdsAreCounted) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  std::mt19937_64 rng(12);
  const int64_t t = 300, h = 2, d = 64;
  Mirrored q(HostTensor(DType::bf16, {t, h * d})), k(HostTensor(DType::bf16, {t, h * d})),
      v(HostTensor(DType::bf16, {t, h * d})), dout(HostTensor(DType::bf16, {t, h * d}));
  for (Mirrored* m : {&q, &k, &v, &dout}) {
    m->host.randn(rng);
    m->upload();
  }
  // Documents 0 | 2 | 1 over [0, 100), [100, 200), [200, 300): one decrease, at token 200 (inside
  // a 128-row tile: the 64-row tiles see it at a tile edge), in both the query and the key ids.
  std::vector<int32_t> ids(t);
  for (int64_t i = 0; i < t; ++i) ids[i] = i < 100 ? 0 : i < 200 ? 2 : 1;
  Mirrored cu(int32_tensor({0, static_cast<int32_t>(t)})), docs(int32_tensor(ids)),
      good_docs(int32_tensor(std::vector<int32_t>(t, 3))), bad(int32_tensor({0}));
  for (Mirrored* m : {&cu, &docs, &good_docs, &bad}) m->upload();
  Mirrored out(HostTensor(DType::bf16, {t, h * d})), lse(HostTensor(DType::f32, {h, t})),
      dq(HostTensor(DType::bf16, {t, h * d})), dk(HostTensor(DType::bf16, {t, h * d})),
      dv(HostTensor(DType::bf16, {t, h * d}));
  auto view3 = [&](Mirrored& x) {
    return heads_view(x.dev.data(), DType::bf16, Device::cuda(0), t, h, d, h * d);
  };
  AttentionOptions opt;
  opt.softmax_scale = 0.125;
  auto count_after = [&](Mirrored& doc_ids, bool backward, const char* force) {
    bad.host.bytes.assign(bad.host.bytes.size(), 0);
    bad.upload();
    AttentionMasks m;
    m.cu_seqlens_q = m.cu_seqlens_k = cu.view();
    m.doc_ids_q = m.doc_ids_k = doc_ids.view();
    m.bad_metadata = bad.view();
    m.causal = true;
    if (force != nullptr) setenv(force, "mma_sync", 1);
    if (backward) {
      attention_varlen_backward(view3(dq), view3(dk), view3(dv), view3(dout), view3(q), view3(k),
                                view3(v), view3(out), lse.view(), m, opt);
    } else {
      attention_varlen(view3(out), lse.view(), view3(q), view3(k), view3(v), m, opt);
    }
    if (force != nullptr) unsetenv(force);
    testing::cuda_ok(cudaDeviceSynchronize(), "attention with decreasing document ids");
    bad.download();
    return reinterpret_cast<const int32_t*>(bad.host.bytes.data())[0];
  };
  for (const char* force : {static_cast<const char*>(nullptr), "KILN_ATTENTION_FWD"}) {
    SCOPED_TRACE(force ? "forward on mma.sync" : "default forward");
    EXPECT_EQ(count_after(good_docs, false, force), 0);
    EXPECT_EQ(count_after(docs, false, force), 2);  // one in the query ids, one in the key ids
  }
  for (const char* force : {static_cast<const char*>(nullptr), "KILN_ATTENTION_BWD"}) {
    SCOPED_TRACE(force ? "backward on mma.sync" : "default backward");
    EXPECT_EQ(count_after(good_docs, true, force), 0);
    EXPECT_EQ(count_after(docs, true, force), 2);
  }
}

// The wgmma backward runs dQ on a second stream beside dK/dV (joined before returning): on the
// legacy stream, on a user stream, captured into a CUDA graph and replayed, and with the overlap
// off (KILN_ATTENTION_BWD_OVERLAP=0), the gradients are the same bits, and the graph's dq, dk,
// dv are complete when the user's stream says so.
TEST(AttentionCudaStreams, BackwardIsTheSameOnEveryStreamAndInAGraph) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  std::mt19937_64 rng(21);
  const int64_t t = 700, hq = 4, hkv = 2, d = 128;
  Mirrored q(HostTensor(DType::bf16, {t, hq * d})), k(HostTensor(DType::bf16, {t, hkv * d})),
      v(HostTensor(DType::bf16, {t, hkv * d})), dout(HostTensor(DType::bf16, {t, hq * d}));
  for (Mirrored* m : {&q, &k, &v, &dout}) {
    m->host.randn(rng);
    m->upload();
  }
  const std::vector<int> lengths = {300, 400};
  Mirrored cu(int32_tensor(offsets(lengths))), docs(int32_tensor(documents(lengths, rng)));
  for (Mirrored* m : {&cu, &docs}) m->upload();
  Mirrored out(HostTensor(DType::bf16, {t, hq * d})), lse(HostTensor(DType::f32, {hq, t})),
      dq(HostTensor(DType::bf16, {t, hq * d})), dk(HostTensor(DType::bf16, {t, hkv * d})),
      dv(HostTensor(DType::bf16, {t, hkv * d}));
  auto view3 = [&](Mirrored& x, int64_t heads) {
    return heads_view(x.dev.data(), DType::bf16, Device::cuda(0), t, heads, d, heads * d);
  };
  AttentionMasks m;
  m.cu_seqlens_q = m.cu_seqlens_k = cu.view();
  m.doc_ids_q = m.doc_ids_k = docs.view();
  m.causal = true;
  AttentionOptions opt;
  opt.softmax_scale = 1.0 / std::sqrt(static_cast<double>(d));
  attention_varlen(view3(out, hq), lse.view(), view3(q, hq), view3(k, hkv), view3(v, hkv), m, opt);
  testing::cuda_ok(cudaDeviceSynchronize(), "attention forward");

  auto backward = [&](cudaStream_t s) {
    attention_varlen_backward(view3(dq, hq), view3(dk, hkv), view3(dv, hkv), view3(dout, hq),
                              view3(q, hq), view3(k, hkv), view3(v, hkv), view3(out, hq),
                              lse.view(), m, opt, s);
  };
  auto gradients = [&] {
    std::vector<std::vector<uint8_t>> bytes;
    for (Mirrored* g : {&dq, &dk, &dv}) {
      g->download();
      bytes.push_back(g->host.bytes);
    }
    return bytes;
  };
  auto poison = [&] {
    for (Mirrored* g : {&dq, &dk, &dv}) g->poison();
    testing::cuda_ok(cudaDeviceSynchronize(), "poison");
  };

  poison();
  backward(nullptr);
  testing::cuda_ok(cudaDeviceSynchronize(), "backward on the legacy stream");
  ASSERT_NE(last_receipt().variant.find("dq_beside_dkdv"), std::string::npos)
      << last_receipt().variant;
  const auto want = gradients();
  for (const auto& g : want) {  // no NaN poison left: every gradient element was written
    const auto* e = reinterpret_cast<const uint16_t*>(g.data());
    const int64_t n = static_cast<int64_t>(g.size() / 2);
    ASSERT_EQ(std::count_if(e, e + n, [](uint16_t x) { return (x & 0x7f80) == 0x7f80; }), 0);
  }

  setenv("KILN_ATTENTION_BWD_OVERLAP", "0", 1);
  poison();
  backward(nullptr);
  unsetenv("KILN_ATTENTION_BWD_OVERLAP");
  EXPECT_EQ(last_receipt().variant.find("dq_beside_dkdv"), std::string::npos)
      << last_receipt().variant;
  testing::cuda_ok(cudaDeviceSynchronize(), "backward without the overlap");
  EXPECT_EQ(gradients(), want) << "overlap off";

  cudaStream_t s = nullptr;
  testing::cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  poison();
  backward(s);
  testing::cuda_ok(cudaStreamSynchronize(s), "backward on a user stream");
  EXPECT_EQ(gradients(), want) << "user stream";

  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  testing::cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "begin capture");
  backward(s);
  testing::cuda_ok(cudaStreamEndCapture(s, &graph), "end capture");
  testing::cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int replay = 0; replay < 2; ++replay) {
    poison();
    testing::cuda_ok(cudaGraphLaunch(exec, s), "graph launch");
    testing::cuda_ok(cudaStreamSynchronize(s), "graph replay");  // the user's stream only
    EXPECT_EQ(gradients(), want) << "graph replay " << replay;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// Paged K/V: the same kernel as the contiguous forward through a shuffled page table, so out
// and lse match the contiguous run to the bit; a page id past the cache is counted and never
// read.
struct PagedCase {
  DType dtype;
  int d, page_size;
  bool causal;
};

class AttentionPagedCuda : public ::testing::TestWithParam<PagedCase> {};

TEST_P(AttentionPagedCuda, MatchesContiguousToTheBit) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const PagedCase c = GetParam();
  std::mt19937_64 rng(c.d * 31 + c.page_size + c.causal);
  const int hq = 4, hkv = 2;
  const std::vector<int> lq = {3, 1, 0, 40}, lk = {70, 1, 33, 129};
  const int64_t batch = lq.size();
  std::vector<int32_t> cu_q{0}, cu_k{0};
  for (int64_t b = 0; b < batch; ++b) {
    cu_q.push_back(cu_q.back() + lq[b]);
    cu_k.push_back(cu_k.back() + lk[b]);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back();
  int max_pages = 0, used = 0;
  for (int l : lk) max_pages = std::max(max_pages, (l + c.page_size - 1) / c.page_size);
  for (int l : lk) used += (l + c.page_size - 1) / c.page_size;
  const int64_t pages = used + 3;  // spare pages, never referenced
  std::vector<int32_t> perm(pages);
  for (int64_t p = 0; p < pages; ++p) perm[p] = static_cast<int32_t>(p);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(batch * max_pages, -7);  // unused entries stay bad: never read
  int next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int p = 0; p < (lk[b] + c.page_size - 1) / c.page_size; ++p) {
      table[b * max_pages + p] = perm[next++];
    }
  }
  HostTensor cache_k(c.dtype, {pages * c.page_size, hkv * c.d}),
      cache_v(c.dtype, {pages * c.page_size, hkv * c.d}), q_h(c.dtype, {tq, hq * c.d});
  cache_k.randn(rng);
  cache_v.randn(rng);
  q_h.randn(rng);
  HostTensor k_h(c.dtype, {tk, hkv * c.d}), v_h(c.dtype, {tk, hkv * c.d});
  for (int64_t b = 0; b < batch; ++b) {
    for (int j = 0; j < lk[b]; ++j) {
      const int64_t row =
          int64_t{table[b * max_pages + j / c.page_size]} * c.page_size + j % c.page_size;
      for (int64_t e = 0; e < hkv * c.d; ++e) {
        k_h.set(cu_k[b] + j, e, cache_k.at(row, e));
        v_h.set(cu_k[b] + j, e, cache_v.at(row, e));
      }
    }
  }
  Mirrored q(q_h), k(k_h), v(v_h), ck(cache_k), cv(cache_v), bt(int32_tensor(table)),
      cuq(int32_tensor(cu_q)), cuk(int32_tensor(cu_k)), bad(int32_tensor({0}));
  for (Mirrored* m : {&q, &k, &v, &ck, &cv, &bt, &cuq, &cuk, &bad}) m->upload();
  auto heads = [&](Mirrored& m, int64_t rows, int64_t h) {
    return heads_view(m.dev.data(), c.dtype, Device::cuda(0), rows, h, c.d, h * c.d);
  };
  auto cache = [&](Mirrored& m) {
    const int64_t sizes[] = {pages, c.page_size, hkv, c.d};
    const int64_t strides[] = {c.page_size * hkv * c.d, hkv * c.d, c.d, 1};
    return TensorView(m.dev.data(), c.dtype, Device::cuda(0), sizes, strides);
  };
  AttentionMasks m;
  m.cu_seqlens_q = cuq.view();
  m.cu_seqlens_k = cuk.view();
  m.bad_metadata = bad.view();
  m.causal = c.causal;
  AttentionOptions opt;
  opt.softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  Mirrored out1(HostTensor(c.dtype, {tq, hq * c.d})), out2(HostTensor(c.dtype, {tq, hq * c.d})),
      lse1(HostTensor(DType::f32, {hq, tq})), lse2(HostTensor(DType::f32, {hq, tq}));
  for (Mirrored* x : {&out1, &out2, &lse1, &lse2}) x->poison();
  // The paged forward runs the mma.sync kernel: the contiguous run must too to match bits.
  setenv("KILN_ATTENTION_FWD", "mma_sync", 1);
  attention_varlen(heads(out1, tq, hq), lse1.view(), heads(q, tq, hq), heads(k, tk, hkv),
                   heads(v, tk, hkv), m, opt);
  unsetenv("KILN_ATTENTION_FWD");
  const TensorView table_view(bt.dev.data(), DType::i32, Device::cuda(0), {batch, max_pages});
  attention_varlen_paged(heads(out2, tq, hq), lse2.view(), heads(q, tq, hq), cache(ck), cache(cv),
                         table_view, m, opt);
  EXPECT_EQ(last_receipt().backend, "cuda");
  testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen_paged");
  for (Mirrored* x : {&out1, &out2, &lse1, &lse2, &bad}) x->download();
  EXPECT_EQ(out1.host.bytes, out2.host.bytes) << "out";
  EXPECT_EQ(lse1.host.bytes, lse2.host.bytes) << "lse";
  EXPECT_EQ(reinterpret_cast<const int32_t*>(bad.host.bytes.data())[0], 0);

  // A page id past the cache: counted (by the reporter CTA), never read.
  table[3 * max_pages] = static_cast<int32_t>(pages + 1000);
  std::memcpy(bt.host.bytes.data(), table.data(), table.size() * 4);
  bt.upload();
  attention_varlen_paged(heads(out2, tq, hq), lse2.view(), heads(q, tq, hq), cache(ck), cache(cv),
                         table_view, m, opt);
  testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen_paged (bad page)");
  bad.download();
  EXPECT_EQ(reinterpret_cast<const int32_t*>(bad.host.bytes.data())[0], 1);
}

INSTANTIATE_TEST_SUITE_P(Pages, AttentionPagedCuda,
                         ::testing::Values(PagedCase{DType::bf16, 64, 16, true},
                                           PagedCase{DType::bf16, 128, 16, false},
                                           PagedCase{DType::f16, 128, 64, true},
                                           PagedCase{DType::bf16, 256, 32, true}),
                         [](const auto& info) {
                           const PagedCase& c = info.param;
                           return std::string(dtype_name(c.dtype)) + "_d" + std::to_string(c.d) +
                                  "_page" + std::to_string(c.page_size) +
                                  (c.causal ? "_causal" : "");
                         });

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// K and V of more than 2^31 elements (1 head x 128 x 2^24 + 64 tokens): sequence 1's keys sit
// past element 2^31, and its last queries see only the last 40 keys (causal, window 40). Rows
// outside the tiles the kernel may load stay NaN (HostTensor's fill), so a wrong offset shows. The
// expected output is computed here in float64 over the visible keys only.
TEST(AttentionCudaLarge, MoreThan2Pow31ElementKv) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  constexpr int64_t kD = 128, kLk1 = int64_t{1} << 24, kLeft = 40;
  const std::vector<int32_t> cu_q{0, 2, 5}, cu_k{0, 64, static_cast<int32_t>(64 + kLk1)};
  const int64_t tq = 5, tk = cu_k.back();
  ASSERT_GT(tk * kD, int64_t{1} << 31);
  std::mt19937_64 rng(31);
  HostTensor q_h(DType::bf16, {tq, kD}), k_h(DType::bf16, {tk, kD}), v_h(DType::bf16, {tk, kD});
  q_h.randn(rng);
  HostRandom random(rng());
  auto fill = [&](int64_t row) {
    for (int64_t e = 0; e < kD; ++e) {
      k_h.set(row, e, random.normal());
      v_h.set(row, e, random.normal());
    }
  };
  for (int64_t r = 0; r < 64; ++r) fill(r);  // sequence 0: every key visible
  // Sequence 1: the key tiles its windows touch (masked keys of a loaded tile must be finite:
  // P = 0 times a NaN row would still be NaN, as in any flash kernel).
  for (int64_t r = tk - 256; r < tk; ++r) fill(r);
  Mirrored q(q_h), k(k_h), v(v_h), cuq(int32_tensor(cu_q)), cuk(int32_tensor(cu_k)),
      out(HostTensor(DType::bf16, {tq, kD})), lse(HostTensor(DType::f32, {1, tq}));
  for (Mirrored* m : {&q, &k, &v, &cuq, &cuk}) m->upload();
  out.poison();
  lse.poison();
  AttentionMasks m;
  m.cu_seqlens_q = cuq.view();
  m.cu_seqlens_k = cuk.view();
  m.causal = true;
  m.window_left = kLeft;
  AttentionOptions opt;
  opt.softmax_scale = 1.0 / std::sqrt(static_cast<double>(kD));
  auto heads = [&](Mirrored& x, int64_t rows) {
    return heads_view(x.dev.data(), DType::bf16, Device::cuda(0), rows, 1, kD, kD);
  };
  attention_varlen(heads(out, tq), lse.view(), heads(q, tq), heads(k, tk), heads(v, tk), m, opt);
  testing::cuda_ok(cudaDeviceSynchronize(), "attention_varlen (> 2^31 elements)");
  out.download();
  lse.download();
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
    for (int64_t i = 0; i < lq; ++i) {
      const int64_t diag = i + lk - lq, lo = std::max<int64_t>(0, diag - kLeft);
      std::vector<double> s;
      double top = -1e300;
      for (int64_t j = lo; j <= diag; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < kD; ++e) {
          dot += q_h.at(cu_q[b] + i, e) * k_h.at(cu_k[b] + j, e);
        }
        s.push_back(dot * opt.softmax_scale);
        top = std::max(top, s.back());
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - top));
      const int64_t row = cu_q[b] + i;
      EXPECT_NEAR(lse.host.at(0, row), top + std::log(sum), 2e-3) << "lse row " << row;
      for (int64_t e = 0; e < kD; ++e) {
        double want = 0;
        for (size_t t = 0; t < s.size(); ++t) want += s[t] / sum * v_h.at(cu_k[b] + lo + t, e);
        ASSERT_NEAR(out.host.at(row, e), want, 1e-2 * (1 + std::abs(want)))
            << "out row " << row << " dim " << e;
      }
    }
  }
}

}  // namespace
}  // namespace kiln
