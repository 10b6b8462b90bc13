#pragma once
// A validated bias_dropout_add call (forward or backward) in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "kiln/core/workspace.h"

namespace kiln {

struct DropoutProblem {
  std::string op;
  bool backward = false;
  Device device;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0;
  check::RowMatrix x, residual, out;  // forward: x, residual -> out; backward: x = dout, out = dx
  void* bias = nullptr;               // forward: [cols] or null; backward: dbias [cols] or null
  float p = 0;
  float scale = 1;      // 1 / (1 - p), 0 when p = 1
  bool masked = false;  // training and p > 0: draw the mask
  uint64_t seed = 0, offset = 0;
  Workspace workspace;  // backward with dbias on CUDA: the fp32 partial rows of dbias
};

}  // namespace kiln
