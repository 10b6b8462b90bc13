#pragma once
// Attention backward on wgmma + TMA (D = Dv <= 128), deterministic like the mma.sync backward
// (attention_backward.cuh, its oracle): the same three launches and no atomics.
// 1. delta = rowsum(dO * O) (the mma.sync kernel: memory-bound).
// 2. dK, dV: one CTA a (sequence, 128-key tile, kv head): two consumer warpgroups of 64 keys and
//    a producer warp. K and V are loaded once; the producer streams each (query head of the GQA
//    group, 64-query tile) that can see the keys through a 2-stage ring: Q and dO by TMA, the
//    rows' lse, delta, visible key ranges and documents by its lanes, and whether the item needs
//    the mask at all (the consumers take the items as staged, until an end-of-items stage).
//    Consumers compute Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (SS wgmmas), Pᵀ = exp(Sᵀ - lse) and
//    dSᵀ = Pᵀ (dPᵀ - delta) in registers, then dV += Pᵀ dO and dK += dSᵀ Q (RS wgmmas, Pᵀ and
//    dSᵀ as A fragments, Q and dO read MN-major). The group's heads are summed in a fixed order.
// 3. dQ: one CTA a (sequence, 128-query tile, head), the forward's walk over 64-key tiles, made
//    by the producer, which stages each tile with its index and whether it needs the mask:
//    S = Q Kᵀ and dP = dO Vᵀ (SS), dS = P (dP - delta), dQ += dS K (RS, K read MN-major).
// K or V tiles that run past the sequence's valid keys are copied by the producer warp with the
// tail zeroed, as in the forward (0 * NaN would reach dK and dQ otherwise).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include "attention/mask_rules.h"
#include "cuda/attention/attention_backward.cuh"
#include "cuda/attention/attention_launch.h"
#include "cuda/attention/sm90_tiles.cuh"
#include "cuda/attention/tile_common.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/env.h"
#include "cuda/common/mma.cuh"
#include "cuda/common/stream_fork.h"
#include "cuda/common/tma.cuh"
#include "cuda/common/wgmma.cuh"

namespace kiln::cuda::attention_bwd_sm90 {

using sm90_tiles::kRowBytes;
constexpr int kConsumerWarps = 8, kThreads = 32 * (kConsumerWarps + 4), kStages = 2;
// dK and dV accumulators (64 + 64 a thread at D = 128) with Sᵀ, dPᵀ and their fragments need
// 232 registers; 2 * 232 + 40 = 504, what the entry allocation of 168 a thread holds.
constexpr int kProducerRegisters = 40, kConsumerRegisters = 232;
constexpr int kKeyBlock = 128, kQueryStep = 64;  // dK/dV: keys a CTA, queries an item
constexpr int kQueryBlock = 128, kKeyStep = 64;  // dQ: queries a CTA, keys a tile

// What the dK/dV producer staged, per consumer warpgroup: an item every (query, key) pair of
// which is visible, one that needs the mask, or the end of the items.
enum ItemKind : int { kAllVisible = 0, kMasked = 1, kNoMoreItems = 2 };

struct Sm90BackwardArgs {
  CUtensorMap q, k, v, dout;
  AttentionBackwardArgs a;
  bool ping_pong = true;
};

template <typename T, int kD, bool kSoftcap>
__global__ void __launch_bounds__(kThreads, 1)
    dkdv_sm90_kernel(const __grid_constant__ Sm90BackwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace attention_tiles;  // NOLINT: the shared tile pieces
  using attention_bwd::kLog2e;
  using Math = attention_bwd::ScoreMath<kSoftcap>;
  constexpr int kBoxes = kD / 64, kNT = kQueryStep / 8, kDT = kD / 8;
  constexpr int kKBytes = kKeyBlock * kD * 2, kQBytes = kQueryStep * kD * 2;
  static_assert(kD == 64 || kD == 128);
  const AttentionBackwardArgs& a = p.a;
  const AttentionForwardArgs& f = a.f;

  extern __shared__ uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - shared_address(smem_raw) % 1024) % 1024);
  uint8_t* const s_k = smem;                      // [kBoxes][kKeyBlock][128 B]
  uint8_t* const s_v = s_k + kKBytes;             // the same for V
  uint8_t* const s_q = s_v + kKBytes;             // [kStages][kBoxes][kQueryStep][128 B]
  uint8_t* const s_do = s_q + kStages * kQBytes;  // the same for dO
  // Per stage: each query row's log2 lse, delta, visible keys and document (read in pairs by the
  // consumers: 8-byte aligned), and per consumer warpgroup what the item is (ItemKind).
  __shared__ __align__(16) float s_lse2[kStages][kQueryStep], s_delta[kStages][kQueryStep];
  __shared__ __align__(16) int s_lo[kStages][kQueryStep], s_hi[kStages][kQueryStep],
      s_doc[kStages][kQueryStep];
  __shared__ int s_kind[kStages][2];
  __shared__ uint64_t kv_full, q_full[kStages], q_empty[kStages];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int kv_head = blockIdx.y, group = f.hq / f.hkv;
  const TileSlot slot =
      find_tile<kKeyBlock, true, kThreads>(f, blockIdx.x, blockIdx.x == 0 && blockIdx.y == 0);
  if (slot.sequence < 0) return;
  const int b = slot.sequence;
  const attention::SequenceShape seq = sequence_shape(f, b);
  const int64_t q_begin = f.cu_q[b], k_begin = f.cu_k[b];
  const int k0 = slot.m_block * kKeyBlock, k1 = min(k0 + kKeyBlock, static_cast<int>(seq.lk));
  const bool docs = f.doc_q != nullptr;

  if (tid == 0) {
    barrier_init(&kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&q_full[s], 2);  // the producer arrives twice: Q/dO issued, rows written
      barrier_init(&q_empty[s], kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();

  if (warp >= kConsumerWarps) {  // the producer warpgroup
    warpgroup_release_registers<kProducerRegisters>();
    if (warp != kConsumerWarps) return;
    const int64_t kv_limit = min(k1, static_cast<int>(seq.valid_k));
    if (k0 + kKeyBlock <= kv_limit) {
      if (lane == 0) {
        barrier_arrive_expect_tx(&kv_full, 2 * kKBytes);
        for (int box = 0; box < kBoxes; ++box) {
          tma_load_3d(s_k + box * kKeyBlock * kRowBytes, &p.k, 64 * box, kv_head,
                      static_cast<int>(k_begin + k0), &kv_full);
          tma_load_3d(s_v + box * kKeyBlock * kRowBytes, &p.v, 64 * box, kv_head,
                      static_cast<int>(k_begin + k0), &kv_full);
        }
      }
    } else {  // past the valid keys: copied here, the tail zeroed
      const T* const k_rows =
          static_cast<const T*>(f.k.data) + k_begin * f.k.token + kv_head * f.k.head;
      const T* const v_rows =
          static_cast<const T*>(f.v.data) + k_begin * f.v.token + kv_head * f.v.head;
      sm90_tiles::copy_rows_zero_tail<T, kKeyBlock, kD>(s_k, k_rows, f.k.token, k0, kv_limit);
      sm90_tiles::copy_rows_zero_tail<T, kKeyBlock, kD>(s_v, v_rows, f.v.token, k0, kv_limit);
      fence_async_shared();
      __syncwarp();
      if (lane == 0) barrier_arrive(&kv_full);
    }
    // Items: (head of the group, query tile) pairs that can see the key tile, in a fixed order,
    // over the query tiles whose rows see some key of it: visible_queries bounds the rows by
    // causality, the window and validity; with documents, only rows of the keys' documents.
    attention::Tile keys{0, 0, k0, k1};
    const int last_key = static_cast<int>(kv_limit) - 1;
    const attention::QueryRange rows = attention::visible_queries(f.rules, seq, k0, k1);
    int row_lo = static_cast<int>(rows.lo), row_hi = static_cast<int>(rows.hi);
    if (docs && last_key >= k0 && row_lo < row_hi) {
      keys.k_doc_min = f.doc_k[k_begin + k0];
      keys.k_doc_max = f.doc_k[k_begin + last_key];
      const int32_t* const doc_q = f.doc_q + q_begin;
      const int valid_q = static_cast<int>(seq.valid_q);
      row_lo = max(row_lo, first_id_at_least(doc_q, valid_q, keys.k_doc_min));
      row_hi = min(row_hi, first_id_at_least(doc_q, valid_q, keys.k_doc_max + 1));
    }
    const int tile0 = row_lo / kQueryStep;
    const int q_tiles = row_hi > row_lo ? (row_hi + kQueryStep - 1) / kQueryStep - tile0 : 0;
    const int items = group * q_tiles;
    auto next_visible = [&](int item) {
      for (; item < items; ++item) {
        attention::Tile t = keys;
        t.q0 = int64_t{tile0 + item % q_tiles} * kQueryStep;
        t.q1 = min(t.q0 + kQueryStep, seq.lq);
        if (docs) {
          const int64_t last = min(t.q1, seq.valid_q) - 1;
          if (last < t.q0) continue;
          t.q_doc_min = f.doc_q[q_begin + t.q0];
          t.q_doc_max = f.doc_q[q_begin + last];
        }
        if (attention::tile_may_be_visible(f.rules, seq, t)) break;
      }
      return item;
    };
    // Each consumer warpgroup's 64 keys: all valid, and with documents all in one (which).
    struct {
      bool valid;
      int doc;
    } group_keys[2];
    for (int g = 0; g < 2; ++g) {
      const int g0 = k0 + 64 * g, g1 = g0 + 64;
      group_keys[g].valid = g1 <= kv_limit;
      group_keys[g].doc = 0;
      if (docs && group_keys[g].valid) {
        group_keys[g].doc = f.doc_k[k_begin + g0];
        group_keys[g].valid = group_keys[g].doc == f.doc_k[k_begin + g1 - 1];
      }
    }
    // The producer keeps ahead of its own latencies: the next item's lse, delta and documents load
    // into registers before it waits for a free stage, and an item's Q/dO copies are issued before
    // its rows are written (q_full takes both arrivals).
    struct RowStats {
      float lse[2], delta[2];  // rows lane and lane + 32
      int doc[2];              // their documents (0 without documents)
    };
    // An item's query head and first row.
    auto head_of = [&](int item) { return kv_head * group + item / q_tiles; };
    auto first_row_of = [&](int item) { return (tile0 + item % q_tiles) * kQueryStep; };
    auto load_rows = [&](int item) {
      RowStats r{};
      const int head = head_of(item), m0 = first_row_of(item);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int i = m0 + lane + 32 * k;
        // Rows past the valid prefix get lse -inf (+inf below), so p = 0 with or without the mask.
        r.lse[k] =
            i < seq.valid_q ? f.lse[head * f.lse_head + (q_begin + i) * f.lse_token] : -INFINITY;
        r.delta[k] = i < seq.lq ? a.delta[head * f.total_q + q_begin + i] : 0.f;
        r.doc[k] = docs && i < seq.lq ? f.doc_q[q_begin + i] : 0;
      }
      return r;
    };
    int it = 0;
    int item = next_visible(0);
    RowStats next_rows = item < items ? load_rows(item) : RowStats{};
    for (; item < items; ++it) {
      const int s = it % kStages;
      const uint32_t phase = (it / kStages) & 1;
      const int head = head_of(item), m0 = first_row_of(item);
      const RowStats rows_now = next_rows;
      const int next_item = next_visible(item + 1);
      if (next_item < items) next_rows = load_rows(next_item);
      if (lane == 0) {
        barrier_wait_parity(&q_empty[s], phase ^ 1);
        barrier_arrive_expect_tx(&q_full[s], 2 * kQBytes);
        for (int box = 0; box < kBoxes; ++box) {
          tma_load_3d(s_q + s * kQBytes + box * kQueryStep * kRowBytes, &p.q, 64 * box, head,
                      static_cast<int>(q_begin + m0), &q_full[s]);
          tma_load_3d(s_do + s * kQBytes + box * kQueryStep * kRowBytes, &p.dout, 64 * box, head,
                      static_cast<int>(q_begin + m0), &q_full[s]);
        }
      }
      __syncwarp();
      bool full[2] = {true, true};
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int r = lane + 32 * k, i = m0 + r;
        const bool valid = i < seq.valid_q;
        const float l = rows_now.lse[k];
        s_lse2[s][r] = l == -INFINITY ? INFINITY : l * kLog2e;  // +inf: p = 0
        s_delta[s][r] = rows_now.delta[k];
        // Rows past the valid prefix (those past the sequence among them) see no key.
        const attention::KeyRange kr = attention::visible_keys(f.rules, seq, i);
        s_lo[s][r] = static_cast<int>(kr.lo);
        s_hi[s][r] = static_cast<int>(kr.hi);
        const int doc = rows_now.doc[k];
        s_doc[s][r] = doc;
        for (int g = 0; g < 2; ++g) {  // does this row see all of warpgroup g's keys?
          const int g0 = k0 + 64 * g;
          full[g] =
              full[g] && group_keys[g].valid &&
              (!valid || (kr.lo <= g0 && kr.hi >= g0 + 64 && (!docs || doc == group_keys[g].doc)));
        }
      }
      const bool full0 = __all_sync(~0u, full[0]), full1 = __all_sync(~0u, full[1]);
      if (lane == 0) {
        s_kind[s][0] = full0 ? kAllVisible : kMasked;
        s_kind[s][1] = full1 ? kAllVisible : kMasked;
      }
      __syncwarp();
      if (lane == 0) barrier_arrive(&q_full[s]);  // the rows are written
      item = next_item;
    }
    // The end: one more stage, with no rows, tells the consumers there is no next item.
    if (lane == 0) {
      const int s = it % kStages;
      barrier_wait_parity(&q_empty[s], ((it / kStages) & 1) ^ 1);
      s_kind[s][0] = s_kind[s][1] = kNoMoreItems;
      barrier_arrive(&q_full[s]);
      barrier_arrive(&q_full[s]);
    }
    return;
  }

  warpgroup_claim_registers<kConsumerRegisters>();
  // Consumers: warpgroup wg owns keys k0 + 64 wg ..; this thread keys key_row + 8 h.
  const int wg = warp / 4;
  const int key_row = k0 + 64 * wg + 16 * (warp % 4) + lane / 4;
  int key_doc[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = key_row + 8 * h;
    key_doc[h] = docs && j < seq.valid_k ? f.doc_k[k_begin + j] : -2;
  }
  float dk[kDT * 4], dv[kDT * 4];
#pragma unroll
  for (int i = 0; i < kDT * 4; ++i) dk[i] = dv[i] = 0.f;
  const uint32_t k_base = shared_address(s_k) + 64 * wg * kRowBytes;
  const uint32_t v_base = shared_address(s_v) + 64 * wg * kRowBytes;
  const sm90_tiles::PingPong turns{wg, p.ping_pong};
  turns.start();
  barrier_wait_parity(&kv_full, 0);

  for (int it = 0;; ++it) {  // the items the producer stages, until it says there are no more
    const int s = it % kStages;
    const uint32_t phase = (it / kStages) & 1;
    const uint32_t q_base = shared_address(s_q + s * kQBytes);
    const uint32_t do_base = shared_address(s_do + s * kQBytes);
    float st[kNT * 4], dpt[kNT * 4];
    barrier_wait_parity(&q_full[s], phase);
    const int kind = s_kind[s][wg];
    if (kind == kNoMoreItems) break;
    turns.wait_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {  // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ over the head dim
      const uint32_t step = (kk % 4) * 32;  // 16 columns into the swizzled row
      const uint32_t key_box = (kk / 4) * kKeyBlock * kRowBytes + step;
      const uint32_t query_box = (kk / 4) * kQueryStep * kRowBytes + step;
      wgmma_ss<T, kQueryStep, 0>(st, sw128_descriptor(k_base + key_box, 16, 1024),
                                 sw128_descriptor(q_base + query_box, 16, 1024), kk > 0);
      wgmma_ss<T, kQueryStep, 0>(dpt, sw128_descriptor(v_base + key_box, 16, 1024),
                                 sw128_descriptor(do_base + query_box, 16, 1024), kk > 0);
    }
    wgmma_commit();
    turns.pass_turn();
    wgmma_wait<0>();
    fence_accumulators(st);
    fence_accumulators(dpt);

    // Pᵀ and dSᵀ: row = key (this thread's two), column = query of the item. Branch-free, and
    // masked only where some pair is not visible: a branch an element cost ~40 instructions
    // an element and left the exp2s no overlap (s10 SASS).
    auto scores_to_grads = [&](auto masked) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int col = 8 * nt + 2 * (lane % 4);  // this thread's columns col and col + 1
        const float2 lse2 = *reinterpret_cast<const float2*>(&s_lse2[s][col]);
        const float2 delta = *reinterpret_cast<const float2*>(&s_delta[s][col]);
        int2 lo{}, hi{}, doc{};
        if constexpr (decltype(masked)::value) {
          lo = *reinterpret_cast<const int2*>(&s_lo[s][col]);
          hi = *reinterpret_cast<const int2*>(&s_hi[s][col]);
          doc = *reinterpret_cast<const int2*>(&s_doc[s][col]);
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool odd = c % 2;
          float th = 0.f;
          const float t = Math::log2_score(f, st[4 * nt + c], th);
          float pv = fast_exp2(t - (odd ? lse2.y : lse2.x));
          float ds = Math::dscore(pv * (dpt[4 * nt + c] - (odd ? delta.y : delta.x)), th);
          if constexpr (decltype(masked)::value) {
            const int j = key_row + 8 * (c / 2);
            const bool see = (j >= (odd ? lo.y : lo.x)) & (j < (odd ? hi.y : hi.x)) &
                             (!docs | ((odd ? doc.y : doc.x) == key_doc[c / 2]));
            pv = see ? pv : 0.f;
            ds = see ? ds : 0.f;
          }
          st[4 * nt + c] = pv;
          dpt[4 * nt + c] = ds;
        }
      }
    };
    if (kind == kAllVisible) {
      scores_to_grads(std::false_type{});
    } else {
      scores_to_grads(std::true_type{});
    }
    uint32_t pa[kQueryStep / 16][4], dsa[kQueryStep / 16][4];
#pragma unroll
    for (int kk = 0; kk < kQueryStep / 16; ++kk) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        pa[kk][r] = pack_pair<T>(st[8 * kk + 2 * r], st[8 * kk + 2 * r + 1]);
        dsa[kk][r] = pack_pair<T>(dpt[8 * kk + 2 * r], dpt[8 * kk + 2 * r + 1]);
      }
    }
    turns.wait_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kQueryStep / 16; ++kk) {  // dV += Pᵀ dO, dK += dSᵀ Q over the queries
      const uint32_t rows = kk * 16 * kRowBytes;
      wgmma_rs<T, kD, 1>(dv, pa[kk], sw128_descriptor(do_base + rows, kQueryStep * kRowBytes, 1024),
                         true);
      wgmma_rs<T, kD, 1>(dk, dsa[kk], sw128_descriptor(q_base + rows, kQueryStep * kRowBytes, 1024),
                         true);
    }
    wgmma_commit();
    turns.pass_turn();
    wgmma_wait<0>();
    fence_accumulators(dk);
    fence_accumulators(dv);
    if (lane == 0) barrier_arrive(&q_empty[s]);
  }
  turns.finish();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = key_row + 8 * h;
    if (j >= k1) continue;
    T* const dk_row = static_cast<T*>(a.dk.data) + (k_begin + j) * a.dk.token + kv_head * a.dk.head;
    T* const dv_row = static_cast<T*>(a.dv.data) + (k_begin + j) * a.dv.token + kv_head * a.dv.head;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      const int col = 8 * dt + 2 * (lane % 4);
      *reinterpret_cast<uint32_t*>(dk_row + col) = pack_pair<T>(
          dk[4 * dt + 2 * h] * a.softmax_scale, dk[4 * dt + 2 * h + 1] * a.softmax_scale);
      *reinterpret_cast<uint32_t*>(dv_row + col) =
          pack_pair<T>(dv[4 * dt + 2 * h], dv[4 * dt + 2 * h + 1]);
    }
  }
#endif
}

template <typename T, int kD, bool kSoftcap>
__global__ void __launch_bounds__(kThreads, 1)
    dq_sm90_kernel(const __grid_constant__ Sm90BackwardArgs p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace attention_tiles;  // NOLINT: the shared tile pieces
  using attention_bwd::kLog2e;
  using Math = attention_bwd::ScoreMath<kSoftcap>;
  constexpr int kBoxes = kD / 64, kNT = kKeyStep / 8, kDT = kD / 8;
  constexpr int kQBytes = kQueryBlock * kD * 2, kKBytes = kKeyStep * kD * 2;
  static_assert(kD == 64 || kD == 128);
  const AttentionBackwardArgs& a = p.a;
  const AttentionForwardArgs& f = a.f;

  extern __shared__ uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - shared_address(smem_raw) % 1024) % 1024);
  uint8_t* const s_q = smem;                     // [kBoxes][kQueryBlock][128 B]
  uint8_t* const s_do = s_q + kQBytes;           // the same for dO
  uint8_t* const s_k = s_do + kQBytes;           // [kStages][kBoxes][kKeyStep][128 B]
  uint8_t* const s_v = s_k + kStages * kKBytes;  // the same for V
  __shared__ uint64_t q_full, k_full[kStages], k_empty[kStages], v_full[kStages], v_empty[kStages];
  // Per stage: which key tile it holds (-1: no more tiles) and whether every pair is visible.
  __shared__ int s_tile[kStages], s_full[kStages];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int head = blockIdx.y;
  const TileSlot slot = find_tile<kQueryBlock, false, kThreads>(f, blockIdx.x, false);
  if (slot.sequence < 0) return;  // dK/dV's launch reports bad metadata
  const int b = slot.sequence;
  const attention::SequenceShape seq = sequence_shape(f, b);
  const int64_t q_begin = f.cu_q[b], k_begin = f.cu_k[b];
  const int q0 = slot.m_block * kQueryBlock;
  const int q1 = min(q0 + kQueryBlock, static_cast<int>(seq.lq));
  const int kv_head = head / (f.hq / f.hkv);
  const KeyTiles<kKeyStep> tiles(f, seq, q_begin, k_begin, q0, q1);

  if (tid == 0) {
    barrier_init(&q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&k_full[s], 1);
      barrier_init(&v_full[s], 1);
      barrier_init(&k_empty[s], kConsumerWarps);
      barrier_init(&v_empty[s], kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();

  if (warp >= kConsumerWarps) {  // the producer warpgroup
    warpgroup_release_registers<kProducerRegisters>();
    if (warp != kConsumerWarps) return;
    if (lane == 0) {
      barrier_arrive_expect_tx(&q_full, 2 * kQBytes);
      for (int box = 0; box < kBoxes; ++box) {
        tma_load_3d(s_q + box * kQueryBlock * kRowBytes, &p.q, 64 * box, head,
                    static_cast<int>(q_begin + q0), &q_full);
        tma_load_3d(s_do + box * kQueryBlock * kRowBytes, &p.dout, 64 * box, head,
                    static_cast<int>(q_begin + q0), &q_full);
      }
    }
    const T* const k_rows =
        static_cast<const T*>(f.k.data) + k_begin * f.k.token + kv_head * f.k.head;
    const T* const v_rows =
        static_cast<const T*>(f.v.data) + k_begin * f.v.token + kv_head * f.v.head;
    int it = 0;
    for (int n = tiles.next_visible(tiles.begin); n < tiles.end;
         n = tiles.next_visible(n + 1), ++it) {
      const int s = it % kStages;
      const uint32_t phase = (it / kStages) & 1;
      const int n0 = n * kKeyStep;
      uint8_t* const k_tile = s_k + s * kKBytes;
      uint8_t* const v_tile = s_v + s * kKBytes;
      const bool full = tiles.fully_visible(n);
      if (lane == 0) {
        barrier_wait_parity(&k_empty[s], phase ^ 1);
        barrier_wait_parity(&v_empty[s], phase ^ 1);
        s_tile[s] = n;
        s_full[s] = full;
      }
      __syncwarp();
      if (n0 + kKeyStep <= seq.valid_k) {
        if (lane == 0) {
          barrier_arrive_expect_tx(&k_full[s], kKBytes);
          barrier_arrive_expect_tx(&v_full[s], kKBytes);
          for (int box = 0; box < kBoxes; ++box) {
            tma_load_3d(k_tile + box * kKeyStep * kRowBytes, &p.k, 64 * box, kv_head,
                        static_cast<int>(k_begin + n0), &k_full[s]);
            tma_load_3d(v_tile + box * kKeyStep * kRowBytes, &p.v, 64 * box, kv_head,
                        static_cast<int>(k_begin + n0), &v_full[s]);
          }
        }
      } else {  // past the valid keys: copied here, the tail zeroed (K feeds dQ += dS K)
        sm90_tiles::copy_rows_zero_tail<T, kKeyStep, kD>(k_tile, k_rows, f.k.token, n0,
                                                         seq.valid_k);
        sm90_tiles::copy_rows_zero_tail<T, kKeyStep, kD>(v_tile, v_rows, f.v.token, n0,
                                                         seq.valid_k);
        fence_async_shared();
        __syncwarp();
        if (lane == 0) {
          barrier_arrive(&k_full[s]);
          barrier_arrive(&v_full[s]);
        }
      }
    }
    if (lane == 0) {  // the end: a stage with no tile
      const int s = it % kStages;
      barrier_wait_parity(&k_empty[s], ((it / kStages) & 1) ^ 1);
      s_tile[s] = -1;
      barrier_arrive(&k_full[s]);
    }
    if (head == 0) {
      report_decreasing_documents<kQueryBlock>(f, seq, q_begin, k_begin, slot.m_block);
    }
    return;
  }

  warpgroup_claim_registers<kConsumerRegisters>();
  // Consumers: warpgroup wg owns rows 64 wg ..; this thread rows warp_row0 + lane / 4 + 8 h.
  const int wg = warp / 4;
  const int warp_row0 = 64 * wg + 16 * (warp % 4);
  const bool docs = f.doc_q != nullptr;
  float lse2[2], delta[2];
  int lo[2], hi[2], doc[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = q0 + warp_row0 + 8 * h + lane / 4;
    const attention::KeyRange r = attention::visible_keys(f.rules, seq, i);
    lo[h] = static_cast<int>(r.lo);
    hi[h] = static_cast<int>(r.hi);
    const bool in = i < q1;
    const float l = in ? f.lse[head * f.lse_head + (q_begin + i) * f.lse_token] : -INFINITY;
    lse2[h] = l == -INFINITY ? INFINITY : l * kLog2e;
    delta[h] = in ? a.delta[head * f.total_q + q_begin + i] : 0.f;
    doc[h] = docs && in ? f.doc_q[q_begin + i] : 0;
  }
  float dq[kDT * 4];
#pragma unroll
  for (int i = 0; i < kDT * 4; ++i) dq[i] = 0.f;
  const uint32_t q_base = shared_address(s_q) + 64 * wg * kRowBytes;
  const uint32_t do_base = shared_address(s_do) + 64 * wg * kRowBytes;
  const sm90_tiles::PingPong turns{wg, p.ping_pong};
  turns.start();
  barrier_wait_parity(&q_full, 0);

  for (int it = 0;; ++it) {  // the tiles the producer stages, until it says there are no more
    const int s = it % kStages;
    const uint32_t phase = (it / kStages) & 1;
    const uint32_t k_base = shared_address(s_k + s * kKBytes);
    const uint32_t v_base = shared_address(s_v + s * kKBytes);
    float sc[kNT * 4], dp[kNT * 4];
    barrier_wait_parity(&k_full[s], phase);
    const int n = s_tile[s];
    if (n < 0) break;
    const bool full = s_full[s];
    barrier_wait_parity(&v_full[s], phase);
    turns.wait_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {  // S = Q Kᵀ and dP = dO Vᵀ over the head dim
      const uint32_t step = (kk % 4) * 32;
      const uint32_t row_box = (kk / 4) * kQueryBlock * kRowBytes + step;
      const uint32_t key_box = (kk / 4) * kKeyStep * kRowBytes + step;
      wgmma_ss<T, kKeyStep, 0>(sc, sw128_descriptor(q_base + row_box, 16, 1024),
                               sw128_descriptor(k_base + key_box, 16, 1024), kk > 0);
      wgmma_ss<T, kKeyStep, 0>(dp, sw128_descriptor(do_base + row_box, 16, 1024),
                               sw128_descriptor(v_base + key_box, 16, 1024), kk > 0);
    }
    wgmma_commit();
    turns.pass_turn();
    wgmma_wait<0>();
    fence_accumulators(sc);
    fence_accumulators(dp);
    if (lane == 0) barrier_arrive(&v_empty[s]);

    // dS, branch-free as in dK/dV; 0: no mask (every pair visible), 1: key ranges, 2: and
    // documents (the keys' ids read here, clamped to the valid keys the ranges already bound).
    auto scores_to_grads = [&](auto mask) {
      constexpr int kMask = decltype(mask)::value;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int j0 = n * kKeyStep + 8 * nt + 2 * (lane % 4);
        int key_doc[2] = {0, 0};
        if constexpr (kMask == 2) {
          key_doc[0] = tiles.doc_of_key(j0);
          key_doc[1] = tiles.doc_of_key(j0 + 1);
        }
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int h = c / 2, j = j0 + c % 2;
          float th = 0.f;
          const float t = Math::log2_score(f, sc[4 * nt + c], th);
          const float pv = fast_exp2(t - lse2[h]);
          float ds = Math::dscore(pv * (dp[4 * nt + c] - delta[h]), th);
          if constexpr (kMask > 0) {
            const bool see = (j >= lo[h]) & (j < hi[h]) & (kMask == 1 | key_doc[c % 2] == doc[h]);
            ds = see ? ds : 0.f;
          }
          sc[4 * nt + c] = ds;
        }
      }
    };
    if (full) {
      scores_to_grads(std::integral_constant<int, 0>{});
    } else if (!docs) {
      scores_to_grads(std::integral_constant<int, 1>{});
    } else {
      scores_to_grads(std::integral_constant<int, 2>{});
    }
    uint32_t dsa[kKeyStep / 16][4];
#pragma unroll
    for (int kk = 0; kk < kKeyStep / 16; ++kk) {
#pragma unroll
      for (int r = 0; r < 4; ++r)
        dsa[kk][r] = pack_pair<T>(sc[8 * kk + 2 * r], sc[8 * kk + 2 * r + 1]);
    }
    turns.wait_turn();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kKeyStep / 16; ++kk) {  // dQ += dS K over the keys
      wgmma_rs<T, kD, 1>(dq, dsa[kk],
                         sw128_descriptor(k_base + kk * 16 * kRowBytes, kKeyStep * kRowBytes, 1024),
                         true);
    }
    wgmma_commit();
    turns.pass_turn();
    wgmma_wait<0>();
    fence_accumulators(dq);
    if (lane == 0) barrier_arrive(&k_empty[s]);
  }
  turns.finish();

  T* const out = static_cast<T*>(a.dq.data) + (q_begin + q0) * a.dq.token + head * a.dq.head;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = warp_row0 + 8 * h + lane / 4;
    if (q0 + row >= q1) continue;
    T* const out_row = out + int64_t{row} * a.dq.token;
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      *reinterpret_cast<uint32_t*>(out_row + 8 * dt + 2 * (lane % 4)) = pack_pair<T>(
          dq[4 * dt + 2 * h] * a.softmax_scale, dq[4 * dt + 2 * h + 1] * a.softmax_scale);
    }
  }
#endif
}

// dQ on a second stream beside dK/dV; KILN_ATTENTION_BWD_OVERLAP=0 runs them one after the other.
inline bool overlap_enabled() {
  return !env_is("KILN_ATTENTION_BWD_OVERLAP", "0");
}

// The three launches on a Hopper device when every view is TMA-describable; returns the variant
// name, or "" having launched nothing.
template <int kD>
std::string launch(const AttentionBackwardArgs& a, Stream stream) {
  const AttentionForwardArgs& f = a.f;
  if (f.block_table != nullptr || f.total_q == 0 || f.total_k == 0) return "";
  if (!on_hopper()) return "";
  using sm90_tiles::map_heads;
  Sm90BackwardArgs kv{}, qd{};
  kv.a = qd.a = a;
  kv.ping_pong = qd.ping_pong = sm90_tiles::ping_pong_enabled(false);
  if (!map_heads(&kv.q, f.q, kD, f.total_q, f.hq, kQueryStep) ||
      !map_heads(&kv.dout, a.dout, kD, f.total_q, f.hq, kQueryStep) ||
      !map_heads(&kv.k, f.k, kD, f.total_k, f.hkv, kKeyBlock) ||
      !map_heads(&kv.v, f.v, kD, f.total_k, f.hkv, kKeyBlock) ||
      !map_heads(&qd.q, f.q, kD, f.total_q, f.hq, kQueryBlock) ||
      !map_heads(&qd.dout, a.dout, kD, f.total_q, f.hq, kQueryBlock) ||
      !map_heads(&qd.k, f.k, kD, f.total_k, f.hkv, kKeyStep) ||
      !map_heads(&qd.v, f.v, kD, f.total_k, f.hkv, kKeyStep)) {
    return "";
  }
  constexpr int kSmemKV = 1024 + 2 * kD * (2 * kKeyBlock + 2 * kStages * kQueryStep);
  constexpr int kSmemQ = 1024 + 2 * kD * (2 * kQueryBlock + 2 * kStages * kKeyStep);
  const dim3 kv_grid(static_cast<unsigned>((f.total_k + kKeyBlock - 1) / kKeyBlock + f.batch),
                     static_cast<unsigned>(f.hkv));
  const dim3 q_grid(static_cast<unsigned>((f.total_q + kQueryBlock - 1) / kQueryBlock + f.batch),
                    static_cast<unsigned>(f.hq));
  const bool overlap = overlap_enabled();
  auto run = [&](auto kernel, dim3 grid, int smem, const Sm90BackwardArgs& args, Stream on) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, on>>>(args);
    KILN_CUDA_CHECK(cudaGetLastError());
  };
  attention_tiles::with_dtype_and_softcap(
      f.dtype, f.softcap_in > 0, [&](auto type_tag, auto softcap) {
        using T = typename decltype(type_tag)::type;
        constexpr bool kCap = decltype(softcap)::value;
        const int64_t rows = f.total_q * f.hq;
        attention_bwd::delta_kernel<T>
            <<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(a);
        KILN_CUDA_CHECK(cudaGetLastError());
        // dQ and dK/dV read only q, k, v, dO, lse and delta: dQ runs on a second stream and
        // fills the SMs dK/dV's uneven last wave leaves idle (documents, causal).
        std::optional<StreamFork> fork;
        if (overlap) fork.emplace(stream);
        run(dkdv_sm90_kernel<T, kD, kCap>, kv_grid, kSmemKV, kv, stream);
        run(dq_sm90_kernel<T, kD, kCap>, q_grid, kSmemQ, qd, fork ? fork->side() : stream);
        if (fork) fork->join();
      });
  return std::string("attention_bwd_wgmma_tma<") + std::string(dtype_name(f.dtype)) + ",d" +
         std::to_string(kD) + ",dkdv128x64,dq128x64" + (f.softcap_in > 0 ? ",softcap" : "") +
         (kv.ping_pong ? ",pingpong" : "") + (overlap ? ",dq_beside_dkdv" : "") + ",deterministic>";
}

}  // namespace kiln::cuda::attention_bwd_sm90
