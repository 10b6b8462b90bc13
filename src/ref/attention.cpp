#include "ref/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln::ref {

attention::SequenceShape AttentionShape::sequence(int64_t b) const {
  const int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
  return {lq, lk, valid_q.empty() ? lq : valid_q[b], valid_k.empty() ? lk : valid_k[b]};
}

bool AttentionShape::visible(int64_t b, int64_t i, int64_t j) const {
  const int64_t dq = doc_q.empty() ? 0 : doc_q[cu_q[b] + i];
  const int64_t dk = doc_k.empty() ? 0 : doc_k[cu_k[b] + j];
  return attention::visible(rules, sequence(b), i, j, dq, dk);
}

namespace {

// The scores of query row (b, i, h) against every key of sequence b: raw = scale q·k, the
// soft-capped score, and whether the key is visible.
struct Scores {
  std::vector<double> raw, capped;
  std::vector<bool> seen;
};

Scores scores(const AttentionShape& s, const double* q, const double* k, int64_t b, int64_t i,
              int64_t h) {
  const int64_t lk = s.cu_k[b + 1] - s.cu_k[b], kv = h / (s.hq / s.hkv);
  Scores r{std::vector<double>(lk), std::vector<double>(lk), std::vector<bool>(lk)};
  const double* qrow = q + ((s.cu_q[b] + i) * s.hq + h) * s.d;
  for (int64_t j = 0; j < lk; ++j) {
    r.seen[j] = s.visible(b, i, j);
    if (!r.seen[j]) continue;
    const double* krow = k + ((s.cu_k[b] + j) * s.hkv + kv) * s.d;
    double dot = 0;
    for (int64_t e = 0; e < s.d; ++e) dot += qrow[e] * krow[e];
    r.raw[j] = s.scale * dot;
    r.capped[j] = s.softcap > 0 ? s.softcap * std::tanh(r.raw[j] / s.softcap) : r.raw[j];
  }
  return r;
}

// Softmax probabilities of the visible keys (0 elsewhere) and the log-sum-exp (-inf if none).
double softmax(const Scores& sc, std::vector<double>& p) {
  double top = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < sc.capped.size(); ++j) {
    if (sc.seen[j]) top = std::max(top, sc.capped[j]);
  }
  p.assign(sc.capped.size(), 0.0);
  if (std::isinf(top)) return top;
  double sum = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    if (sc.seen[j]) sum += p[j] = std::exp(sc.capped[j] - top);
  }
  for (double& x : p) x /= sum;
  return top + std::log(sum);
}

// Calls row(b, i, t, h, kv) for every query row: sequence b, its query i (token t), head h and
// the kv head h reads.
template <typename Row>
void for_each_query_row(const AttentionShape& s, Row&& row) {
  for (int64_t b = 0; b < s.batch(); ++b) {
    for (int64_t i = 0; i < s.cu_q[b + 1] - s.cu_q[b]; ++i) {
      for (int64_t h = 0; h < s.hq; ++h) row(b, i, s.cu_q[b] + i, h, h / (s.hq / s.hkv));
    }
  }
}

}  // namespace

void attention_forward(const AttentionShape& s, const double* q, const double* k, const double* v,
                       double* out, double* lse) {
  std::vector<double> p;
  for_each_query_row(s, [&](int64_t b, int64_t i, int64_t t, int64_t h, int64_t kv) {
    lse[h * s.total_q() + t] = softmax(scores(s, q, k, b, i, h), p);
    double* o = out + (t * s.hq + h) * s.dv;
    std::fill(o, o + s.dv, 0.0);
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[j] == 0) continue;
      const double* vrow = v + ((s.cu_k[b] + j) * s.hkv + kv) * s.dv;
      for (int64_t e = 0; e < s.dv; ++e) o[e] += p[j] * vrow[e];
    }
  });
}

void attention_backward(const AttentionShape& s, const double* q, const double* k, const double* v,
                        const double* dout, double* dq, double* dk, double* dv) {
  std::fill(dq, dq + s.total_q() * s.hq * s.d, 0.0);
  std::fill(dk, dk + s.total_k() * s.hkv * s.d, 0.0);
  std::fill(dv, dv + s.total_k() * s.hkv * s.dv, 0.0);
  std::vector<double> p;
  for_each_query_row(s, [&](int64_t b, int64_t i, int64_t t, int64_t h, int64_t kv) {
    const Scores sc = scores(s, q, k, b, i, h);
    softmax(sc, p);
    const double* g = dout + (t * s.hq + h) * s.dv;
    // dp_j = dout · v_j; the softmax's backward subtracts sum_j p_j dp_j.
    std::vector<double> dp(p.size(), 0.0);
    double mean = 0;
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[j] == 0) continue;
      const int64_t row = (s.cu_k[b] + j) * s.hkv + kv;
      for (int64_t e = 0; e < s.dv; ++e) {
        dp[j] += g[e] * v[row * s.dv + e];
        dv[row * s.dv + e] += p[j] * g[e];
      }
      mean += p[j] * dp[j];
    }
    const double* qrow = q + (t * s.hq + h) * s.d;
    double* dqrow = dq + (t * s.hq + h) * s.d;
    for (size_t j = 0; j < p.size(); ++j) {
      if (p[j] == 0) continue;
      double ds = p[j] * (dp[j] - mean);
      if (s.softcap > 0) {
        const double th = std::tanh(sc.raw[j] / s.softcap);
        ds *= 1 - th * th;
      }
      ds *= s.scale;
      const int64_t row = (s.cu_k[b] + j) * s.hkv + kv;
      for (int64_t e = 0; e < s.d; ++e) {
        dqrow[e] += ds * k[row * s.d + e];
        dk[row * s.d + e] += ds * qrow[e];
      }
    }
  });
}

}  // namespace kiln::ref
