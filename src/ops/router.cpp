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
#include "cuda/common/device_info.h"
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

// The config checked for logits [rows, experts] on `device` (and the outputs): a RouterProblem
// with everything but the logits filled in.
RouterProblem router_problem(std::string_view op, const TensorView& weights, const TensorView& ids,
                             int64_t rows, int64_t experts, const Device& device,
                             const RouterConfig& c) {
  if (experts < 1 || experts > kTopkMaxE) {
    throw_arg_error(op, "logits", "E in [1, " + std::to_string(kTopkMaxE) + "]",
                    std::to_string(experts));
  }
  if (c.k < 1 || c.k > std::min(experts, kTopkMaxK)) {
    throw_arg_error(op, "k", "1 <= k <= min(E, 32)", std::to_string(c.k));
  }
  check_outputs(op, weights, ids, rows, c.k, device);
  const bool needs_bias = c.kind == RouterKind::deepseek_v3;
  if (c.bias.defined()) {
    if (c.kind == RouterKind::softmax) {
      throw_arg_error(op, "bias", "absent for the softmax router", "a tensor");
    }
    check::same_device(op, "bias", c.bias, device);
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
  p.device = device;
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
  p.weights = check::rows_of(op, "weights", weights);
  p.ids = check::rows_of(op, "ids", ids);
  if (p.device.is_cuda() && p.kind == RouterKind::deepseek_v3 && p.n_group > 32) {
    throw_arg_error(op, "n_group", "<= 32 on CUDA", std::to_string(p.n_group));
  }
  return p;
}

}  // namespace

void router(const TensorView& weights, const TensorView& ids, const TensorView& logits,
            const RouterConfig& c, Stream stream) {
  constexpr std::string_view op = "router";
  check::present(op, "logits", logits);
  check::dtype_in(op, "logits", logits, {DType::f32, DType::bf16, DType::f16});
  if (logits.rank != 2) throw_arg_error(op, "logits", "rank 2 [T, E]", logits.shape_str());
  RouterProblem p =
      router_problem(op, weights, ids, logits.size(0), logits.size(1), logits.device, c);
  p.dtype = logits.dtype;
  p.logits = check::rows_of(op, "logits", logits);
  run_on_backend(
      p, "ref::router", [&] { ref::router(p); }, [&] { return cuda::router(p, stream); });
}

size_t dense_router_workspace_size(int64_t tokens, int64_t experts, int64_t hidden,
                                   const Device& device) {
  if (!device.is_cuda()) return 0;
  if constexpr (kCudaBuilt) {
    return cuda::dense_router_workspace_bytes(tokens, experts, hidden, cuda::sm_count(device));
  }
  return 0;
}

void dense_router(const TensorView& weights, const TensorView& ids, const TensorView& logits_out,
                  const TensorView& x, const TensorView& gate, const RouterConfig& c,
                  const Workspace& workspace, Stream stream) {
  constexpr std::string_view op = "dense_router";
  check::present(op, "x", x);
  check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16});
  if (x.rank != 2 || x.size(1) < 1) {
    throw_arg_error(op, "x", "rank 2 [T, H] with H >= 1", x.shape_str());
  }
  check::present(op, "gate", gate);
  check::same_device(op, "gate", gate, x.device);
  check::same_dtype(op, "gate", gate, x.dtype);
  if (gate.rank != 2 || gate.size(1) != x.size(1)) {
    throw_arg_error(op, "gate", "[E, H = " + std::to_string(x.size(1)) + "]", gate.shape_str());
  }
  if (!gate.is_contiguous()) throw_arg_error(op, "gate", "a contiguous tensor", gate.describe());
  const int64_t tokens = x.size(0), hidden = x.size(1), experts = gate.size(0);
  RouterProblem r = router_problem(op, weights, ids, tokens, experts, x.device, c);
  r.dtype = DType::f32;
  if (logits_out.defined()) {
    check::same_device(op, "logits_out", logits_out, x.device);
    check::dtype_in(op, "logits_out", logits_out, {DType::f32});
    if (logits_out.rank != 2 || logits_out.size(0) != tokens || logits_out.size(1) != experts) {
      throw_arg_error(op, "logits_out",
                      "f32 [" + std::to_string(tokens) + ", " + std::to_string(experts) + "]",
                      logits_out.describe());
    }
    r.logits = check::rows_of(op, "logits_out", logits_out);
  }
  DenseRouterProblem p;
  p.op = op;
  p.device = x.device;
  p.router = r;
  p.x = check::rows_of(op, "x", x);
  p.gate = gate.data;
  p.hidden = hidden;
  p.logits_given = logits_out.defined();
  if (p.device.is_cuda()) {
    const size_t need = dense_router_workspace_size(tokens, experts, hidden, x.device);
    if (workspace.bytes < need || (need > 0 && workspace.data == nullptr)) {
      throw_arg_error(op, "workspace", std::to_string(need) + " bytes",
                      std::to_string(workspace.bytes) + " bytes");
    }
    p.workspace = workspace;
  }
  run_on_backend(
      p, "ref::dense_router", [&] { ref::dense_router(p); },
      [&] { return cuda::dense_router(p, stream); });
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
  p.bad = check::optional_counter(op, "bad_token_ids", bad_token_ids, p.device);
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
