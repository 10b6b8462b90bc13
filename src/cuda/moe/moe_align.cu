// moe_align_block_size on the GPU: one block of 1024 threads, deterministic without atomics on
// positions. Pass 1 counts each local expert's entries (shared-memory atomics: counts do not
// depend on order) and bad ids; thread 0 turns the counts into padded offsets; every slot is
// filled with padding and every block labelled. Pass 2 walks the entries in chunks of 1024 in
// flat order: an entry's position is its expert's offset + the entries of that expert in earlier
// chunks + those in earlier warps of this chunk (a [32][E] table) + its rank among equal experts
// in its warp (__match_any_sync). A first version for correctness: one block bounds its speed
// for large T (the bench will say). NOT YET RUN ON A GPU.
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/moe/moe_align_launch.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 1024, kWarps = kThreads / 32;

// The local expert of flat entry i, or -1 (dropped); ids outside [0, E) and map values outside
// [-1, E_local) are bad: counted (in pass 1 only) and dropped, never used as an index.
__device__ __forceinline__ int local_expert(const MoeAlignArgs& a, int64_t i, bool count_bad) {
  const int64_t t = i / a.k, j = i % a.k;
  const int id = a.topk_ids[t * a.id_stride_t + j * a.id_stride_j];
  if (id < 0 || id >= a.num_experts) {
    if (count_bad) atomicAdd(a.bad_ids, 1);
    return -1;
  }
  const int local = a.expert_map ? a.expert_map[id * a.expert_map_stride] : id;
  if (local < -1 || local >= a.num_local_experts) {
    if (count_bad) atomicAdd(a.bad_ids, 1);
    return -1;
  }
  return local;
}

__global__ void __launch_bounds__(kThreads)
    moe_align_kernel(const __grid_constant__ MoeAlignArgs a) {
  extern __shared__ int smem[];
  const int experts = a.num_local_experts;
  int* count = smem;                    // [E]
  int* offset = count + experts;        // [E + 1]
  int* running = offset + experts + 1;  // [E]
  int* warp_count = running + experts;  // [kWarps][E]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t entries = a.tokens * a.k;

  for (int e = tid; e < experts; e += kThreads) count[e] = running[e] = 0;
  __syncthreads();
  for (int64_t i = tid; i < entries; i += kThreads) {
    const int local = local_expert(a, i, true);
    if (local >= 0) atomicAdd(&count[local], 1);
  }
  __syncthreads();
  if (tid == 0) {
    offset[0] = 0;
    for (int e = 0; e < experts; ++e) {
      offset[e + 1] = offset[e] + (count[e] + a.block_size - 1) / a.block_size * a.block_size;
    }
    *a.num_tokens_post_pad = offset[experts];
  }
  __syncthreads();
  const int padding = static_cast<int>(entries);
  for (int64_t s = tid; s < a.capacity; s += kThreads) a.sorted_token_ids[s] = padding;
  for (int64_t b = tid; b < a.capacity / a.block_size; b += kThreads) {
    const int64_t start = b * a.block_size;
    int label = -1;
    if (start < offset[experts]) {  // the expert whose [offset[e], offset[e + 1]) holds start
      int lo = 0, hi = experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offset[mid] <= start)
          lo = mid;
        else
          hi = mid - 1;
      }
      label = lo;
    }
    a.expert_ids[b] = label;
  }
  __syncthreads();  // padding written before the entries land on it

  for (int64_t base = 0; base < entries; base += kThreads) {
    for (int x = tid; x < kWarps * experts; x += kThreads) warp_count[x] = 0;
    __syncthreads();
    const int64_t i = base + tid;
    const int local = i < entries ? local_expert(a, i, false) : -1;
    const unsigned peers = __match_any_sync(~0u, local);
    const int rank = __popc(peers & ((1u << lane) - 1));
    if (local >= 0 && rank == 0) warp_count[warp * experts + local] = __popc(peers);
    __syncthreads();
    if (local >= 0) {
      int before = 0;
      for (int w = 0; w < warp; ++w) before += warp_count[w * experts + local];
      a.sorted_token_ids[offset[local] + running[local] + before + rank] = static_cast<int>(i);
    }
    __syncthreads();
    for (int e = tid; e < experts; e += kThreads) {
      int chunk = 0;
      for (int w = 0; w < kWarps; ++w) chunk += warp_count[w * experts + e];
      running[e] += chunk;
    }
    __syncthreads();
  }
}

}  // namespace

std::string moe_align(const MoeAlignArgs& a, Stream stream) {
  const size_t smem = (3 + kWarps) * static_cast<size_t>(a.num_local_experts) * sizeof(int) + 4;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(
      moe_align_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  moe_align_kernel<<<1, kThreads, smem, stream>>>(a);
  KILN_CUDA_CHECK(cudaGetLastError());
  return "moe_align_one_block<threads1024,block" + std::to_string(a.block_size) + ">";
}

}  // namespace kiln::cuda
