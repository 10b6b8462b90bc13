// moe_align_block_size on the GPU: one launch of `chunks` blocks of 1024 threads (moe_align_plan),
// deterministic, no workspace. Each block:
//  1. counts every entry per local expert (shared-memory atomics: counts do not depend on order),
//     split into "before my chunk" and "the rest"; block 0 also counts bad ids;
//  2. counts its own chunk per warp: warp w takes a contiguous segment, 32 entries at a time, and
//     the lowest lane of each group of equal experts (__match_any_sync) adds the group's size to
//     the warp's row of a [32][E] table (cleared once, not per 1024 entries);
//  3. padded offsets by a block scan over the experts (not a serial loop on thread 0), and from
//     them each warp's first slot per expert: offset + entries before the chunk + earlier warps;
//  4. places its segment again 32 at a time: slot = the warp's running slot of the expert + rank
//     among equal experts in the 32. So each expert's entries stay in flat-index order, as in the
//     reference; positions never come from atomics.
//  5. writes padding and block labels for a grid-strided share of the blocks of block_size slots.
// With one chunk (<= 2048 entries) this is the one-block path; the receipt names which ran.
// Cost at 8192 tokens x 8 of 256 experts: 32 blocks each reading the 64 Ki ids (16-byte loads,
// L2 hits after the first) and placing 2048 — a few microseconds, where the old single block
// walked all 64 Ki entries in 64 rounds of clearing a [32][E] table and three barriers.
// Index math is 32-bit (the entry point refuses tables past 2^31 slots); the flat layout (ids
// contiguous) needs no division at all.
#include <atomic>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/warp_reduce.cuh"
#include "cuda/moe/moe_align_launch.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 1024, kWarps = kThreads / 32, kMaxLocalExperts = kMoeAlignMaxLocalExperts;

struct AlignArgs {
  MoeAlignArgs a;
  int entries, chunk, k, capacity;
  int64_t stride_t, stride_j, map_stride;
  bool vector_loads;  // flat ids, 16-byte aligned
};

// The local expert of routed id `id`, or -1 (dropped). Ids outside [0, E) and map values outside
// [-1, E_local) are bad: counted when count_bad, dropped, never used as an index.
__device__ __forceinline__ int local_expert_of(const AlignArgs& p, int id, bool count_bad) {
  if (id < 0 || id >= p.a.num_experts) {
    if (count_bad) atomicAdd(p.a.bad_ids, 1);
    return -1;
  }
  const int local = p.a.expert_map ? p.a.expert_map[int64_t{id} * p.map_stride] : id;
  if (local < -1 || local >= p.a.num_local_experts) {
    if (count_bad) atomicAdd(p.a.bad_ids, 1);
    return -1;
  }
  return local;
}

template <bool kFlat>
__device__ __forceinline__ int routed_id(const AlignArgs& p, int i) {
  if constexpr (kFlat) {
    return p.a.topk_ids[i];
  } else {
    const int t = i / p.k, j = i - t * p.k;
    return p.a.topk_ids[t * p.stride_t + j * p.stride_j];
  }
}

// Inclusive prefix sum over the block's 1024 threads; `partial` holds kWarps ints.
__device__ __forceinline__ int block_inclusive_scan(int v, int* partial) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_inclusive_sum(v, lane);
  if (lane == 31) partial[warp] = v;
  __syncthreads();
  if (warp == 0) partial[lane] = warp_inclusive_sum(partial[lane], lane);
  __syncthreads();
  return v + (warp > 0 ? partial[warp - 1] : 0);
}

template <bool kFlat>
__global__ void __launch_bounds__(kThreads) moe_align_kernel(const __grid_constant__ AlignArgs p) {
  extern __shared__ int smem[];
  const int experts = p.a.num_local_experts, block = p.a.block_size;
  int* before = smem;                   // [E] entries ahead of this chunk
  int* count = before + experts;        // [E] the rest, then all of them
  int* offset = count + experts;        // [E + 1] padded start of each expert
  int* partial = offset + experts + 1;  // [kWarps]
  int* warp_at = partial + kWarps;      // [kWarps][E] per-warp counts, then per-warp next slots
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int c0 = blockIdx.x * p.chunk, c1 = min(c0 + p.chunk, p.entries);
  const int seg = (p.chunk + kWarps - 1) / kWarps;
  const int s0 = c0 + warp * seg, s1 = min(s0 + seg, c1);  // this warp's segment
  const bool count_bad = blockIdx.x == 0;

  for (int e = tid; e < experts; e += kThreads) before[e] = count[e] = 0;
  for (int x = tid; x < kWarps * experts; x += kThreads) warp_at[x] = 0;
  __syncthreads();

  // 1. Count everything.
  auto tally = [&](int id, int i) {
    const int local = local_expert_of(p, id, count_bad);
    if (local >= 0) atomicAdd(i < c0 ? &before[local] : &count[local], 1);
  };
  int scalar_from = 0;
  if constexpr (kFlat) {
    if (p.vector_loads) {
      const auto* quads = reinterpret_cast<const int4*>(p.a.topk_ids);
      for (int q = tid; q < p.entries / 4; q += kThreads) {
        const int4 v = quads[q];
        tally(v.x, 4 * q);
        tally(v.y, 4 * q + 1);
        tally(v.z, 4 * q + 2);
        tally(v.w, 4 * q + 3);
      }
      scalar_from = p.entries / 4 * 4;
    }
  }
  for (int i = scalar_from + tid; i < p.entries; i += kThreads) tally(routed_id<kFlat>(p, i), i);

  // 2. This warp's segment, per expert.
  for (int base = s0; base < s1; base += 32) {  // warp-uniform bounds: match_any sees all lanes
    const int i = base + lane;
    const int local = i < s1 ? local_expert_of(p, routed_id<kFlat>(p, i), false) : -1;
    const unsigned peers = __match_any_sync(~0u, local);
    if (local >= 0 && lane == __ffs(peers) - 1) warp_at[warp * experts + local] += __popc(peers);
  }
  __syncthreads();

  // 3. Offsets (experts <= 1024 = threads: one expert a thread).
  int total = 0, padded = 0;
  if (tid < experts) {
    total = before[tid] + count[tid];
    padded = (total + block - 1) & -block;  // block is a power of two
  }
  const int end = block_inclusive_scan(padded, partial);
  if (tid < experts) {
    const int start = end - padded;
    offset[tid] = start;
    count[tid] = total;
    int next = start + before[tid];
    for (int w = 0; w < kWarps; ++w) {
      const int here = warp_at[w * experts + tid];
      warp_at[w * experts + tid] = next;
      next += here;
    }
    if (tid == experts - 1) {
      offset[experts] = end;
      if (blockIdx.x == 0) *p.a.num_tokens_post_pad = end;
    }
  }
  __syncthreads();

  // 4. Place this warp's segment.
  const unsigned below = (1u << lane) - 1;
  for (int base = s0; base < s1; base += 32) {
    const int i = base + lane;
    const int local = i < s1 ? local_expert_of(p, routed_id<kFlat>(p, i), false) : -1;
    const unsigned peers = __match_any_sync(~0u, local);
    const int rank = __popc(peers & below);
    const int at = local >= 0 ? warp_at[warp * experts + local] : 0;
    __syncwarp();  // every lane has read its slot before the group's first lane moves it on
    if (local >= 0) {
      p.a.sorted_token_ids[at + rank] = i;
      if (rank == 0) warp_at[warp * experts + local] = at + __popc(peers);
    }
    __syncwarp();
  }

  // 5. Padding (the slots no entry takes) and labels, a warp per block of `block` slots.
  const int padding = p.entries, used = offset[experts];
  for (int b = blockIdx.x * kWarps + warp; b < p.capacity / block; b += gridDim.x * kWarps) {
    const int start = b * block;
    int label = -1, fill_from = start;
    if (start < used) {  // the expert whose [offset[e], offset[e + 1]) holds start
      int lo = 0, hi = experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offset[mid] <= start)
          lo = mid;
        else
          hi = mid - 1;
      }
      label = lo;
      fill_from = offset[lo] + count[lo];
    }
    if (lane == 0) p.a.expert_ids[b] = label;
    for (int s = start + lane; s < start + block; s += 32) {
      if (s >= fill_from) p.a.sorted_token_ids[s] = padding;
    }
  }
}

size_t smem_bytes(int experts) {
  return (static_cast<size_t>(3 + kWarps) * experts + 1 + kWarps) * sizeof(int);
}

// The opt-in to more than 48 KiB of shared memory, once per device and instance (it is a
// per-function, per-device setting; calling it on every launch cost host time for nothing).
template <bool kFlat>
void allow_smem() {
  static std::atomic<uint64_t> done{0};  // bit d: device d configured
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? uint64_t{1} << device : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return;
  KILN_CUDA_CHECK(cudaFuncSetAttribute(moe_align_kernel<kFlat>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem_bytes(kMaxLocalExperts))));
  done.fetch_or(bit, std::memory_order_release);
}

}  // namespace

std::string moe_align(const MoeAlignArgs& a, Stream stream) {
  const int64_t entries = a.tokens * a.k;
  const MoeAlignPlan plan = moe_align_plan(entries);
  const bool flat = (a.k == 1 || a.id_stride_j == 1) && (a.tokens <= 1 || a.id_stride_t == a.k);
  const AlignArgs p{a,
                    static_cast<int>(entries),
                    static_cast<int>(plan.chunk),
                    static_cast<int>(a.k),
                    static_cast<int>(a.capacity),
                    a.id_stride_t,
                    a.id_stride_j,
                    a.expert_map_stride,
                    flat && reinterpret_cast<uintptr_t>(a.topk_ids) % 16 == 0};
  const size_t smem = smem_bytes(a.num_local_experts);
  const auto grid = static_cast<unsigned>(plan.chunks);
  if (flat) {
    allow_smem<true>();
    moe_align_kernel<true><<<grid, kThreads, smem, stream>>>(p);
  } else {
    allow_smem<false>();
    moe_align_kernel<false><<<grid, kThreads, smem, stream>>>(p);
  }
  KILN_CUDA_CHECK(cudaGetLastError());
  return std::string(plan.chunks == 1 ? "moe_align_one_block<" : "moe_align_chunked<") + "chunks" +
         std::to_string(plan.chunks) + ",threads1024,block" + std::to_string(a.block_size) +
         (flat ? ",flat" : ",strided") + ">";
}

}  // namespace kiln::cuda
