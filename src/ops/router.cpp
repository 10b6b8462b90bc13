// The routers: validate, then the float64 reference on the host or the CUDA kernels.
#include "kiln/ops/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "core/check.h"
#include "core/element.h"
#include "cuda/topk/router_launch.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/topk.h"
#include "ops/router_problem.h"
#include "ref/router.h"

namespace kiln {
namespace {

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

}  // namespace

void router(const TensorView& weights, const TensorView& ids, const TensorView& logits,
            const RouterConfig& c, Stream stream) {
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
  RouterProblem p;
  p.op = op;
  p.device = logits.device;
  p.dtype = logits.dtype;
  p.kind = c.kind;
  p.rows = rows;
  p.experts = experts;
  p.k = c.k;
  p.renormalize = c.renormalize;
  if (c.bias.defined()) {
    if (experts > 1 && c.bias.stride(0) != 1) {
      throw_arg_error(op, "bias", "a contiguous vector",
                      "stride " + std::to_string(c.bias.stride(0)));
    }
    p.bias = static_cast<const float*>(c.bias.data);
  }
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.scale = c.routed_scaling_factor;
  p.logits = check::rows_of(op, "logits", logits);
  p.weights = check::rows_of(op, "weights", weights);
  p.ids = check::rows_of(op, "ids", ids);
  if (p.device.is_cuda() && p.kind == RouterKind::deepseek_v3 && p.n_group > 32) {
    throw_arg_error(op, "n_group", "<= 32 on CUDA", std::to_string(p.n_group));
  }
  run_on_backend(
      p, "ref::router", [&] { ref::router(p); }, [&] { return cuda::router(p, stream); });
}

void hash_router(const TensorView& weights, const TensorView& ids, const TensorView& token_ids,
                 const TensorView& table, const TensorView& bad_token_ids, Stream stream) {
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
  HashRouterProblem p;
  p.op = op;
  p.device = token_ids.device;
  p.rows = token_ids.size(0);
  p.vocab = table.size(0);
  p.k = table.size(1);
  check_outputs(op, weights, ids, p.rows, p.k, p.device);
  p.bad = check::counter(op, "bad_token_ids", bad_token_ids, p.device);
  p.token_ids = static_cast<const int64_t*>(token_ids.data);
  p.token_stride = token_ids.stride(0);
  p.table = static_cast<const int32_t*>(table.data);
  p.weights = static_cast<float*>(weights.data);
  p.ids = static_cast<int32_t*>(ids.data);
  for (int d = 0; d < 2; ++d) {
    p.table_stride[d] = table.stride(d);
    p.weights_stride[d] = weights.stride(d);
    p.ids_stride[d] = ids.stride(d);
  }
  run_on_backend(
      p, "ref::hash_router", [&] { ref::hash_router(p); },
      [&] { return cuda::hash_router(p, stream); });
}

}  // namespace kiln
