// Entry points of bias_dropout_add: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/dropout.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "core/backend.h"
#include "cuda/dropout/dropout_config.h"
#include "cuda/dropout/dropout_launch.h"
#include "ops/dropout_problem.h"
#include "ref/dropout.h"

namespace kiln {
namespace {

DropoutProblem make_problem(std::string_view op, bool backward, const TensorView& first,
                            const char* first_name, double p, uint64_t seed, uint64_t offset,
                            bool training) {
  check::present(op, first_name, first);
  check::rank_at_least(op, first_name, first, 1);
  check::dtype_in(op, first_name, first, {DType::f32, DType::bf16, DType::f16});
  if (!(p >= 0 && p <= 1)) throw_arg_error(op, "p", "a probability in [0, 1]", std::to_string(p));
  DropoutProblem d;
  d.op = op;
  d.backward = backward;
  d.device = first.device;
  d.dtype = first.dtype;
  d.x = check::rows_of(op, first_name, first);
  d.rows = d.x.rows;
  d.cols = d.x.cols;
  d.masked = training && p > 0;
  d.p = d.masked ? static_cast<float>(p) : 0.f;
  d.scale = !d.masked ? 1.f : p >= 1 ? 0.f : static_cast<float>(1.0 / (1.0 - p));
  d.seed = seed;
  d.offset = offset;
  return d;
}

void* bias_like(std::string_view op, std::string_view arg, const TensorView& t,
                const TensorView& first) {
  if (!t.defined()) return nullptr;
  check::same_device(op, arg, t, first.device);
  check::same_dtype(op, arg, t, first.dtype);
  check::vector_of(op, arg, t, first.size(-1));
  return t.data;
}

void run(const DropoutProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::bias_dropout_add", [&] { ref::bias_dropout_add(p); },
      [&] { return cuda::bias_dropout_add(p, stream); });
}

}  // namespace

void bias_dropout_add(const TensorView& out, const TensorView& x, const TensorView& bias,
                      const TensorView& residual, double p, uint64_t seed, uint64_t offset,
                      bool training, Stream stream) {
  constexpr std::string_view op = "bias_dropout_add";
  DropoutProblem d = make_problem(op, false, x, "x", p, seed, offset, training);
  d.residual = check::like(op, "residual", residual, x);
  d.out = check::like(op, "out", out, x);
  d.bias = bias_like(op, "bias", bias, x);
  run(d, stream);
}

size_t bias_dropout_add_backward_workspace_size(const TensorView& dout) {
  constexpr std::string_view op = "bias_dropout_add_backward_workspace_size";
  check::present(op, "dout", dout);
  check::rank_at_least(op, "dout", dout, 1);
  check::dtype_in(op, "dout", dout, {DType::f32, DType::bf16, DType::f16});
  if (!dout.device.is_cuda()) return 0;
  const check::RowMatrix m = check::rows_of(op, "dout", dout);
  return cuda::dropout_backward_workspace_bytes(m.rows, m.cols,
                                                static_cast<int>(dtype_size(dout.dtype)));
}

void bias_dropout_add_backward(const TensorView& dx, const TensorView& dbias,
                               const TensorView& dout, double p, uint64_t seed, uint64_t offset,
                               bool training, const Workspace& workspace, Stream stream) {
  constexpr std::string_view op = "bias_dropout_add_backward";
  DropoutProblem d = make_problem(op, true, dout, "dout", p, seed, offset, training);
  d.out = check::like(op, "dx", dx, dout);
  d.bias = bias_like(op, "dbias", dbias, dout);
  if (d.bias != nullptr && d.device.is_cuda()) {
    const size_t needed = bias_dropout_add_backward_workspace_size(dout);
    if (workspace.bytes < needed || reinterpret_cast<uintptr_t>(workspace.data) % 16 != 0) {
      throw_arg_error(op, "workspace",
                      "16-byte aligned, >= " + std::to_string(needed) + " bytes (for dbias)",
                      std::to_string(workspace.bytes) + " bytes, address % 16 = " +
                          std::to_string(reinterpret_cast<uintptr_t>(workspace.data) % 16));
    }
    d.workspace = workspace;
  }
  run(d, stream);
}

}  // namespace kiln
