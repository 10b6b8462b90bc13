// Entry points of the activation family: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/activation.h"

#include <string>

#include "core/backend.h"
#include "cuda/activation/activation_launch.h"
#include "ops/activation_problem.h"
#include "ref/activation.h"

namespace kiln {
namespace {

constexpr std::initializer_list<DType> kDtypes = {DType::f32, DType::bf16, DType::f16};

struct Named {
  const char* name;
  const TensorView* t;
};

// Checks every tensor of a call against the first input and builds the problem. `inputs` are
// (a[, b]), `outputs` (out0[, out1]); dy is checked when given.
ActivationProblem make_problem(std::string_view op, act::Kind kind,
                               std::initializer_list<Named> inputs, const Named* dy,
                               std::initializer_list<Named> outputs) {
  const TensorView& first = *inputs.begin()->t;
  check::present(op, inputs.begin()->name, first);
  check::rank_at_least(op, inputs.begin()->name, first, 1);
  check::dtype_in(op, inputs.begin()->name, first, kDtypes);
  ActivationProblem p;
  p.op = op;
  p.kind = kind;
  p.backward = dy != nullptr;
  p.device = first.device;
  p.dtype = first.dtype;
  check::RowMatrix* in_slots[] = {&p.a, &p.b};
  int i = 0;
  for (const Named& n : inputs) *in_slots[i++] = check::like(op, n.name, *n.t, first);
  if (dy) p.dy = check::like(op, dy->name, *dy->t, first);
  check::RowMatrix* out_slots[] = {&p.out0, &p.out1};
  i = 0;
  for (const Named& n : outputs) *out_slots[i++] = check::like(op, n.name, *n.t, first);
  p.rows = p.a.rows;
  p.cols = p.a.cols;
  return p;
}

void run(const ActivationProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::activation", [&] { ref::activation(p); },
      [&] { return cuda::activation(p, stream); });
}

act::Kind gelu_kind(GeluApprox approx) {
  return approx == GeluApprox::tanh ? act::Kind::gelu_tanh : act::Kind::gelu_erf;
}

}  // namespace

void relu2(const TensorView& y, const TensorView& x, Stream stream) {
  run(make_problem("relu2", act::Kind::relu2, {{"x", &x}}, nullptr, {{"y", &y}}), stream);
}

void relu2_backward(const TensorView& dx, const TensorView& dy, const TensorView& x,
                    Stream stream) {
  const Named g{"dy", &dy};
  run(make_problem("relu2_backward", act::Kind::relu2, {{"x", &x}}, &g, {{"dx", &dx}}), stream);
}

void swiglu(const TensorView& y, const TensorView& gate, const TensorView& up, Stream stream) {
  run(make_problem("swiglu", act::Kind::swiglu, {{"gate", &gate}, {"up", &up}}, nullptr,
                   {{"y", &y}}),
      stream);
}

void swiglu_backward(const TensorView& dgate, const TensorView& dup, const TensorView& dy,
                     const TensorView& gate, const TensorView& up, Stream stream) {
  const Named g{"dy", &dy};
  run(make_problem("swiglu_backward", act::Kind::swiglu, {{"gate", &gate}, {"up", &up}}, &g,
                   {{"dgate", &dgate}, {"dup", &dup}}),
      stream);
}

void gelu_residual(const TensorView& y, const TensorView& h, const TensorView& g, GeluApprox approx,
                   Stream stream) {
  run(make_problem("gelu_residual", gelu_kind(approx), {{"h", &h}, {"g", &g}}, nullptr,
                   {{"y", &y}}),
      stream);
}

void gelu_residual_backward(const TensorView& dh, const TensorView& dg, const TensorView& dy,
                            const TensorView& h, const TensorView& g, GeluApprox approx,
                            Stream stream) {
  const Named grad{"dy", &dy};
  run(make_problem("gelu_residual_backward", gelu_kind(approx), {{"h", &h}, {"g", &g}}, &grad,
                   {{"dh", &dh}, {"dg", &dg}}),
      stream);
}

std::pair<TensorView, TensorView> split_halves(const TensorView& packed) {
  check::present("split_halves", "packed", packed);
  check::rank_at_least("split_halves", "packed", packed, 1);
  const int64_t n2 = packed.size(-1);
  if (n2 < 2 || n2 % 2 != 0) {
    throw_arg_error("split_halves", "packed", "an even last dim >= 2 ([..., 2N])",
                    "shape " + packed.shape_str());
  }
  TensorView lo = packed, hi = packed;
  lo.sizes[packed.rank - 1] = hi.sizes[packed.rank - 1] = n2 / 2;
  hi.data = static_cast<char*>(packed.data) +
            (n2 / 2) * packed.stride(-1) * static_cast<int64_t>(packed.element_size());
  return {lo, hi};
}

void swiglu(const TensorView& y, const TensorView& gate_up, Stream stream) {
  const auto [gate, up] = split_halves(gate_up);
  swiglu(y, gate, up, stream);
}

void swiglu_backward(const TensorView& dgate_up, const TensorView& dy, const TensorView& gate_up,
                     Stream stream) {
  const auto [gate, up] = split_halves(gate_up);
  const auto [dgate, dup] = split_halves(dgate_up);
  swiglu_backward(dgate, dup, dy, gate, up, stream);
}

void gelu_residual(const TensorView& y, const TensorView& hg, GeluApprox approx, Stream stream) {
  const auto [h, g] = split_halves(hg);
  gelu_residual(y, h, g, approx, stream);
}

void gelu_residual_backward(const TensorView& dhg, const TensorView& dy, const TensorView& hg,
                            GeluApprox approx, Stream stream) {
  const auto [h, g] = split_halves(hg);
  const auto [dh, dg] = split_halves(dhg);
  gelu_residual_backward(dh, dg, dy, h, g, approx, stream);
}

}  // namespace kiln
