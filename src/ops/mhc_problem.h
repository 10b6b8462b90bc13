#pragma once
// A validated sinkhorn_knopp call (forward or backward) in the plain form both backends take.
#include <string>

#include "core/check.h"

namespace kiln {

struct SinkhornProblem {
  std::string op;
  bool backward = false;
  Device device;
  DType dtype = DType::f32;
  int64_t batch = 0;
  int n = 0, iters = 0;
  double eps = 0;
  check::RowMatrix logits, out, dout;  // [B * n, n]; backward: out = dlogits
};

}  // namespace kiln
