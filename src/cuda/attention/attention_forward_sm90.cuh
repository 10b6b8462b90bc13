#pragma once
// Attention forward on Hopper's own instructions (shared/notes/attention-sm90.md §5 steps 1-3):
// wgmma for both GEMMs, TMA for Q, K and V, and warp specialisation. The mma.sync kernel
// (attention_forward.cuh) stays the oracle and the path for what this one does not take.
//
// Persistent: one CTA a SM, 384 threads, walking work items = query tiles of 128 rows of one
// (sequence, query head): two consumer warpgroups of 64 rows each and a producer warpgroup, one
// warp of which works (the others give their registers to the consumers and leave). The producer
// takes the next item from a counter (so the balance is the CTA-an-item grid's), looks it up with
// one warp and hands it to the consumers through a ring of two shared-memory slots; it loads an
// item's Q once the consumers' last Q Kᵀ of the previous item is done, so that load and the
// item's first K/V run under the previous item's last P V and its store (measured on the H100,
// s12: T = 2048 causal 0.293 vs 0.335 ms a CTA an item, window 0.297 vs 0.334). It streams the
// visible K and V tiles (kBlockN keys) through a 2-stage ring, across items: a "full" transaction
// barrier per stage that the copy engine completes, an "empty" barrier each consumer warp
// arrives on when its wgmmas have read the stage. A V tile that runs past the sequence's valid
// keys is copied by the whole producer warp instead, with the rows past them zeroed: those rows
// meet P = 0, and 0 * NaN would poison O (the mma.sync kernel zero-fills them too).
//
// Consumers: S = Q Kᵀ by kD / 16 SS wgmmas (Q and K in 128-byte-swizzled shared memory, both
// K-major), the mask where the tile needs one, the online softmax in base 2 on the accumulators
// (each thread holds two rows, a row's columns spread over a quad), then O += P V by kBlockN / 16
// RS wgmmas: P stays in registers as the A operand, V is read MN-major. From the second tile on,
// S_j = Q K_jᵀ and O += P_{j-1} V_{j-1} are issued together and the softmax of tile j runs while
// the second GEMM is still on the tensor cores; O is rescaled once it is done. Rows past the
// sequence are computed and never stored; fully masked rows end with O = 0 and lse = -inf.
//
// The same tile order and lookup as the mma.sync kernel (no host copy of cu_seqlens), the same
// tile skipping (KeyTiles), the same results up to the order of fp32 sums; the same bits whatever
// CTA takes an item (tested with 3 CTAs, one a SM and one an item).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "attention/mask_rules.h"
#include "cuda/attention/attention_launch.h"
#include "cuda/attention/sm90_tiles.cuh"
#include "cuda/attention/tile_common.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/tensor_map.h"
#include "cuda/common/tma.cuh"
#include "cuda/common/wgmma.cuh"

namespace kiln::cuda::attention_sm90 {

// Two consumer warpgroups and a producer warpgroup of which one warp works; registers move from
// the producer to the consumers (setmaxnreg): 128 * 56 + 256 * 224 <= 65536.
constexpr int kConsumerWarps = 8, kThreads = 32 * (kConsumerWarps + 4);
constexpr int kProducerRegisters = 56, kConsumerRegisters = 224;
constexpr int kBlockM = 128, kStages = 2;
using sm90_tiles::kRowBytes;

// Q, K and V as 3-D tensor maps (dim, head, token) read in 64-column boxes, and the arguments.
// The work items are (query head, tile slot) pairs, head-major (the CTAs working at one time share
// a head's K and V in L2; a sequence's query tiles heaviest first, as find_tile orders them):
// `works` = `slots` x hq.
struct Sm90ForwardArgs {
  CUtensorMap q, k, v;
  AttentionForwardArgs a;
  bool ping_pong = true;
  int slots = 0;
  int64_t works = 0;
  unsigned long long* work_counter = nullptr;  // zeroed before each launch
};

// The next item past the first gridDim.x ones (each CTA's first is its blockIdx), from the
// launch's counter; the calling warp's lane 0 takes it and every lane gets it.
__device__ __forceinline__ int64_t next_work(unsigned long long* counter) {
  unsigned long long taken = 0;
  if (threadIdx.x % 32 == 0) taken = atomicAdd(counter, 1ull);
  return static_cast<int64_t>(__shfl_sync(~0u, taken, 0));
}

// What the producer hands the consumers for each tile it loads: the tile, its key tiles and
// offsets; sequence -1 ends the work.
template <int kBlockN>
struct ForwardWork {
  int sequence = -1, m_block = 0, head = 0;
  int64_t q_begin = 0;
  attention_tiles::KeyTiles<kBlockN> tiles;
};

template <int kD, int kDv, int kBlockN>
constexpr int smem_bytes() {
  return 1024 /* alignment slack */ + 2 * (kBlockM * kD + kStages * kBlockN * (kD + kDv));
}

template <typename T, int kD, int kDv, int kBlockN, bool kSoftcap>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_sm90_kernel(const __grid_constant__ Sm90ForwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace attention_tiles;  // NOLINT: the shared tile pieces
  constexpr int kBoxes = kD / 64, kVBoxes = kDv / 64;
  constexpr int kQBytes = kBlockM * kD * 2, kKBytes = kBlockN * kD * 2, kVBytes = kBlockN * kDv * 2;
  // O in parts of at most 128 columns (one wgmma N each): kOTiles 8-column tiles a part.
  constexpr int kON = kDv < 128 ? kDv : 128, kOParts = kDv / kON, kOTiles = kON / 8;
  constexpr int kNTiles = kBlockN / 8, kDTiles = kDv / 8;
  static_assert(kD % 64 == 0 && kDv % 64 == 0 && kBlockN % 64 == 0);
  const AttentionForwardArgs& a = p.a;

  extern __shared__ uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - shared_address(smem_raw) % 1024) % 1024);
  uint8_t* const s_q = smem;                     // [kBoxes][kBlockM rows][128 B]
  uint8_t* const s_k = s_q + kQBytes;            // [kStages][kBoxes][kBlockN][128 B]
  uint8_t* const s_v = s_k + kStages * kKBytes;  // [kStages][kVBoxes][kBlockN][128 B]
  __shared__ uint64_t q_full, k_full[kStages], v_full[kStages], k_empty[kStages], v_empty[kStages];

  using Work = ForwardWork<kBlockN>;
  __shared__ uint64_t q_empty, work_full[2], work_empty[2];
  __shared__ __align__(16) uint8_t s_work[2][sizeof(Work)];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // CTA 0 checks every sequence's metadata once and counts the bad ones (they have no tiles).
  if (blockIdx.x == 0) find_tile<kBlockM, false, kThreads>(a, 0, true);

  if (tid == 0) {
    barrier_init(&q_full, 1);
    barrier_init(&q_empty, kConsumerWarps);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&k_full[s], 1);
      barrier_init(&v_full[s], 1);
      barrier_init(&k_empty[s], kConsumerWarps);
      barrier_init(&v_empty[s], kConsumerWarps);
    }
    for (int w = 0; w < 2; ++w) {
      barrier_init(&work_full[w], 1);
      barrier_init(&work_empty[w], kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();

  if (warp >= kConsumerWarps) {  // the producer warpgroup
    warpgroup_release_registers<kProducerRegisters>();
    if (warp != kConsumerWarps) return;
    if (lane == 0) {
      prefetch_tensor_map(&p.q);
      prefetch_tensor_map(&p.k);
      prefetch_tensor_map(&p.v);
    }
    // Work items go through a ring of two; Q has one buffer, refilled once the consumers' last
    // Q Kᵀ of the previous item is done (under its P V and store); K and V stream through their
    // ring across items.
    int it = 0, wi = 0;
    // The slot of the next work item, once the consumers have read what it held two items ago.
    auto claim_slot = [&] {
      if (lane == 0) barrier_wait_parity(&work_empty[wi % 2], ((wi / 2) & 1) ^ 1);
      __syncwarp();
      return reinterpret_cast<Work*>(s_work[wi % 2]);
    };
    // Items in order, each CTA taking the next one when its producer is ready for it (a counter
    // in global memory, zeroed before the launch): the balance of the CTA-an-item grid, whose
    // blocks the hardware hands out in order as SMs free up, without the per-CTA prologue.
    for (int64_t w = blockIdx.x;; w = gridDim.x + next_work(p.work_counter)) {
      if (w >= p.works) break;
      const int head = static_cast<int>(w / p.slots);
      const TileSlot slot =
          find_tile_in_warp<kBlockM>(a, static_cast<int>(w - int64_t{head} * p.slots));
      if (slot.sequence < 0) continue;
      const int b = slot.sequence;
      const int64_t q_begin = a.cu_q[b], k_begin = a.cu_k[b];
      const attention::SequenceShape seq = sequence_shape(a, b);
      const int q0 = slot.m_block * kBlockM;
      const int q1 = min(q0 + kBlockM, static_cast<int>(seq.lq));
      const int kv_head = head / (a.hq / a.hkv);
      Work* const work = claim_slot();
      {
        const KeyTiles<kBlockN> found(a, seq, q_begin, k_begin, q0, q1);  // the whole warp
        if (lane == 0) {
          work->sequence = b;
          work->m_block = slot.m_block;
          work->head = head;
          work->q_begin = q_begin;
          work->tiles = found;
          barrier_arrive(&work_full[wi % 2]);
        }
        __syncwarp();
      }
      const KeyTiles<kBlockN>& tiles = work->tiles;  // read back from the slot: few registers
      if (lane == 0) {
        barrier_wait_parity(&q_empty, (wi & 1) ^ 1);
        barrier_arrive_expect_tx(&q_full, kQBytes);
        for (int box = 0; box < kBoxes; ++box) {
          tma_load_3d(s_q + box * kBlockM * kRowBytes, &p.q, 64 * box, head,
                      static_cast<int>(q_begin + q0), &q_full);
        }
      }
      ++wi;
      const T* const v_rows =
          static_cast<const T*>(a.v.data) + k_begin * a.v.token + kv_head * a.v.head;
      for (int n = tiles.next_visible(tiles.begin); n < tiles.end;
           n = tiles.next_visible(n + 1), ++it) {
        const int s = it % kStages;
        const uint32_t phase = (it / kStages) & 1;
        const int k0 = n * kBlockN;
        uint8_t* const k_tile = s_k + s * kKBytes;
        uint8_t* const v_tile = s_v + s * kVBytes;
        if (lane == 0) {
          barrier_wait_parity(&k_empty[s], phase ^ 1);
          barrier_arrive_expect_tx(&k_full[s], kKBytes);
          for (int box = 0; box < kBoxes; ++box) {
            tma_load_3d(k_tile + box * kBlockN * kRowBytes, &p.k, 64 * box, kv_head,
                        static_cast<int>(k_begin + k0), &k_full[s]);
          }
          barrier_wait_parity(&v_empty[s], phase ^ 1);
        }
        __syncwarp();
        if (k0 + kBlockN <= tiles.seq.valid_k) {
          if (lane == 0) {
            barrier_arrive_expect_tx(&v_full[s], kVBytes);
            for (int box = 0; box < kVBoxes; ++box) {
              tma_load_3d(v_tile + box * kBlockN * kRowBytes, &p.v, 64 * box, kv_head,
                          static_cast<int>(k_begin + k0), &v_full[s]);
            }
          }
        } else {  // the tile past the valid keys: copied here, its tail zeroed
          sm90_tiles::copy_rows_zero_tail<T, kBlockN, kDv>(v_tile, v_rows, a.v.token, k0,
                                                           tiles.seq.valid_k);
          fence_async_shared();
          __syncwarp();
          if (lane == 0) barrier_arrive(&v_full[s]);
        }
      }
      // Off the loads' path of this item (its copies are issued), from the slot (no registers held
      // across the loop for it).
      if (work->head == 0) {
        report_decreasing_documents<kBlockM>(a, tiles.seq, work->q_begin, a.cu_k[work->sequence],
                                             work->m_block);
      }
    }
    Work* const last = claim_slot();
    if (lane == 0) {
      last->sequence = -1;  // no more work
      barrier_arrive(&work_full[wi % 2]);
    }
    return;
  }

  warpgroup_claim_registers<kConsumerRegisters>();
  // Consumers: warpgroup wg owns rows 64 wg .. 64 wg + 63 of the tile; this thread rows
  // warp_row0 + lane / 4 + 8 h.
  const int wg = warp / 4;
  const int warp_row0 = 64 * wg + 16 * (warp % 4);
  const bool docs = a.doc_q != nullptr;
  KeyTiles<kBlockN> tiles;  // of the work item at hand
  int row_lo[2], row_hi[2], row_doc[2];
  float o[kOParts][kOTiles * 4];  // column tile dt is o[dt / kOTiles][4 (dt % kOTiles) + c]
  float row_max[2], row_sum[2];
  const uint32_t q_base = shared_address(s_q) + 64 * wg * kRowBytes;

  float sc[kNTiles * 4];         // S of the newest tile, then its P in fp32
  uint32_t pa[kBlockN / 16][4];  // P of the previous tile as wgmma A fragments
  float correction[2] = {1.f, 1.f};
  auto issue_qk = [&](int s) {  // S = Q K_sᵀ
    const uint32_t k_base = shared_address(s_k + s * kKBytes);
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint32_t step = (kk % 4) * 32;  // 16 columns = 32 bytes into the swizzled row
      const uint64_t qd =
          sw128_descriptor(q_base + (kk / 4) * kBlockM * kRowBytes + step, 16, 1024);
      const uint64_t kd =
          sw128_descriptor(k_base + (kk / 4) * kBlockN * kRowBytes + step, 16, 1024);
      wgmma_ss<T, kBlockN, 0>(sc, qd, kd, kk > 0);
    }
    wgmma_commit();
  };
  auto issue_pv = [&](int s) {  // O += P V_s
    const uint32_t v_base = shared_address(s_v + s * kVBytes);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
      for (int part = 0; part < kOParts; ++part) {
        const uint64_t vd = sw128_descriptor(
            v_base + (part * kON / 64 * kBlockN + kk * 16) * kRowBytes, kBlockN * kRowBytes, 1024);
        wgmma_rs<T, kON, 1>(o[part], pa[kk], vd, true);
      }
    }
    wgmma_commit();
  };

  // Scores of tile n in base-2 units (soft-capped first), masked where the tile needs it, then
  // the online softmax: new row maxima (quad-reduced), the sums, P = 2^(s - m) in sc, and the
  // factor O must be rescaled by once the GEMM still writing it is done.
  auto softmax = [&](int n) {
#pragma unroll
    for (int i = 0; i < kNTiles * 4; ++i) {
      sc[i] = kSoftcap ? a.softcap_log2 * tanhf(sc[i] * a.softcap_in) : sc[i] * a.scale_log2;
    }
    // The mask by selects, not a branch an element (which cost ~40 instructions an element in
    // the backward's SASS); with documents the keys' ids are read once a column pair, clamped to
    // the valid keys (the ranges already hide the rest).
    auto mask = [&](auto with_docs) {
      const int k0 = n * kBlockN;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        const int j0 = k0 + 8 * nt + 2 * (lane % 4);
        int key_doc[2] = {0, 0};
        if constexpr (decltype(with_docs)::value) {
          key_doc[0] = tiles.doc_of_key(j0);
          key_doc[1] = tiles.doc_of_key(j0 + 1);
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int h = c / 2, j = j0 + c % 2;
          const bool see = (j >= row_lo[h]) & (j < row_hi[h]) &
                           (!decltype(with_docs)::value | (key_doc[c % 2] == row_doc[h]));
          sc[4 * nt + c] = see ? sc[4 * nt + c] : -INFINITY;
        }
      }
    };
    if (!tiles.fully_visible(n)) {
      if (docs) {
        mask(std::true_type{});
      } else {
        mask(std::false_type{});
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float m = row_max[h];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        m = fmaxf(m, fmaxf(sc[4 * nt + 2 * h], sc[4 * nt + 2 * h + 1]));
      }
      m = fmaxf(m, __shfl_xor_sync(~0u, m, 1));
      m = fmaxf(m, __shfl_xor_sync(~0u, m, 2));
      const float base = m == -INFINITY ? 0.f : m;  // no -inf - -inf
      correction[h] = fast_exp2(row_max[h] - base);
      row_max[h] = m;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        sc[4 * nt + 2 * h] = fast_exp2(sc[4 * nt + 2 * h] - base);
        sc[4 * nt + 2 * h + 1] = fast_exp2(sc[4 * nt + 2 * h + 1] - base);
        sum += sc[4 * nt + 2 * h] + sc[4 * nt + 2 * h + 1];
      }
      row_sum[h] = row_sum[h] * correction[h] + sum;
    }
  };
  auto rescale_and_pack = [&] {  // O *= correction; P to A fragments, two column tiles a step
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) o[dt / kOTiles][4 * (dt % kOTiles) + c] *= correction[c / 2];
    }
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      pa[kk][0] = pack_pair<T>(sc[8 * kk + 0], sc[8 * kk + 1]);
      pa[kk][1] = pack_pair<T>(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = pack_pair<T>(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = pack_pair<T>(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
  };

  const sm90_tiles::PingPong turns{wg, p.ping_pong};
  turns.start();
  int it = 0;  // K/V ring position, across work items as the producer counts it
  for (int wi = 0;; ++wi) {
    // Warp-uniform again (the last item's loops ended on values read from shared memory, which
    // the compiler cannot prove uniform): the stage and phase then stay in uniform registers and
    // the wgmma descriptors are built there, as in a CTA-an-item kernel, not moved over by R2UR.
    it = __shfl_sync(~0u, it, 0);
    const int ws = wi % 2;
    barrier_wait_parity(&work_full[ws], (wi / 2) & 1);
    // The slot stays this item's until its store is done (work_empty is arrived on after it):
    // the store reads its head and offsets there, not from registers held through the loop.
    const Work& work = *reinterpret_cast<const Work*>(s_work[ws]);
    if (work.sequence < 0) break;
    tiles = work.tiles;
    {
      const int q0 = work.m_block * kBlockM;
      const int q1 = min(q0 + kBlockM, static_cast<int>(tiles.seq.lq));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = q0 + warp_row0 + 8 * h + lane / 4;
        const attention::KeyRange r = attention::visible_keys(a.rules, tiles.seq, i);
        row_lo[h] = static_cast<int>(r.lo);
        row_hi[h] = static_cast<int>(r.hi);
        row_doc[h] = docs && i < q1 ? a.doc_q[work.q_begin + i] : 0;
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = -INFINITY;
      row_sum[h] = 0.f;
    }
#pragma unroll
    for (int part = 0; part < kOParts; ++part) {
#pragma unroll
      for (int i = 0; i < kOTiles * 4; ++i) o[part][i] = 0.f;
    }

    barrier_wait_parity(&q_full, wi & 1);
    int n = tiles.next_visible(tiles.begin);
    if (n < tiles.end) {
      // The first tile alone; then each step overlaps S_j = Q K_jᵀ and the softmax of tile j with
      // O += P_{j-1} V_{j-1} on the tensor cores (FA3's intra-warpgroup pipeline).
      int prev = it % kStages;
      uint32_t prev_phase = (it / kStages) & 1;
      barrier_wait_parity(&k_full[prev], prev_phase);
      turns.wait_turn();
      wgmma_fence();
      issue_qk(prev);
      turns.pass_turn();
      wgmma_wait<0>();
      fence_accumulators(sc);
      if (lane == 0) barrier_arrive(&k_empty[prev]);
      softmax(n);
      rescale_and_pack();
      ++it;
      for (n = tiles.next_visible(n + 1); n < tiles.end; n = tiles.next_visible(n + 1), ++it) {
        const int s = it % kStages;
        const uint32_t phase = (it / kStages) & 1;
        barrier_wait_parity(&k_full[s], phase);
        barrier_wait_parity(&v_full[prev], prev_phase);
        turns.wait_turn();
        wgmma_fence();
        issue_qk(s);
        issue_pv(prev);
        turns.pass_turn();
        wgmma_wait<1>();  // S_j is done; P_{j-1} V_{j-1} may still run
        fence_accumulators(sc);
        if (lane == 0) barrier_arrive(&k_empty[s]);
        softmax(n);
        wgmma_wait<0>();
        for (auto& part : o) fence_accumulators(part);
        if (lane == 0) barrier_arrive(&v_empty[prev]);
        rescale_and_pack();
        prev = s;
        prev_phase = phase;
      }
      if (lane == 0) barrier_arrive(&q_empty);  // the item's last Q Kᵀ is done
      barrier_wait_parity(&v_full[prev], prev_phase);
      turns.wait_turn();
      wgmma_fence();
      issue_pv(prev);
      turns.pass_turn();
      wgmma_wait<0>();
      for (auto& part : o) fence_accumulators(part);
      if (lane == 0) barrier_arrive(&v_empty[prev]);
    } else if (lane == 0) {
      barrier_arrive(&q_empty);
    }

    // O / sum and lse; rows past the sequence are not stored.
    const int head = work.head, q0 = work.m_block * kBlockM;
    const int q1 = min(q0 + kBlockM, static_cast<int>(work.tiles.seq.lq));
    const int64_t q_begin = work.q_begin;
    T* const out = static_cast<T*>(a.out.data) + (q_begin + q0) * a.out.token + head * a.out.head;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[h];
      sum += __shfl_xor_sync(~0u, sum, 1);
      sum += __shfl_xor_sync(~0u, sum, 2);
      const float inv = sum > 0 ? 1.f / sum : 0.f;
      const int row = warp_row0 + 8 * h + lane / 4;
      if (q0 + row >= q1) continue;
      T* const out_row = out + int64_t{row} * a.out.token;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        const float* const tile = &o[dt / kOTiles][4 * (dt % kOTiles)];
        const uint32_t pair = pack_pair<T>(tile[2 * h] * inv, tile[2 * h + 1] * inv);
        *reinterpret_cast<uint32_t*>(out_row + 8 * dt + 2 * (lane % 4)) = pair;
      }
      if (lane % 4 == 0) {
        constexpr float kLn2 = 0.6931471805599453f;
        const float lse = sum > 0 ? (row_max[h] + log2f(sum)) * kLn2 : -INFINITY;
        a.lse[head * a.lse_head + (q_begin + q0 + row) * a.lse_token] = lse;
      }
    }
    __syncwarp();
    if (lane == 0) barrier_arrive(&work_empty[ws]);
  }
  turns.finish();
#endif
}

// CTAs for `works` items: one a SM, each walking its items (the next item's Q and K loads run
// under the last P V and the store of the one before). KILN_ATTENTION_FWD_PERSISTENT=0 launches a
// CTA an item (the pre-persistent grid, for the A/B); a positive value caps the CTAs (the tests
// use a few, so that every CTA walks many items).
inline int64_t forward_ctas(int64_t works) {
  const char* pick = std::getenv("KILN_ATTENTION_FWD_PERSISTENT");
  const int64_t cap = pick != nullptr ? std::atoll(pick) : 0;
  if (pick != nullptr && cap <= 0) return works;
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  return std::min<int64_t>(works, cap > 0 ? cap : sm_count(Device::cuda(device)));
}

// Runs the kernel for a when it can (a Hopper device, no page table, TMA-describable views) and
// returns its variant name; returns an empty string, having launched nothing, when it cannot.
template <int kD, int kDv, int kBlockN>
std::string launch(const AttentionForwardArgs& a, Stream stream) {
  if (a.block_table != nullptr || a.total_q == 0 || a.total_k == 0) return "";
  if (!on_hopper()) return "";
  Sm90ForwardArgs p{};
  p.a = a;
  p.ping_pong = sm90_tiles::ping_pong_enabled(true);
  using sm90_tiles::map_heads;
  if (!map_heads(&p.q, a.q, kD, a.total_q, a.hq, kBlockM) ||
      !map_heads(&p.k, a.k, kD, a.total_k, a.hkv, kBlockN) ||
      !map_heads(&p.v, a.v, kDv, a.total_k, a.hkv, kBlockN)) {
    return "";
  }
  const int64_t slots = (a.total_q + kBlockM - 1) / kBlockM + a.batch;
  p.slots = static_cast<int>(slots);
  p.works = slots * a.hq;
  const int64_t ctas = forward_ctas(p.works);
  const bool persistent = ctas < p.works;
  const dim3 grid(static_cast<unsigned>(ctas));
  constexpr int smem = smem_bytes<kD, kDv, kBlockN>();
  // The work counter: stream-ordered scratch, so no sync and graph-capturable.
  const auto s = static_cast<cudaStream_t>(stream);
  KILN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p.work_counter), 8, s));
  KILN_CUDA_CHECK(cudaMemsetAsync(p.work_counter, 0, 8, s));
  auto run = [&](auto kernel) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(p);
    KILN_CUDA_CHECK(cudaGetLastError());
  };
  const bool cap = a.softcap_in > 0;
  attention_tiles::with_dtype_and_softcap(a.dtype, cap, [&](auto type_tag, auto softcap) {
    using T = typename decltype(type_tag)::type;
    run(attention_forward_sm90_kernel<T, kD, kDv, kBlockN, decltype(softcap)::value>);
  });
  KILN_CUDA_CHECK(cudaFreeAsync(p.work_counter, s));
  return std::string("attention_fwd_wgmma_tma<") + std::string(dtype_name(a.dtype)) + ",d" +
         std::to_string(kD) + (kDv != kD ? "_dv" + std::to_string(kDv) : "") + ",m" +
         std::to_string(kBlockM) + ",n" + std::to_string(kBlockN) + (cap ? ",softcap" : "") +
         (p.ping_pong ? ",pingpong" : "") + (persistent ? ",persistent" : "") + ">";
}

}  // namespace kiln::cuda::attention_sm90
