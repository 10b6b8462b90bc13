// The float64 attention reference against the math: hand-worked softmax, the mask contracts
// (bottom-right causality, validity prefixes, documents, empty sequences), GQA as repeated heads,
// and the backward against central finite differences.
#include "ref/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace kiln::ref {
namespace {

std::vector<double> random_vector(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  return v;
}

struct Forward {
  std::vector<double> out, lse;
};

Forward forward(const AttentionShape& s, const std::vector<double>& q, const std::vector<double>& k,
                const std::vector<double>& v) {
  Forward r{std::vector<double>(s.total_q() * s.hq * s.dv, NAN),
            std::vector<double>(s.hq * s.total_q(), NAN)};
  attention_forward(s, q.data(), k.data(), v.data(), r.out.data(), r.lse.data());
  return r;
}

TEST(AttentionRef, HandWorkedSoftmax) {
  AttentionShape s;
  s.cu_q = {0, 1};
  s.cu_k = {0, 2};
  // scores 0 and ln 3: probabilities 1/4 and 3/4.
  const Forward r = forward(s, {1.0}, {0.0, std::log(3.0)}, {4.0, 8.0});
  EXPECT_NEAR(r.out[0], 7.0, 1e-12);
  EXPECT_NEAR(r.lse[0], std::log(4.0), 1e-12);
}

TEST(AttentionRef, CausalFirstRowSeesOnlyItselfAndDecodeSeesAll) {
  std::mt19937_64 rng(1);
  AttentionShape s;
  s.cu_q = {0, 3, 4};  // a 3-token prefill, then a 1-query decode over 4 keys
  s.cu_k = {0, 3, 7};
  s.rules.causal = true;
  const auto q = random_vector(4, rng), k = random_vector(7, rng), v = random_vector(7, rng);
  const Forward r = forward(s, q, k, v);
  EXPECT_EQ(r.out[0], v[0]);
  // The decode query is the last of its 4 key positions: it sees all of them.
  AttentionShape full = s;
  full.rules.causal = false;
  EXPECT_EQ(forward(full, q, k, v).out[3], r.out[3]);
}

TEST(AttentionRef, InvalidRowsAndEmptySequences) {
  std::mt19937_64 rng(2);
  AttentionShape s;
  s.cu_q = {0, 2, 2, 5};  // the middle sequence is empty
  s.cu_k = {0, 3, 3, 6};
  s.valid_q = {1, 0, 3};
  s.valid_k = {3, 0, 2};
  const auto q = random_vector(5, rng), k = random_vector(6, rng), v = random_vector(6, rng);
  const Forward r = forward(s, q, k, v);
  EXPECT_EQ(r.out[1], 0.0);  // query 1 of sequence 0 is past its valid prefix
  EXPECT_TRUE(std::isinf(r.lse[1]) && r.lse[1] < 0);
  for (int t : {0, 2, 3, 4}) EXPECT_TRUE(std::isfinite(r.lse[t])) << t;
  // Keys past valid_k are never used: changing them changes nothing.
  auto v2 = v;
  v2[5] = 1e6;
  EXPECT_EQ(forward(s, q, k, v2).out, r.out);
}

TEST(AttentionRef, DocumentsEqualSeparateSequences) {
  std::mt19937_64 rng(3);
  AttentionShape packed;
  packed.cu_q = packed.cu_k = {0, 5};
  packed.doc_q = packed.doc_k = {0, 0, 0, 1, 1};
  packed.rules.causal = true;
  AttentionShape split;
  split.cu_q = split.cu_k = {0, 3, 5};
  split.rules.causal = true;
  const auto q = random_vector(5, rng), k = random_vector(5, rng), v = random_vector(5, rng);
  EXPECT_EQ(forward(packed, q, k, v).out, forward(split, q, k, v).out);
}

TEST(AttentionRef, GqaIsRepeatedKvHeads) {
  std::mt19937_64 rng(4);
  AttentionShape gqa;
  gqa.cu_q = gqa.cu_k = {0, 4};
  gqa.hq = 4;
  gqa.hkv = 2;
  gqa.d = gqa.dv = 3;
  gqa.scale = 0.5;
  gqa.rules.causal = true;
  AttentionShape mha = gqa;
  mha.hkv = 4;
  const auto q = random_vector(4 * 4 * 3, rng), k = random_vector(4 * 2 * 3, rng),
             v = random_vector(4 * 2 * 3, rng), dout = random_vector(4 * 4 * 3, rng);
  // Repeat kv head j into heads 2j and 2j + 1.
  std::vector<double> k4(4 * 4 * 3), v4(4 * 4 * 3);
  for (int t = 0; t < 4; ++t) {
    for (int h = 0; h < 4; ++h) {
      for (int e = 0; e < 3; ++e) {
        k4[(t * 4 + h) * 3 + e] = k[(t * 2 + h / 2) * 3 + e];
        v4[(t * 4 + h) * 3 + e] = v[(t * 2 + h / 2) * 3 + e];
      }
    }
  }
  EXPECT_EQ(forward(gqa, q, k, v).out, forward(mha, q, k4, v4).out);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), dq4(q.size()), dk4(k4.size()),
      dv4(v4.size());
  attention_backward(gqa, q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(),
                     dv.data());
  attention_backward(mha, q.data(), k4.data(), v4.data(), dout.data(), dq4.data(), dk4.data(),
                     dv4.data());
  for (size_t i = 0; i < dq.size(); ++i) EXPECT_NEAR(dq[i], dq4[i], 1e-12);
  for (int t = 0; t < 4; ++t) {
    for (int j = 0; j < 2; ++j) {
      for (int e = 0; e < 3; ++e) {
        const double sum_k = dk4[(t * 4 + 2 * j) * 3 + e] + dk4[(t * 4 + 2 * j + 1) * 3 + e];
        const double sum_v = dv4[(t * 4 + 2 * j) * 3 + e] + dv4[(t * 4 + 2 * j + 1) * 3 + e];
        EXPECT_NEAR(dk[(t * 2 + j) * 3 + e], sum_k, 1e-12);
        EXPECT_NEAR(dv[(t * 2 + j) * 3 + e], sum_v, 1e-12);
      }
    }
  }
}

TEST(AttentionRef, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(5);
  AttentionShape s;
  s.cu_q = {0, 3, 5};
  s.cu_k = {0, 5, 7};
  s.doc_q = {0, 0, 1, 2, 2};
  s.doc_k = {0, 0, 0, 1, 1, 2, 2};
  s.hq = 2;
  s.hkv = 1;
  s.d = 3;
  s.dv = 2;
  s.scale = 0.7;
  s.softcap = 2.0;
  s.rules = {true, 3, -1};
  auto q = random_vector(5 * 2 * 3, rng), k = random_vector(7 * 1 * 3, rng),
       v = random_vector(7 * 1 * 2, rng);
  const auto dout = random_vector(5 * 2 * 2, rng);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(s, q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data());
  auto loss = [&] {
    const Forward r = forward(s, q, k, v);
    double sum = 0;
    for (size_t i = 0; i < dout.size(); ++i) sum += r.out[i] * dout[i];
    return sum;
  };
  const double h = 1e-6;
  auto check = [&](std::vector<double>& x, const std::vector<double>& grad, const char* name) {
    for (size_t i = 0; i < x.size(); ++i) {
      const double keep = x[i];
      x[i] = keep + h;
      const double up = loss();
      x[i] = keep - h;
      const double down = loss();
      x[i] = keep;
      EXPECT_NEAR(grad[i], (up - down) / (2 * h), 1e-7 * (1 + std::fabs(grad[i])))
          << name << "[" << i << "]";
    }
  };
  check(q, dq, "dq");
  check(k, dk, "dk");
  check(v, dv, "dv");
  // The gradient is not trivially zero (the documents and window leave some pairs visible).
  double norm = 0;
  for (double g : dk) norm += g * g;
  EXPECT_GT(norm, 1e-3);
}

}  // namespace
}  // namespace kiln::ref
