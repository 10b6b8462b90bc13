#pragma once
// CUDA topk: launches for a validated problem; returns the variant name.
#include <cstdint>
#include <string>

#include "kiln/core/stream.h"
#include "ops/topk_problem.h"

namespace kiln::cuda {

std::string topk(const TopkProblem& p, Stream stream);

// Warps a block for the warp-a-row kernels (topk, the routers) over `rows` rows: the largest
// power of two up to max_warps that still gives each of `sms` SMs a block, so that a decode
// batch's few rows run on as many SMs (at T = 64, one warp on each of 64 SMs, not eight warps on
// each of 8), and large batches keep max_warps.
inline int row_warps_per_block(int64_t rows, int sms, int max_warps) {
  int warps = 1;
  while (2 * warps <= max_warps && rows >= int64_t{sms} * 2 * warps) warps *= 2;
  return warps;
}

}  // namespace kiln::cuda
