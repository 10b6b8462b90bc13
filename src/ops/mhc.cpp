// Entry points of the mHC family: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/mhc.h"

#include <cmath>
#include <string>

#include "core/backend.h"
#include "cuda/mhc/sinkhorn_launch.h"
#include "ops/mhc_problem.h"
#include "ref/mhc.h"

namespace kiln {
namespace {

SinkhornProblem make_problem(std::string_view op, const TensorView& logits, int iters, double eps) {
  check::present(op, "logits", logits);
  check::dtype_in(op, "logits", logits, {DType::f32, DType::bf16, DType::f16});
  if (logits.rank != 3 || logits.size(1) != logits.size(2) || logits.size(1) < 1 ||
      logits.size(1) > kSinkhornMaxN) {
    throw_arg_error(op, "logits", "shape [B, n, n] with 1 <= n <= " + std::to_string(kSinkhornMaxN),
                    "shape " + logits.shape_str());
  }
  if (iters < 1) throw_arg_error(op, "iters", ">= 1", std::to_string(iters));
  if (!(eps >= 0) || !std::isfinite(eps)) {
    throw_arg_error(op, "eps", "a finite value >= 0", std::to_string(eps));
  }
  SinkhornProblem p;
  p.op = op;
  p.device = logits.device;
  p.dtype = logits.dtype;
  p.batch = logits.size(0);
  p.n = static_cast<int>(logits.size(1));
  p.iters = iters;
  p.eps = eps;
  p.logits = check::rows_of(op, "logits", logits);
  return p;
}

void run(const SinkhornProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::sinkhorn_knopp", [&] { ref::sinkhorn_knopp(p); },
      [&] { return cuda::sinkhorn_knopp(p, stream); });
}

}  // namespace

void sinkhorn_knopp(const TensorView& out, const TensorView& logits, int iters, double eps,
                    Stream stream) {
  SinkhornProblem p = make_problem("sinkhorn_knopp", logits, iters, eps);
  p.out = check::like("sinkhorn_knopp", "out", out, logits);
  run(p, stream);
}

void sinkhorn_knopp_backward(const TensorView& dlogits, const TensorView& dout,
                             const TensorView& logits, int iters, double eps, Stream stream) {
  constexpr std::string_view op = "sinkhorn_knopp_backward";
  SinkhornProblem p = make_problem(op, logits, iters, eps);
  p.backward = true;
  p.dout = check::like(op, "dout", dout, logits);
  p.out = check::like(op, "dlogits", dlogits, logits);
  run(p, stream);
}

}  // namespace kiln
