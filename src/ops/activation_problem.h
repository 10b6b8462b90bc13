#pragma once
// A validated activation call in the plain form both backends consume: up to two inputs (a, b),
// dy for a backward, up to two outputs, all [rows, cols] row matrices of one dtype.
#include <string>

#include "core/check.h"
#include "ops/activation_math.h"

namespace kiln {

struct ActivationProblem {
  std::string op;
  act::Kind kind = act::Kind::relu2;
  bool backward = false;
  Device device;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  check::RowMatrix a, b;        // x | gate, up | h, g; b.data null for relu2
  check::RowMatrix dy;          // backward only
  check::RowMatrix out0, out1;  // y | dx | dgate, dup | dh, dg; out1.data null when single
};

}  // namespace kiln
