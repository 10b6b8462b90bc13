#pragma once
// Host-side pieces both norm launchers share: the CUDA size limit, the 16-byte-path test, and the
// kernel variant name the receipt carries.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>

#include <cuda_runtime.h>

#include "cuda/common/aligned.h"
#include "cuda/common/cuda_check.h"
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
  const int64_t w = 16 / static_cast<int64_t>(dtype_size(p.x.dtype));
  bool aligned = p.cols % w == 0;
  for (const check::RowMatrix* m : matrices) {
    if (m->data) aligned = aligned && aligned16(m->data) && m->row_stride % w == 0;
  }
  for (const void* q : params) aligned = aligned && (q == nullptr || aligned16(q));
  return aligned;
}

// Blocks of `kernel` that fit on one SM with `smem` bytes of dynamic shared memory (raising the
// kernel's limit past the default 48 KB first). At least 1: a kernel that fits none fails its
// launch, which the caller checks.
template <typename Kernel>
int resident_blocks_per_sm(Kernel kernel, int threads, size_t smem) {
  if (smem > 0) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  int blocks = 0;
  KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem));
  return std::max(blocks, 1);
}

// "norm_forward<rms,bf16,param:bf16,vec8x2,tpr512,rpb1" — the caller closes it.
inline std::string norm_variant_name(const char* kernel, const NormProblemBase& p, int vec_width,
                                     int vecs_per_thread, const NormConfig& cfg) {
  return std::string(kernel) + "<" + (p.kind == NormKind::layer ? "layer" : "rms") + "," +
         std::string(dtype_name(p.x.dtype)) + ",param:" + std::string(dtype_name(p.param_dtype)) +
         ",vec" + std::to_string(vec_width) +
         (vecs_per_thread ? "x" + std::to_string(vecs_per_thread) : std::string("xstream")) +
         ",tpr" + std::to_string(cfg.threads_per_row) + ",rpb" +
         std::to_string(cfg.rows_per_block) + ",grid" + std::to_string(cfg.grid);
}

}  // namespace kiln::cuda
