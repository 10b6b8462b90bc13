#pragma once
// A validated mhc_post_mix call (forward or backward) in the plain form both backends take. The
// pre-mix needs no form of its own: it is moe_sum's math and runs as a MoeSumProblem.
#include <string>

#include "core/check.h"

namespace kiln {

// Streams [T, n, C]: the last dim contiguous, token and stream strides free (elements).
struct MhcStreams {
  void* data = nullptr;
  int64_t token_stride = 0, stream_stride = 0;
};

// Mixing coefficients, f32 [T, n] or [T, n, n]: any strides (0 over T for a broadcast H).
struct MhcCoeffs {
  const float* data = nullptr;
  int64_t strides[3] = {0, 0, 0};
};

struct MhcPostMixProblem {
  std::string op;
  bool backward = false;
  Device device;
  DType dtype = DType::f32;  // x, y and every stream or row output
  int64_t tokens = 0, cols = 0;
  int n = 0;
  MhcStreams x;
  MhcStreams x_out;  // forward: written; backward: dx_out, read
  MhcStreams dx;     // backward
  check::RowMatrix y;
  check::RowMatrix dy;  // backward
  MhcCoeffs h_res, h_post;
  check::RowMatrix dh_res;   // backward, f32 [T * n, n]
  check::RowMatrix dh_post;  // backward, f32 [T, n]
};

}  // namespace kiln
