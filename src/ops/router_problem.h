#pragma once
// A validated router call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "kiln/core/workspace.h"
#include "kiln/ops/router.h"

namespace kiln {

struct RouterProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32;
  RouterKind kind = RouterKind::softmax;
  int64_t rows = 0, experts = 0, k = 0;
  bool renormalize = false;
  const float* bias = nullptr;  // [experts], contiguous, or null
  int64_t n_group = 1, topk_group = 1;
  double scale = 1.0;  // routed_scaling_factor
  check::RowMatrix logits, weights, ids;
};

// A validated dense_router call: the router's problem (its logits: logits_out when given, else
// filled in by the backend with its scratch), and the gate GEMM's operands.
struct DenseRouterProblem {
  std::string op;
  Device device;
  RouterProblem router;
  check::RowMatrix x;          // [T, H]
  const void* gate = nullptr;  // [E, H] contiguous, x's dtype
  int64_t hidden = 0;
  bool logits_given = false;  // router.logits is the caller's logits_out
  Workspace workspace;        // CUDA: dense_router_workspace_size bytes
};

// A validated hash_router call: element strides, since every tensor may be a view.
struct HashRouterProblem {
  std::string op;
  Device device;
  int64_t rows = 0, vocab = 0, k = 0;
  const int64_t* token_ids = nullptr;  // [rows], stride token_stride
  int64_t token_stride = 1;
  const int32_t* table = nullptr;  // [vocab, k], strides table_stride[0..1]
  int64_t table_stride[2] = {0, 1};
  float* weights = nullptr;  // [rows, k]
  int64_t weights_stride[2] = {0, 1};
  int32_t* ids = nullptr;  // [rows, k]
  int64_t ids_stride[2] = {0, 1};
  int32_t* bad = nullptr;  // [1] counter
};

}  // namespace kiln
