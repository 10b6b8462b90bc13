#pragma once
// fused_moe's by-expert kernels (fused_moe_experts.cu): the picks sorted by local expert
// (moe_align) into runs of kExpertRun entries, one block a run; how a block finds its run.
#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda::moe_gemv {

// Entries an align block holds: the smallest block the moe_align contract takes, and the M of one
// m16n8k16 MMA.
inline constexpr int kExpertRun = 16;

struct ExpertRuns {
  const int32_t* sorted;      // [capacity] entries t * k + j, padding = T * k
  const int32_t* expert_ids;  // [capacity / kExpertRun], -1 past the end
  const int32_t* post_pad;    // [1] slots in use
  float* partial;             // [T * k, H] fp32
  int64_t entries;            // T * k
};

// This block's run: its local expert (-1: none), how many entries it holds (a prefix of the run:
// padding sits at its end) and where they are.
struct Run {
  int64_t expert = -1;
  int count = 0;
  const int32_t* entry = nullptr;
};

// Called by every thread of the block (a ballot a warp).
__device__ __forceinline__ Run load_run(const ExpertRuns& r) {
  Run run;
  const int64_t b = blockIdx.x;
  if (b * kExpertRun >= *r.post_pad) return run;
  run.expert = r.expert_ids[b];
  run.entry = r.sorted + b * kExpertRun;
  const int lane = threadIdx.x % 32;  // one entry a lane, counted by a ballot
  const int32_t mine = lane < kExpertRun ? run.entry[lane] : -1;
  run.count = __popc(__ballot_sync(~0u, mine >= 0 && mine < r.entries));
  return run;
}

}  // namespace kiln::cuda::moe_gemv
