#pragma once
// The warp-per-row top-k shared by topk and the routers. A lane holds kPerLane candidates as
// 32-bit keys that order like topk_before (ops/topk_order.h) with a float payload each; key 0 means
// "not a candidate" (past E, or masked). Where the candidates sit is the Layout: lane + 32 m
// (strided, any E) or runs of kRun per lane read with coalesced vector loads (see kRun). Both
// keep the lower index at the lower m within a lane, which the tie rules below rely on.
//
// The selection, per row:
//  1. A threshold t: the k-th largest lane maximum (each lane ranks its maximum against the 32).
//     At least k candidates are >= t, so every pick is; on random scores only ~k to 2k are.
//  2. Compaction of the candidates >= t into 32 shared-memory slots (a ballot per m). When they
//     fit (the common case), lane i ranks slot i against every slot (broadcast shared loads of
//     one 64-bit order word each: key, then the lower index first): no sequential rounds. The
//     slots ranked below k are the picks, each written at its rank.
//  3. Rows with more than 32 candidates >= t (many ties at the threshold) take k rounds over the
//     registers instead: lane-local best, two REDUX (max key; min index among that key), one
//     shuffle for the payload; pick r goes to lane r. Same order, same result, more
//     instructions; a data-dependent branch inside the kernel, not a different kernel, so the
//     receipt does not change.
// Before s15, steps 1 and 2 took k rounds of REDUX each (a REDUX latency or two a round, in
// series); before s6, k rounds of a 5-step butterfly.
// tests/cuda/{topk,router}_cuda_test cover both steps 2 and 3 (random rows, and rows of a few tied
// levels); run on the H100 since s6.
#include <cstdint>
#include <type_traits>

#include "cuda/common/elements.cuh"
#include "cuda/common/warp_reduce.cuh"

namespace kiln::cuda {

// The order-preserving key of x: larger x, larger key; -0 and +0 equal (topk_before compares
// with ==); every NaN the largest key (NaN ranks first). Real values never map to 0 (-inf maps to
// 0x007fffff), so 0 is free to mean "no candidate".
__device__ __forceinline__ uint32_t topk_key(float x) {
  uint32_t b = __float_as_uint(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) return 0xffffffffu;
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The float of a key (NaN for the NaN key, +0 for a zero).
__device__ __forceinline__ float topk_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key ^ 0x80000000u) : ~key);
}

enum class Layout { strided, run };

// The run layout's run: 4 candidates a lane (16 bytes of f32, 8 of a 16-bit type), or all of
// them when a lane holds fewer. Lane l's m-th candidate is expert (m / R) 32 R + l R + m % R:
// each vector load of the warp reads 32 R contiguous elements (coalesced), and the index still
// grows with m within a lane.
__host__ __device__ constexpr int run_width(int per_lane) {
  return per_lane < 4 ? per_lane : 4;
}
template <int kPerLane>
inline constexpr int kRun = run_width(kPerLane);

// Host side: whether a row of `experts` elements of `element_bytes` each, rows `row_stride`
// elements apart from `data`, can take the run layout with `per_lane` a lane. A run shorter than
// 8 bytes gains nothing over the strided loads (they are coalesced too), so it is not used.
inline bool run_layout_fits(const void* data, int64_t row_stride, int64_t experts, int per_lane,
                            int element_bytes) {
  const int64_t run = int64_t{run_width(per_lane)} * element_bytes;
  if (experts != 32 * int64_t{per_lane} || run < 8) return false;
  return reinterpret_cast<uintptr_t>(data) % run == 0 && (row_stride * element_bytes) % run == 0;
}

template <Layout L, int kPerLane>
__device__ __forceinline__ int candidate_index(int lane, int m) {
  constexpr int R = kRun<kPerLane>;
  return L == Layout::run ? (m / R) * 32 * R + lane * R + m % R : lane + 32 * m;
}

// Host side: calls f(std::integral_constant<Layout, ...>) with the run layout when `run` (only
// instantiated where a run is >= 8 bytes, the only runs run_layout_fits accepts), else strided.
template <typename T, int kPerLane, typename F>
void with_layout(bool run, F&& f) {
  if constexpr (kRun<kPerLane> * sizeof(T) >= 8) {
    if (run) return f(std::integral_constant<Layout, Layout::run>{});
  }
  f(std::integral_constant<Layout, Layout::strided>{});
}

// One shared-memory slot of step 2, 16 bytes so that a slot is one vector store. A warp needs
// kTopkSlots: 32 and a sink that the lanes with nothing to store write instead of branching.
struct alignas(16) TopkSlot {
  uint64_t order;  // key << 32 | ~index: larger is earlier in topk order (indices are distinct)
  float payload;
  int index;
};
inline constexpr int kTopkSlots = 33;

__device__ __forceinline__ uint64_t topk_order(uint32_t key, int index) {
  return uint64_t{key} << 32 | ~static_cast<uint32_t>(index);
}

// A lane's pick: rank < k is its place in the row's top k (each rank 0..k-1 held by one lane);
// rank >= k: this lane holds no pick.
struct Pick {
  float payload;
  int index;
  int rank;
};

// Needs every lane of the warp, k <= 32, at least k candidates (keys != 0) in the row, and
// kTopkSlots slots. The keys are used up (step 3 zeroes the picked ones in place: no second array
// of registers).
template <Layout L, int kPerLane>
__device__ __forceinline__ Pick warp_topk(uint32_t (&key)[kPerLane],
                                          const float (&payload)[kPerLane], int k,
                                          TopkSlot* slots) {
  const int lane = threadIdx.x % 32;
  // 1. The threshold t: the k-th largest lane maximum. Each lane ranks its maximum against all 32
  // (broadcast shared loads; ties to the lower lane), and the lane ranked k - 1 holds t. The top
  // k lane maxima are k candidates >= t, so every pick is >= t. If the row's nonzero keys sit in
  // fewer than k lanes, t is 0; the max with 1 keeps the non-candidates out.
  uint32_t lane_max = 0;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) lane_max = max(lane_max, key[m]);
  auto* maxima = reinterpret_cast<uint32_t*>(slots);  // 32 words, before the slots are filled
  __syncwarp();  // the slots may still be read by this warp's previous row
  maxima[lane] = lane_max;
  __syncwarp();
  int ahead[4] = {0, 0, 0, 0};  // four partial counts: four short add chains, not one long one
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const uint32_t other = maxima[j];
    ahead[j % 4] += other > lane_max || (other == lane_max && j < lane);
  }
  const int max_rank = (ahead[0] + ahead[1]) + (ahead[2] + ahead[3]);
  const int holder = __ffs(__ballot_sync(~0u, max_rank == k - 1)) - 1;
  const uint32_t t = max(__shfl_sync(~0u, lane_max, holder), 1u);

  // 2. Compaction: slot order does not matter (a slot's rank compares order words).
  __syncwarp();  // every lane has read the maxima
  const uint32_t below = (1u << lane) - 1;
  int count = 0;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const bool in = key[m] >= t;
    const uint32_t ballot = __ballot_sync(~0u, in);
    const int at = count + __popc(ballot & below);
    const int index = candidate_index<L, kPerLane>(lane, m);
    slots[in && at < 32 ? at : 32] = {topk_order(key[m], index), payload[m], index};
    count += __popc(ballot);
  }
  __syncwarp();

  Pick mine{0.f, -1, 32};
  if (count <= 32) {
    if (lane < count) {
      const TopkSlot own = slots[lane];
      int even = 0, odd = 0, j = 0;  // two partial counts: two add chains of half the length
      for (; j + 1 < count; j += 2) {
        even += slots[j].order > own.order;
        odd += slots[j + 1].order > own.order;
      }
      if (j < count) even += slots[j].order > own.order;
      mine = {own.payload, own.index, even + odd};
    }
    return mine;
  }

  // 3. Too many ties at the threshold: k rounds over the registers.
  for (int r = 0; r < k; ++r) {
    uint32_t best = key[0];
    int best_m = 0;
    float best_payload = payload[0];
#pragma unroll
    for (int m = 1; m < kPerLane; ++m) {  // strict >: the lower m (lower index) keeps a tie
      if (key[m] > best) {
        best = key[m];
        best_m = m;
        best_payload = payload[m];
      }
    }
    const uint32_t top = __reduce_max_sync(~0u, best);
    const int index = candidate_index<L, kPerLane>(lane, best_m);
    const auto won =
        static_cast<int>(__reduce_min_sync(~0u, best == top ? static_cast<uint32_t>(index) : ~0u));
    constexpr int R = L == Layout::run ? kRun<kPerLane> : 1;
    const int owner = won % (32 * R) / R;
    const float won_payload = __shfl_sync(~0u, best_payload, owner);
    if (lane == owner) {
#pragma unroll
      for (int m = 0; m < kPerLane; ++m) {
        if (m == best_m) key[m] = 0;
      }
    }
    if (lane == r) mine = {won_payload, won, r};
  }
  return mine;
}

// This lane's candidates of a row as floats; strided slots past E get `fill`. The run layout
// needs E == 32 * kPerLane and rows aligned to the vector width (run_layout_fits).
template <typename T, Layout L, int kPerLane>
__device__ __forceinline__ void load_candidates(const T* row, int experts, float fill,
                                                float (&v)[kPerLane]) {
  const int lane = threadIdx.x % 32;
  if constexpr (L == Layout::run) {
    constexpr int R = kRun<kPerLane>;
#pragma unroll
    for (int c = 0; c < kPerLane / R; ++c) {
      float part[R];
      load_floats<T, R>(row + c * 32 * R + lane * R, part);
#pragma unroll
      for (int i = 0; i < R; ++i) v[c * R + i] = part[i];
    }
  } else {
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      const int e = lane + 32 * m;
      v[m] = e < experts ? to_float(row[e]) : fill;
    }
  }
}

}  // namespace kiln::cuda
