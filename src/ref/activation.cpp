#include "ref/activation.h"

#include "core/element.h"

namespace kiln::ref {

void activation(const ActivationProblem& p) {
  using element::load;
  using element::store;
  auto at = [](const check::RowMatrix& m, int64_t r, int64_t c) { return r * m.row_stride + c; };
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      // Every input element is read before an output is written: outputs may alias inputs.
      const double a = load(p.a.data, p.dtype, at(p.a, r, c));
      const double b = p.b.data ? load(p.b.data, p.dtype, at(p.b, r, c)) : 0.0;
      if (!p.backward) {
        store(p.out0.data, p.dtype, at(p.out0, r, c), act::forward(p.kind, a, b));
        continue;
      }
      const double dy = load(p.dy.data, p.dtype, at(p.dy, r, c));
      double da = 0, db = 0;
      act::backward(p.kind, a, b, dy, da, db);
      store(p.out0.data, p.dtype, at(p.out0, r, c), da);
      if (p.out1.data) store(p.out1.data, p.dtype, at(p.out1, r, c), db);
    }
  }
}

}  // namespace kiln::ref
