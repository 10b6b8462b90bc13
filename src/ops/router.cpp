// The routers: validate, then the float64 reference on the host (the CUDA kernels are to come;
// CUDA tensors are refused with a message until then).
#include "kiln/ops/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/element.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/topk.h"
#include "ops/topk_problem.h"

namespace kiln {
namespace {

void refuse_cuda(std::string_view op, const Device& device) {
  if (device.is_cuda()) {
    throw Error(std::string(op) +
                ": no CUDA kernel in this build yet (issue 5); CPU tensors run the reference");
  }
}

// weights f32 [T, k] and ids int32 [T, k] on `device`.
void check_outputs(std::string_view op, const TensorView& weights, const TensorView& ids,
                   int64_t rows, int64_t k, const Device& device) {
  for (const auto& [arg, t, dtype] :
       {std::tuple{"weights", &weights, DType::f32}, std::tuple{"ids", &ids, DType::i32}}) {
    check::present(op, arg, *t);
    check::same_device(op, arg, *t, device);
    check::dtype_in(op, arg, *t, {dtype});
    if (t->rank != 2 || t->size(0) != rows || t->size(1) != k) {
      throw_arg_error(op, arg, "shape [" + std::to_string(rows) + ", " + std::to_string(k) + "]",
                      t->shape_str());
    }
  }
}

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

void router(const TensorView& weights, const TensorView& ids, const TensorView& logits,
            const RouterConfig& c, Stream) {
  constexpr std::string_view op = "router";
  check::present(op, "logits", logits);
  check::dtype_in(op, "logits", logits, {DType::f32, DType::bf16, DType::f16});
  if (logits.rank != 2) throw_arg_error(op, "logits", "rank 2 [T, E]", logits.shape_str());
  const int64_t rows = logits.size(0), experts = logits.size(1);
  if (experts < 1 || experts > kTopkMaxE) {
    throw_arg_error(op, "logits", "E in [1, " + std::to_string(kTopkMaxE) + "]",
                    std::to_string(experts));
  }
  if (c.k < 1 || c.k > std::min(experts, kTopkMaxK)) {
    throw_arg_error(op, "k", "1 <= k <= min(E, 32)", std::to_string(c.k));
  }
  check_outputs(op, weights, ids, rows, c.k, logits.device);
  const bool needs_bias = c.kind == RouterKind::deepseek_v3;
  if (c.bias.defined()) {
    if (c.kind == RouterKind::softmax) {
      throw_arg_error(op, "bias", "absent for the softmax router", "a tensor");
    }
    check::same_device(op, "bias", c.bias, logits.device);
    check::dtype_in(op, "bias", c.bias, {DType::f32});
    check::vector_of(op, "bias", c.bias, experts);
  } else if (needs_bias) {
    throw_arg_error(op, "bias", "f32 [E] for the deepseek_v3 router", "absent");
  }
  if (c.kind == RouterKind::deepseek_v3) {
    if (c.n_group < 1 || experts % c.n_group != 0) {
      throw_arg_error(op, "n_group", "a divisor of E = " + std::to_string(experts),
                      std::to_string(c.n_group));
    }
    if (c.topk_group < 1 || c.topk_group > c.n_group ||
        c.topk_group * (experts / c.n_group) < c.k) {
      throw_arg_error(op, "topk_group", "in [1, n_group] with topk_group * E / n_group >= k",
                      std::to_string(c.topk_group));
    }
  }
  refuse_cuda(op, logits.device);
  std::vector<double> score(experts), selection(experts);
  std::vector<int64_t> all(experts);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < rows; ++t) {
    double top_logit = -INFINITY;
    for (int64_t e = 0; e < experts; ++e) {
      score[e] = element::load(logits.data, logits.dtype, t * logits.stride(0) + e);
      top_logit = std::max(top_logit, score[e]);
    }
    for (int64_t e = 0; e < experts; ++e) {
      const double x = score[e];
      if (c.kind == RouterKind::softmax) score[e] = std::exp(x - top_logit);
      if (c.kind == RouterKind::deepseek_v3) score[e] = 1 / (1 + std::exp(-x));
      if (c.kind == RouterKind::activation) {
        score[e] = std::sqrt(std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))));
      }
      const double b =
          c.bias.defined() ? static_cast<const float*>(c.bias.data)[e * c.bias.stride(0)] : 0;
      selection[e] = score[e] + b;
    }
    if (c.kind == RouterKind::softmax) {
      const double sum = std::accumulate(score.begin(), score.end(), 0.0);
      for (double& s : score) s /= sum;
      selection = score;
    }
    const std::vector<int64_t> picks =
        c.kind == RouterKind::deepseek_v3
            ? top(selection, deepseek_candidates(selection, c.n_group, c.topk_group), c.k)
            : top(selection, all, c.k);
    double norm = 1;
    if (c.kind != RouterKind::softmax || c.renormalize) {
      norm = 0;
      for (int64_t e : picks) norm += score[e];
    }
    const double scale = c.kind == RouterKind::deepseek_v3 ? c.routed_scaling_factor : 1.0;
    for (int64_t j = 0; j < c.k; ++j) {
      static_cast<float*>(weights.data)[t * weights.stride(0) + j * weights.stride(1)] =
          static_cast<float>(score[picks[j]] / norm * scale);
      static_cast<int32_t*>(ids.data)[t * ids.stride(0) + j * ids.stride(1)] =
          static_cast<int32_t>(picks[j]);
    }
  }
  record_receipt({std::string(op), "reference", "host", ""});
}

void hash_router(const TensorView& weights, const TensorView& ids, const TensorView& token_ids,
                 const TensorView& table, const TensorView& bad_token_ids, Stream) {
  constexpr std::string_view op = "hash_router";
  check::present(op, "token_ids", token_ids);
  check::dtype_in(op, "token_ids", token_ids, {DType::i64});
  if (token_ids.rank != 1) throw_arg_error(op, "token_ids", "rank 1 [T]", token_ids.shape_str());
  check::present(op, "table", table);
  check::same_device(op, "table", table, token_ids.device);
  check::dtype_in(op, "table", table, {DType::i32});
  if (table.rank != 2 || table.size(1) < 1) {
    throw_arg_error(op, "table", "[vocab, k] with k >= 1", table.shape_str());
  }
  const int64_t rows = token_ids.size(0), vocab = table.size(0), k = table.size(1);
  check_outputs(op, weights, ids, rows, k, token_ids.device);
  int32_t* bad = check::counter(op, "bad_token_ids", bad_token_ids, token_ids.device);
  refuse_cuda(op, token_ids.device);
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t tok = static_cast<const int64_t*>(token_ids.data)[t * token_ids.stride(0)];
    const bool ok = tok >= 0 && tok < vocab;
    if (!ok) ++*bad;
    for (int64_t j = 0; j < k; ++j) {
      static_cast<int32_t*>(ids.data)[t * ids.stride(0) + j * ids.stride(1)] =
          ok ? static_cast<const int32_t*>(table.data)[tok * table.stride(0) + j * table.stride(1)]
             : -1;
      static_cast<float*>(weights.data)[t * weights.stride(0) + j * weights.stride(1)] =
          ok ? 1.f / static_cast<float>(k) : 0.f;
    }
  }
  record_receipt({std::string(op), "reference", "host", ""});
}

}  // namespace kiln
