#pragma once
// A validated topk call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"

namespace kiln {

struct TopkProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32, values_dtype = DType::f32;
  int64_t rows = 0, experts = 0, k = 0;
  bool softmax = false;
  check::RowMatrix scores, values, indices;
};

// The order topk sorts by: a ranks before b (NaN first, then larger, then the lower index).
inline bool topk_before(double a, int64_t ia, double b, int64_t ib) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

}  // namespace kiln
