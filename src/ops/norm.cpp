// Entry points of the normalization family: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/norm.h"

#include "core/backend.h"
#include "cuda/norm/norm_launch.h"
#include "ops/norm_problem.h"
#include "ref/norm.h"

namespace kiln {
namespace {

void run_forward(const NormForwardProblem& p, Stream stream) {
  Receipt receipt{p.op, "reference", "ref::norm_forward", ""};
  if (p.device.is_cuda()) {
    require_cuda_built(p.op, p.device);
    receipt.backend = "cuda";
    if constexpr (kCudaBuilt) receipt.variant = cuda::norm_forward(p, stream);
  } else {
    ref::norm_forward(p);
  }
  record_receipt(std::move(receipt));
}

void run_backward(const NormBackwardProblem& p, const Workspace& workspace, Stream stream) {
  Receipt receipt{p.op, "reference", "ref::norm_backward", ""};
  if (p.device.is_cuda()) {
    require_cuda_built(p.op, p.device);
    receipt.backend = "cuda";
    if constexpr (kCudaBuilt) {
      const size_t needed = cuda::norm_backward_workspace_size(p.rows, p.cols, p.device);
      if ((p.dweight || p.dbias) && workspace.bytes < needed) {
        throw_arg_error(p.op, "workspace", ">= " + std::to_string(needed) + " bytes",
                        std::to_string(workspace.bytes) + " bytes");
      }
      receipt.variant = cuda::norm_backward(p, workspace, stream);
    }
  } else {
    ref::norm_backward(p);
  }
  record_receipt(std::move(receipt));
}

}  // namespace

void rms_norm(const TensorView& y, const TensorView& x, const TensorView& weight, double eps,
              Stream stream) {
  run_forward(check_norm_forward("rms_norm", NormKind::rms, y, {}, x, {}, weight, {}, eps), stream);
}

void add_rms_norm(const TensorView& y, const TensorView& residual_out, const TensorView& x,
                  const TensorView& residual, const TensorView& weight, double eps, Stream stream) {
  check::present("add_rms_norm", "residual", residual);
  check::present("add_rms_norm", "residual_out", residual_out);
  run_forward(check_norm_forward("add_rms_norm", NormKind::rms, y, residual_out, x, residual,
                                 weight, {}, eps),
              stream);
}

void layer_norm(const TensorView& y, const TensorView& x, const TensorView& weight,
                const TensorView& bias, double eps, Stream stream) {
  run_forward(check_norm_forward("layer_norm", NormKind::layer, y, {}, x, {}, weight, bias, eps),
              stream);
}

void add_layer_norm(const TensorView& y, const TensorView& residual_out, const TensorView& x,
                    const TensorView& residual, const TensorView& weight, const TensorView& bias,
                    double eps, Stream stream) {
  check::present("add_layer_norm", "residual", residual);
  check::present("add_layer_norm", "residual_out", residual_out);
  run_forward(check_norm_forward("add_layer_norm", NormKind::layer, y, residual_out, x, residual,
                                 weight, bias, eps),
              stream);
}

size_t norm_backward_workspace_size(const TensorView& x) {
  const check::RowMatrix m = check::rows_of("norm_backward_workspace_size", "x", x);
  if (!x.device.is_cuda() || !kCudaBuilt) return 0;
  return cuda::norm_backward_workspace_size(m.rows, m.cols, x.device);
}

void rms_norm_backward(const TensorView& dx, const TensorView& dweight, const TensorView& dy,
                       const TensorView& x, const TensorView& weight, double eps,
                       const TensorView& dresidual, const Workspace& workspace, Stream stream) {
  run_backward(check_norm_backward("rms_norm_backward", NormKind::rms, dx, dweight, {}, dy, x,
                                   weight, eps, dresidual),
               workspace, stream);
}

void layer_norm_backward(const TensorView& dx, const TensorView& dweight, const TensorView& dbias,
                         const TensorView& dy, const TensorView& x, const TensorView& weight,
                         double eps, const TensorView& dresidual, const Workspace& workspace,
                         Stream stream) {
  run_backward(check_norm_backward("layer_norm_backward", NormKind::layer, dx, dweight, dbias, dy,
                                   x, weight, eps, dresidual),
               workspace, stream);
}

}  // namespace kiln
