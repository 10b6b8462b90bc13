#include "ref/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/element.h"
#include "ops/topk_problem.h"

namespace kiln::ref {
namespace {

// The first k of `candidates` in topk order of score.
std::vector<int64_t> top(const std::vector<double>& score, std::vector<int64_t> candidates,
                         int64_t k) {
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](int64_t a, int64_t b) { return topk_before(score[a], a, score[b], b); });
  candidates.resize(k);
  return candidates;
}

std::vector<int64_t> deepseek_candidates(const std::vector<double>& selection, int64_t n_group,
                                         int64_t topk_group) {
  const int64_t experts = static_cast<int64_t>(selection.size()), per = experts / n_group;
  std::vector<double> group_score(n_group);
  for (int64_t g = 0; g < n_group; ++g) {
    std::vector<int64_t> members(per);
    std::iota(members.begin(), members.end(), g * per);
    const std::vector<int64_t> best = top(selection, members, std::min<int64_t>(2, per));
    group_score[g] = 0;
    for (int64_t e : best) group_score[g] += selection[e];
  }
  std::vector<int64_t> groups(n_group);
  std::iota(groups.begin(), groups.end(), 0);
  std::vector<int64_t> candidates;
  for (int64_t g : top(group_score, groups, topk_group)) {
    for (int64_t e = g * per; e < (g + 1) * per; ++e) candidates.push_back(e);
  }
  std::sort(candidates.begin(), candidates.end());
  return candidates;
}

}  // namespace

void router(const RouterProblem& p) {
  std::vector<double> score(p.experts), selection(p.experts);
  std::vector<int64_t> all(p.experts);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < p.rows; ++t) {
    double top_logit = -INFINITY;
    for (int64_t e = 0; e < p.experts; ++e) {
      score[e] = element::load(p.logits.data, p.dtype, t * p.logits.row_stride + e);
      top_logit = std::max(top_logit, score[e]);
    }
    for (int64_t e = 0; e < p.experts; ++e) {
      const double x = score[e];
      if (p.kind == RouterKind::softmax) score[e] = std::exp(x - top_logit);
      if (p.kind == RouterKind::deepseek_v3) score[e] = 1 / (1 + std::exp(-x));
      if (p.kind == RouterKind::activation) {
        score[e] = std::sqrt(std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))));
      }
      const double b = p.bias ? p.bias[e] : 0;
      selection[e] = score[e] + b;
    }
    if (p.kind == RouterKind::softmax) {
      const double sum = std::accumulate(score.begin(), score.end(), 0.0);
      for (double& s : score) s /= sum;
      selection = score;
    }
    const std::vector<int64_t> picks =
        p.kind == RouterKind::deepseek_v3
            ? top(selection, deepseek_candidates(selection, p.n_group, p.topk_group), p.k)
            : top(selection, all, p.k);
    double norm = 1;
    if (p.kind != RouterKind::softmax || p.renormalize) {
      norm = 0;
      for (int64_t e : picks) norm += score[e];
    }
    const double scale = p.kind == RouterKind::deepseek_v3 ? p.scale : 1.0;
    for (int64_t j = 0; j < p.k; ++j) {
      static_cast<float*>(p.weights.data)[t * p.weights.row_stride + j] =
          static_cast<float>(score[picks[j]] / norm * scale);
      static_cast<int32_t*>(p.ids.data)[t * p.ids.row_stride + j] = static_cast<int32_t>(picks[j]);
    }
  }
}

void dense_router(const DenseRouterProblem& p) {
  const int64_t tokens = p.router.rows, experts = p.router.experts;
  std::vector<float> scratch;
  RouterProblem r = p.router;
  if (!p.logits_given) {
    scratch.resize(static_cast<size_t>(tokens * experts));
    r.logits = {scratch.data(), DType::f32, tokens, experts, experts};
  }
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t e = 0; e < experts; ++e) {
      double dot = 0;
      for (int64_t h = 0; h < p.hidden; ++h) {
        dot += element::load(p.x.data, p.x.dtype, t * p.x.row_stride + h) *
               element::load(p.gate, p.x.dtype, e * p.hidden + h);
      }
      static_cast<float*>(r.logits.data)[t * r.logits.row_stride + e] = static_cast<float>(dot);
    }
  }
  router(r);
}

void hash_router(const HashRouterProblem& p) {
  for (int64_t t = 0; t < p.rows; ++t) {
    const int64_t tok = p.token_ids[t * p.token_stride];
    const bool ok = tok >= 0 && tok < p.vocab;
    if (!ok && p.bad) ++*p.bad;
    for (int64_t j = 0; j < p.k; ++j) {
      p.ids[t * p.ids_stride[0] + j * p.ids_stride[1]] =
          ok ? p.table[tok * p.table_stride[0] + j * p.table_stride[1]] : -1;
      p.weights[t * p.weights_stride[0] + j * p.weights_stride[1]] =
          ok ? 1.f / static_cast<float>(p.k) : 0.f;
    }
  }
}

}  // namespace kiln::ref
