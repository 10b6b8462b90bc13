// Entry point of topk: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/topk.h"

#include <string>

#include "core/backend.h"
#include "cuda/topk/topk_launch.h"
#include "ops/topk_problem.h"
#include "ref/topk.h"

namespace kiln {

void topk(const TensorView& values, const TensorView& indices, const TensorView& scores, int64_t k,
          bool softmax, Stream stream) {
  constexpr std::string_view op = "topk";
  check::present(op, "scores", scores);
  check::dtype_in(op, "scores", scores, {DType::f32, DType::bf16, DType::f16});
  if (scores.rank != 2) throw_arg_error(op, "scores", "rank 2 [T, E]", scores.shape_str());
  TopkProblem p;
  p.op = op;
  p.device = scores.device;
  p.dtype = scores.dtype;
  p.rows = scores.size(0);
  p.experts = scores.size(1);
  p.k = k;
  p.softmax = softmax;
  if (p.experts < 1 || p.experts > kTopkMaxE) {
    throw_arg_error(op, "scores", "E = scores.size(1) in [1, " + std::to_string(kTopkMaxE) + "]",
                    std::to_string(p.experts));
  }
  if (k < 1 || k > std::min(p.experts, kTopkMaxK)) {
    throw_arg_error(op, "k",
                    "1 <= k <= min(E, " + std::to_string(kTopkMaxK) +
                        ") = " + std::to_string(std::min(p.experts, kTopkMaxK)),
                    std::to_string(k));
  }
  p.scores = check::rows_of(op, "scores", scores);
  for (const auto& [arg, t] : {std::pair{"values", &values}, std::pair{"indices", &indices}}) {
    check::present(op, arg, *t);
    check::same_device(op, arg, *t, p.device);
    if (t->rank != 2 || t->size(0) != p.rows || t->size(1) != k) {
      throw_arg_error(op, arg, "shape [" + std::to_string(p.rows) + ", " + std::to_string(k) + "]",
                      t->shape_str());
    }
  }
  if (values.dtype != DType::f32 && values.dtype != p.dtype) {
    throw_arg_error(op, "values", "dtype f32 or scores' (" + std::string(dtype_name(p.dtype)) + ")",
                    dtype_name(values.dtype));
  }
  check::dtype_in(op, "indices", indices, {DType::i32});
  p.values_dtype = values.dtype;
  p.values = check::rows_of(op, "values", values);
  p.indices = check::rows_of(op, "indices", indices);
  run_on_backend(
      p, "ref::topk", [&] { ref::topk(p); }, [&] { return cuda::topk(p, stream); });
}

}  // namespace kiln
