#pragma once
// Attention backward on mma.sync, deterministic by construction (no atomics): three launches.
// 1. delta = rowsum(dO * O) per (head, query), fp32 scratch.
// 2. dK, dV: one CTA a (sequence, 64-key tile, kv head), 4 warps of 16 keys; it walks every
//    (query head of the GQA group, query tile) that can see its keys, recomputing
//    Sᵀ = K Qᵀ and Pᵀ = exp(Sᵀ - lse), and accumulates dV += Pᵀ dO, dSᵀ = Pᵀ (V dOᵀ - delta),
//    dK += dSᵀ Q in registers (the group's heads summed in a fixed order). D > 128 splits dK
//    and dV into two launches (registers).
// 3. dQ: one CTA a (sequence, 64-query tile, head), the forward's loop over key tiles with
//    dS = P (dO Vᵀ - delta) and dQ += dS K.
// Recomputing S in both passes costs 7 GEMMs instead of FlashAttention-2's 5 and buys the
// determinism without dQ atomics. Soft-capping multiplies dS by 1 - tanh² of the capped score.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "attention/mask_rules.h"
#include "cuda/attention/attention_launch.h"
#include "cuda/attention/tile_common.cuh"
#include "cuda/attention/warp_gemm.cuh"
#include "cuda/common/cp_async.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"

namespace kiln::cuda::attention_bwd {

using namespace attention_tiles;  // NOLINT: the shared tile pieces

constexpr int kTile = 16 * kWarps;  // the rows a CTA owns: 64 queries (dQ) or 64 keys (dK, dV)
constexpr float kLog2e = 1.4426950408889634f;

// delta[h][t] = sum_d dout[t][h][d] * out[t][h][d], a warp a (token, head).
template <typename T>
__global__ void __launch_bounds__(256)
    delta_kernel(const __grid_constant__ AttentionBackwardArgs a) {
  const int64_t row = int64_t{blockIdx.x} * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= a.f.total_q * a.f.hq) return;
  const int64_t t = row / a.f.hq, h = row % a.f.hq;
  const T* o = static_cast<const T*>(a.f.out.data) + t * a.f.out.token + h * a.f.out.head;
  const T* g = static_cast<const T*>(a.dout.data) + t * a.dout.token + h * a.dout.head;
  float sum = 0.f;
  for (int d = lane; d < a.f.head_dim_v; d += 32) sum += to_float(o[d]) * to_float(g[d]);
#pragma unroll
  for (int s = 16; s > 0; s >>= 1) sum += __shfl_xor_sync(~0u, sum, s);
  if (lane == 0) a.delta[h * a.f.total_q + t] = sum;
}

// rows [row0, row0 + rows) of a [tokens, heads, width] view (row stride `token`) into a swizzled
// [rows][width] tile; rows at or past `limit` are zero-filled.
template <typename T, int kRows, int kWidth>
__device__ __forceinline__ void load_rows(T* tile, const T* src, int64_t token, int row0,
                                          int64_t limit) {
  for (int c = threadIdx.x; c < kRows * kWidth / 8; c += kThreads) {
    const int row = c / (kWidth / 8), col = c % (kWidth / 8) * 8;
    const bool in = row0 + row < limit;
    cp_async16_or_zero(tile + swizzled<kWidth>(row, col),
                       in ? src + (row0 + row) * token + col : src, in);
  }
}

template <bool kSoftcap>
struct ScoreMath {
  // The score in base-2 units from a raw q·k; th keeps tanh for the soft-cap's derivative.
  __device__ __forceinline__ static float log2_score(const AttentionForwardArgs& f, float x,
                                                     float& th) {
    if constexpr (kSoftcap) {
      th = tanhf(x * f.softcap_in);
      return f.softcap_log2 * th;
    } else {
      return x * f.scale_log2;
    }
  }
  __device__ __forceinline__ static float dscore(float ds, float th) {
    if constexpr (kSoftcap) return ds * (1.f - th * th);
    return ds;
  }
};

template <typename T, int kD, int kDv, int kBlockN, bool kSoftcap>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const __grid_constant__ AttentionBackwardArgs a) {
  const AttentionForwardArgs& f = a.f;
  extern __shared__ uint4 smem_words[];
  T* const s_q = reinterpret_cast<T*>(smem_words);  // [kTile][kD]
  T* const s_do = s_q + kTile * kD;                 // [kTile][kDv]
  T* const s_k = s_do + kTile * kDv;                // [2][kBlockN][kD]
  T* const s_v = s_k + 2 * kBlockN * kD;            // [2][kBlockN][kDv]
  __shared__ int s_doc_k[2][kBlockN];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int head = blockIdx.y;
  const TileSlot tile = find_tile<kTile>(f, blockIdx.x, false);  // dK/dV's launch reports
  if (tile.sequence < 0) return;
  const int b = tile.sequence;
  const attention::SequenceShape seq = sequence_shape(f, b);
  const int64_t q_begin = f.cu_q[b], k_begin = f.cu_k[b];
  const int q0 = tile.m_block * kTile, q1 = min(q0 + kTile, static_cast<int>(seq.lq));
  const int kv_head = head / (f.hq / f.hkv);
  const bool docs = f.doc_q != nullptr;
  const T* q_ptr = static_cast<const T*>(f.q.data) + q_begin * f.q.token + head * f.q.head;
  const T* do_ptr =
      static_cast<const T*>(a.dout.data) + q_begin * a.dout.token + head * a.dout.head;
  const T* k_ptr = static_cast<const T*>(f.k.data) + k_begin * f.k.token + kv_head * f.k.head;
  const T* v_ptr = static_cast<const T*>(f.v.data) + k_begin * f.v.token + kv_head * f.v.head;
  load_rows<T, kTile, kD>(s_q, q_ptr, f.q.token, q0, q1);
  load_rows<T, kTile, kDv>(s_do, do_ptr, a.dout.token, q0, q1);

  // This thread's two rows (h = 0, 1): statistics and visible key ranges.
  float lse2[2], delta[2];
  int lo[2], hi[2], doc[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = q0 + warp * 16 + 8 * h + lane / 4;
    const attention::KeyRange r = attention::visible_keys(f.rules, seq, i);
    lo[h] = static_cast<int>(r.lo);
    hi[h] = static_cast<int>(r.hi);
    const bool in = i < q1;
    const float l = in ? f.lse[head * f.lse_head + (q_begin + i) * f.lse_token] : -INFINITY;
    lse2[h] = l == -INFINITY ? INFINITY : l * kLog2e;  // +inf: every p of the row is 0
    delta[h] = in ? a.delta[head * f.total_q + q_begin + i] : 0.f;
    doc[h] = docs && in ? f.doc_q[q_begin + i] : 0;
  }
  int n_begin = 0, n_end = 0;
  const int last_row = min(q1, static_cast<int>(seq.valid_q)) - 1;
  attention::Tile rows{q0, q1, 0, 0};
  if (last_row >= q0) {
    const attention::KeyRange first = attention::visible_keys(f.rules, seq, q0);
    const attention::KeyRange last = attention::visible_keys(f.rules, seq, last_row);
    if (last.hi > first.lo) {
      n_begin = static_cast<int>(first.lo) / kBlockN;
      n_end = static_cast<int>((last.hi + kBlockN - 1) / kBlockN);
    }
    if (docs) {
      rows.q_doc_min = f.doc_q[q_begin + q0];
      rows.q_doc_max = f.doc_q[q_begin + last_row];
    }
  }
  auto visible_tile = [&](int n) {
    if (!docs) return true;
    attention::Tile t = rows;
    t.k0 = int64_t{n} * kBlockN;
    t.k1 = min(t.k0 + kBlockN, seq.lk);
    if (t.k0 >= seq.valid_k) return false;
    t.k_doc_min = f.doc_k[k_begin + t.k0];
    t.k_doc_max = f.doc_k[k_begin + min(t.k1, seq.valid_k) - 1];
    return attention::tile_may_be_visible(f.rules, seq, t);
  };
  auto next_visible = [&](int n) {
    while (n < n_end && !visible_tile(n)) ++n;
    return n;
  };
  auto load_kv = [&](int n, int stage) {
    load_rows<T, kBlockN, kD>(s_k + stage * kBlockN * kD, k_ptr, f.k.token, n * kBlockN,
                              seq.valid_k);
    load_rows<T, kBlockN, kDv>(s_v + stage * kBlockN * kDv, v_ptr, f.v.token, n * kBlockN,
                               seq.valid_k);
    if (docs) {
      for (int r = threadIdx.x; r < kBlockN; r += kThreads) {
        const int j = n * kBlockN + r;
        s_doc_k[stage][r] = j < seq.valid_k ? f.doc_k[k_begin + j] : -1;
      }
    }
  };

  float dq[kD / 8][4] = {};
  int n = next_visible(n_begin), stage = 0;
  if (n < n_end) load_kv(n, 0);
  cp_async_commit();
  while (n < n_end) {
    const int next = next_visible(n + 1);
    if (next < n_end) load_kv(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* k_tile = s_k + stage * kBlockN * kD;
    const T* v_tile = s_v + stage * kBlockN * kDv;
    float s[kBlockN / 8][4] = {}, dp[kBlockN / 8][4] = {};
    gemm_abt<T, kD, kBlockN>(s, s_q, warp * 16, k_tile);
    gemm_abt<T, kDv, kBlockN>(dp, s_do, warp * 16, v_tile);
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int h = c / 2, col = 8 * nt + 2 * (lane % 4) + c % 2, j = n * kBlockN + col;
        float th = 0.f;
        const float t = ScoreMath<kSoftcap>::log2_score(f, s[nt][c], th);
        const bool see = j >= lo[h] && j < hi[h] && (!docs || s_doc_k[stage][col] == doc[h]);
        const float p = see ? fast_exp2(t - lse2[h]) : 0.f;
        s[nt][c] = ScoreMath<kSoftcap>::dscore(p * (dp[nt][c] - delta[h]), th);
      }
    }
    gemm_pb<T, kBlockN, kD>(dq, s, k_tile);
    __syncthreads();
    n = next;
    stage ^= 1;
  }
  cp_async_wait<0>();
  T* out = static_cast<T*>(a.dq.data) + q_begin * a.dq.token + head * a.dq.head;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = q0 + warp * 16 + 8 * h + lane / 4;
    if (i >= q1) continue;
#pragma unroll
    for (int dt = 0; dt < kD / 8; ++dt) {
      *reinterpret_cast<uint32_t*>(out + i * a.dq.token + 8 * dt + 2 * (lane % 4)) =
          pack_pair<T>(dq[dt][2 * h] * a.softmax_scale, dq[dt][2 * h + 1] * a.softmax_scale);
    }
  }
  if (head == 0 && warp == 0)
    report_decreasing_documents<kTile>(f, seq, q_begin, k_begin, tile.m_block);
}

template <typename T, int kD, int kDv, int kBlockM, bool kSoftcap, bool kDoDK, bool kDoDV>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const __grid_constant__ AttentionBackwardArgs a) {
  const AttentionForwardArgs& f = a.f;
  extern __shared__ uint4 smem_words[];
  T* const s_k = reinterpret_cast<T*>(smem_words);  // [kTile][kD]
  T* const s_v = s_k + kTile * kD;                  // [kTile][kDv]
  T* const s_q = s_v + kTile * kDv;                 // [2][kBlockM][kD]
  T* const s_do = s_q + 2 * kBlockM * kD;           // [2][kBlockM][kDv]
  __shared__ float s_lse2[2][kBlockM], s_delta[2][kBlockM];
  __shared__ int s_lo[2][kBlockM], s_hi[2][kBlockM], s_doc_q[2][kBlockM];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int kv_head = blockIdx.y, group = f.hq / f.hkv;
  const TileSlot tile =
      find_tile<kTile, true>(f, blockIdx.x, blockIdx.x == 0 && blockIdx.y == 0 && kDoDK);
  if (tile.sequence < 0) return;
  const int b = tile.sequence;
  const attention::SequenceShape seq = sequence_shape(f, b);
  const int64_t q_begin = f.cu_q[b], k_begin = f.cu_k[b];
  const int k0 = tile.m_block * kTile, k1 = min(k0 + kTile, static_cast<int>(seq.lk));
  const bool docs = f.doc_q != nullptr;
  const T* k_ptr = static_cast<const T*>(f.k.data) + k_begin * f.k.token + kv_head * f.k.head;
  const T* v_ptr = static_cast<const T*>(f.v.data) + k_begin * f.v.token + kv_head * f.v.head;
  load_rows<T, kTile, kD>(s_k, k_ptr, f.k.token, k0, min(k1, static_cast<int>(seq.valid_k)));
  if (kDoDK) {
    load_rows<T, kTile, kDv>(s_v, v_ptr, f.v.token, k0, min(k1, static_cast<int>(seq.valid_k)));
  }

  // Work items: (head of the group, query tile), those that can see the key tile.
  const int q_tiles = static_cast<int>((seq.lq + kBlockM - 1) / kBlockM);
  const int items = group * q_tiles;
  attention::Tile keys{0, 0, k0, k1};
  const int last_key = min(k1, static_cast<int>(seq.valid_k)) - 1;
  if (docs && last_key >= k0) {
    keys.k_doc_min = f.doc_k[k_begin + k0];
    keys.k_doc_max = f.doc_k[k_begin + last_key];
  }
  auto visible_item = [&](int item) {
    attention::Tile t = keys;
    t.q0 = int64_t{item % q_tiles} * kBlockM;
    t.q1 = min(t.q0 + kBlockM, seq.lq);
    if (docs) {
      const int64_t last = min(t.q1, seq.valid_q) - 1;
      if (last < t.q0) return false;
      t.q_doc_min = f.doc_q[q_begin + t.q0];
      t.q_doc_max = f.doc_q[q_begin + last];
    }
    return attention::tile_may_be_visible(f.rules, seq, t);
  };
  auto next_visible = [&](int item) {
    while (item < items && !visible_item(item)) ++item;
    return item;
  };
  auto load_item = [&](int item, int stage) {
    const int head = kv_head * group + item / q_tiles, m0 = item % q_tiles * kBlockM;
    const T* q_ptr = static_cast<const T*>(f.q.data) + q_begin * f.q.token + head * f.q.head;
    load_rows<T, kBlockM, kD>(s_q + stage * kBlockM * kD, q_ptr, f.q.token, m0, seq.lq);
    if (kDoDV || kDoDK) {
      const T* do_ptr =
          static_cast<const T*>(a.dout.data) + q_begin * a.dout.token + head * a.dout.head;
      load_rows<T, kBlockM, kDv>(s_do + stage * kBlockM * kDv, do_ptr, a.dout.token, m0, seq.lq);
    }
    for (int r = threadIdx.x; r < kBlockM; r += kThreads) {
      const int i = m0 + r;
      const bool in = i < seq.lq;
      const float l = in ? f.lse[head * f.lse_head + (q_begin + i) * f.lse_token] : -INFINITY;
      s_lse2[stage][r] = l == -INFINITY ? INFINITY : l * kLog2e;
      s_delta[stage][r] = in ? a.delta[head * f.total_q + q_begin + i] : 0.f;
      const attention::KeyRange kr = attention::visible_keys(f.rules, seq, i);
      s_lo[stage][r] = static_cast<int>(kr.lo);
      s_hi[stage][r] = static_cast<int>(kr.hi);
      s_doc_q[stage][r] = docs && in ? f.doc_q[q_begin + i] : 0;
    }
  };

  float dk[kDoDK ? kD / 8 : 1][4] = {}, dv[kDoDV ? kDv / 8 : 1][4] = {};
  int item = next_visible(0), stage = 0;
  if (item < items) load_item(item, 0);
  cp_async_commit();
  const int key_row = k0 + warp * 16 + lane / 4;  // + 8 h
  int key_doc[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = key_row + 8 * h;
    key_doc[h] = docs && j < seq.valid_k ? f.doc_k[k_begin + j] : -2;
  }
  while (item < items) {
    const int next = next_visible(item + 1);
    if (next < items) load_item(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* q_tile = s_q + stage * kBlockM * kD;
    const T* do_tile = s_do + stage * kBlockM * kDv;
    float st[kBlockM / 8][4] = {}, dpt[kDoDK ? kBlockM / 8 : 1][4] = {};
    gemm_abt<T, kD, kBlockM>(st, s_k, warp * 16, q_tile);
    if constexpr (kDoDK) gemm_abt<T, kDv, kBlockM>(dpt, s_v, warp * 16, do_tile);
#pragma unroll
    for (int nt = 0; nt < kBlockM / 8; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int h = c / 2, col = 8 * nt + 2 * (lane % 4) + c % 2, j = key_row + 8 * h;
        float th = 0.f;
        const float t = ScoreMath<kSoftcap>::log2_score(f, st[nt][c], th);
        const bool see = j >= s_lo[stage][col] && j < s_hi[stage][col] &&
                         (!docs || s_doc_q[stage][col] == key_doc[h]);
        const float p = see ? fast_exp2(t - s_lse2[stage][col]) : 0.f;
        st[nt][c] = p;
        if constexpr (kDoDK) {
          dpt[nt][c] = ScoreMath<kSoftcap>::dscore(p * (dpt[nt][c] - s_delta[stage][col]), th);
        }
      }
    }
    if constexpr (kDoDV) gemm_pb<T, kBlockM, kDv>(dv, st, do_tile);
    if constexpr (kDoDK) gemm_pb<T, kBlockM, kD>(dk, dpt, q_tile);
    __syncthreads();
    item = next;
    stage ^= 1;
  }
  cp_async_wait<0>();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = key_row + 8 * h;
    if (j >= k1) continue;
    if constexpr (kDoDK) {
      T* out = static_cast<T*>(a.dk.data) + (k_begin + j) * a.dk.token + kv_head * a.dk.head;
#pragma unroll
      for (int dt = 0; dt < kD / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(out + 8 * dt + 2 * (lane % 4)) =
            pack_pair<T>(dk[dt][2 * h] * a.softmax_scale, dk[dt][2 * h + 1] * a.softmax_scale);
      }
    }
    if constexpr (kDoDV) {
      T* out = static_cast<T*>(a.dv.data) + (k_begin + j) * a.dv.token + kv_head * a.dv.head;
#pragma unroll
      for (int dt = 0; dt < kDv / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(out + 8 * dt + 2 * (lane % 4)) =
            pack_pair<T>(dv[dt][2 * h], dv[dt][2 * h + 1]);
      }
    }
  }
}

// The three launches for one head-dim configuration; returns the variant name.
template <int kD, int kDv, int kBlockN, int kBlockM>
std::string launch(const AttentionBackwardArgs& a, Stream stream) {
  const AttentionForwardArgs& f = a.f;
  const int64_t q_slots = (f.total_q + kTile - 1) / kTile + f.batch;
  const int64_t k_slots = (f.total_k + kTile - 1) / kTile + f.batch;
  constexpr bool kSplit = kD > 128;  // dK and dV accumulators together would spill
  auto run = [&](auto kernel, dim3 grid, int smem) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(a);
    KILN_CUDA_CHECK(cudaGetLastError());
  };
  auto typed = [&](auto type_tag, auto softcap) {
    using T = typename decltype(type_tag)::type;
    constexpr bool kCap = decltype(softcap)::value;
    const int64_t rows = f.total_q * f.hq;
    if (rows > 0) {
      delta_kernel<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(a);
      KILN_CUDA_CHECK(cudaGetLastError());
    }
    const int smem_kv =
        static_cast<int>(sizeof(T)) * (kTile * (kD + kDv) + 2 * kBlockM * (kD + kDv));
    const dim3 kv_grid(static_cast<unsigned>(k_slots), static_cast<unsigned>(f.hkv));
    if constexpr (kSplit) {
      run(dkdv_kernel<T, kD, kDv, kBlockM, kCap, true, false>, kv_grid, smem_kv);
      run(dkdv_kernel<T, kD, kDv, kBlockM, kCap, false, true>, kv_grid, smem_kv);
    } else {
      run(dkdv_kernel<T, kD, kDv, kBlockM, kCap, true, true>, kv_grid, smem_kv);
    }
    const int smem_q =
        static_cast<int>(sizeof(T)) * (kTile * (kD + kDv) + 2 * kBlockN * (kD + kDv));
    run(dq_kernel<T, kD, kDv, kBlockN, kCap>,
        dim3(static_cast<unsigned>(q_slots), static_cast<unsigned>(f.hq)), smem_q);
  };
  with_dtype_and_softcap(f.dtype, f.softcap_in > 0, typed);
  return std::string("attention_bwd_mma_sync<") + std::string(dtype_name(f.dtype)) + ",d" +
         std::to_string(kD) + (kDv != kD ? "_dv" + std::to_string(kDv) : "") + ",dq64x" +
         std::to_string(kBlockN) + ",dkdv64x" + std::to_string(kBlockM) + (kSplit ? ",split" : "") +
         (f.softcap_in > 0 ? ",softcap" : "") + ",deterministic>";
}

}  // namespace kiln::cuda::attention_bwd
