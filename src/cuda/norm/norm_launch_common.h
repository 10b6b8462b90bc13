#pragma once
// Host-side pieces both norm launchers share: the CUDA size limit, the 16-byte-path test, and the
// kernel variant name the receipt carries.
#include <cstdint>
#include <initializer_list>
#include <string>

#include "cuda/norm/norm_config.h"
#include "ops/norm_problem.h"

namespace kiln::cuda {

inline void check_norm_cols(const NormProblemBase& p) {
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim N <= 2^30 on CUDA", std::to_string(p.cols));
  }
}

// The 16-byte vector path needs N, every row stride and every pointer to fit whole vectors.
inline bool norm_vector_aligned(const NormProblemBase& p,
                                std::initializer_list<const check::RowMatrix*> matrices,
                                std::initializer_list<const void*> params) {
  auto aligned16 = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const int64_t w = 16 / static_cast<int64_t>(dtype_size(p.x.dtype));
  bool aligned = p.cols % w == 0;
  for (const check::RowMatrix* m : matrices) {
    if (m->data) aligned = aligned && aligned16(m->data) && m->row_stride % w == 0;
  }
  for (const void* q : params) aligned = aligned && (q == nullptr || aligned16(q));
  return aligned;
}

// "norm_forward<rms,bf16,param:bf16,vec8x2,tpr512,rpb1" — the caller closes it.
inline std::string norm_variant_name(const char* kernel, const NormProblemBase& p, int vec_width,
                                     int vecs_per_thread, const NormConfig& cfg) {
  return std::string(kernel) + "<" + (p.kind == NormKind::layer ? "layer" : "rms") + "," +
         std::string(dtype_name(p.x.dtype)) + ",param:" + std::string(dtype_name(p.param_dtype)) +
         ",vec" + std::to_string(vec_width) +
         (vecs_per_thread ? "x" + std::to_string(vecs_per_thread) : std::string("xstream")) +
         ",tpr" + std::to_string(cfg.threads_per_row) + ",rpb" + std::to_string(cfg.rows_per_block);
}

}  // namespace kiln::cuda
