#pragma once
// Attention forward, FlashAttention-2 style on mma.sync (shared/notes/attention-sm90.md §5 step
// 0: the correctness baseline the wgmma/TMA kernels will be checked against).
//
// One CTA = one query tile of kBlockM rows of one (sequence, query head); 4 warps, each owning
// 16 * kMTiles rows across every key column, so the softmax needs only quad shuffles. Q stays in
// shared memory; K and V tiles of kBlockN keys are double-buffered by cp.async (the next visible
// tile loads while this one computes). S = Q Kᵀ and O += P V run on m16n8k16 MMAs; P goes from
// the S accumulators to the A operand in registers. The online softmax works in base 2 with the
// scale folded in; fully masked rows end with O = 0 and lse = -inf.
//
// The grid needs no host copy of cu_seqlens: blockIdx.x enumerates ceil(total_q / kBlockM) + B
// tile slots, each CTA scans the sequence lengths to find its (sequence, query tile), and slots
// past the last tile exit. Key tiles no query of the tile can see (mask_rules.h's exact
// predicate, causal, window, validity, document ranges) are never loaded; tiles every pair of
// which is visible skip the per-element mask.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "attention/mask_rules.h"
#include "cuda/attention/attention_launch.h"
#include "cuda/attention/tile_common.cuh"
#include "cuda/common/cp_async.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/mma.cuh"

namespace kiln::cuda::attention_fwd {

using namespace attention_tiles;  // NOLINT: the shared tile pieces

template <typename T, int kD, int kDv, int kMTiles, int kBlockN, bool kSoftcap, bool kPaged>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const __grid_constant__ AttentionForwardArgs a) {
  constexpr int kBlockM = 16 * kMTiles * kWarps;
  constexpr int kNTiles = kBlockN / 8, kDvTiles = kDv / 8;
  static_assert(kD % 64 == 0 && kDv % 64 == 0 && kBlockN % 16 == 0);
  extern __shared__ uint4 smem_words[];
  T* const s_q = reinterpret_cast<T*>(smem_words);  // [kBlockM][kD]
  T* const s_k = s_q + kBlockM * kD;                // [2][kBlockN][kD]
  T* const s_v = s_k + 2 * kBlockN * kD;            // [2][kBlockN][kDv]
  __shared__ int s_doc_k[2][kBlockN];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int head = blockIdx.y;
  const TileSlot tile = find_tile<kBlockM>(a, blockIdx.x, blockIdx.x == 0 && blockIdx.y == 0);
  if (tile.sequence < 0) return;
  const int b = tile.sequence;
  const int64_t q_begin = a.cu_q[b], k_begin = a.cu_k[b];
  attention::SequenceShape seq;
  seq.lq = a.cu_q[b + 1] - q_begin;
  seq.lk = a.cu_k[b + 1] - k_begin;
  seq.valid_q = a.valid_q ? a.valid_q[b] : seq.lq;
  seq.valid_k = a.valid_k ? a.valid_k[b] : seq.lk;
  const int q0 = tile.m_block * kBlockM;
  const int q1 = min(q0 + kBlockM, static_cast<int>(seq.lq));
  const int kv_head = head / (a.hq / a.hkv);
  const bool docs = a.doc_q != nullptr;

  const T* const q_ptr =
      static_cast<const T*>(a.q.data) + (q_begin + q0) * a.q.token + head * a.q.head;
  const T* const k_ptr = static_cast<const T*>(a.k.data) + k_begin * a.k.token + kv_head * a.k.head;
  const T* const v_ptr = static_cast<const T*>(a.v.data) + k_begin * a.v.token + kv_head * a.v.head;

  // Q tile (rows past the sequence zero-filled: computed, never stored).
  for (int c = tid; c < kBlockM * kD / 8; c += kThreads) {
    const int row = c / (kD / 8), col = c % (kD / 8) * 8;
    const bool in = q0 + row < q1;
    cp_async16_or_zero(s_q + swizzled<kD>(row, col), in ? q_ptr + row * a.q.token + col : q_ptr,
                       in);
  }

  // Which key tiles the query tile can see at all.
  attention::Tile t_rows{q0, q1, 0, 0};
  const int last_row = min(q1, static_cast<int>(seq.valid_q)) - 1;
  if (docs && last_row >= q0) {
    t_rows.q_doc_min = a.doc_q[q_begin + q0];
    t_rows.q_doc_max = a.doc_q[q_begin + last_row];
  }
  // Without documents every key tile between the first row's first visible key and the last
  // row's last one is visible to some row (both ends rise with the row), and the tiles every
  // pair of which is visible form the sub-range [full_begin, full_end): no per-tile predicate.
  int n_begin = 0, n_end = 0, full_begin = 0, full_end = 0;
  if (last_row >= q0) {
    const attention::KeyRange first = attention::visible_keys(a.rules, seq, q0);
    const attention::KeyRange last = attention::visible_keys(a.rules, seq, last_row);
    if (last.hi > first.lo) {
      n_begin = static_cast<int>(first.lo) / kBlockN;
      n_end = static_cast<int>((last.hi + kBlockN - 1) / kBlockN);
    }
    if (q1 <= seq.valid_q) {
      full_begin = static_cast<int>((last.lo + kBlockN - 1) / kBlockN);
      full_end = static_cast<int>(min(first.hi, seq.valid_k) / kBlockN);
    }
  }
  auto tile_of = [&](int n) {
    attention::Tile t = t_rows;
    t.k0 = int64_t{n} * kBlockN;
    t.k1 = min(t.k0 + kBlockN, seq.lk);
    if (t.k0 < seq.valid_k) {
      t.k_doc_min = a.doc_k[k_begin + t.k0];
      t.k_doc_max = a.doc_k[k_begin + min(t.k1, seq.valid_k) - 1];
    }
    return t;
  };
  auto next_visible = [&](int n) {
    if (!docs) return n;
    while (n < n_end && !attention::tile_may_be_visible(a.rules, seq, tile_of(n))) ++n;
    return n;
  };
  auto fully_visible = [&](int n) {
    if (n < full_begin || n >= full_end) return false;
    if (!docs) return true;
    const attention::Tile t = tile_of(n);
    return t.q_doc_min == t.q_doc_max && t.k_doc_min == t.k_doc_max && t.q_doc_min == t.k_doc_min;
  };
  // Key j's row of a paged cache (k or v: base, page and slot strides), or null past the valid
  // keys or on a bad page (zero-filled, never read).
  auto paged_row = [&](const void* cache, int64_t head_stride, int64_t page_stride,
                       int64_t slot_stride, int j) -> const T* {
    if (j >= seq.valid_k) return nullptr;
    const int page = j >> a.page_shift, slot = j & ((1 << a.page_shift) - 1);
    if (page >= a.max_pages) return nullptr;
    const int64_t id = a.block_table[b * a.table_stride + page];
    if (id < 0 || id >= a.num_pages) return nullptr;
    return static_cast<const T*>(cache) + kv_head * head_stride + id * page_stride +
           int64_t{slot} * slot_stride;
  };
  auto load_kv = [&](int n, int stage) {
    const int k0 = n * kBlockN;
    for (int c = tid; c < kBlockN * kD / 8; c += kThreads) {
      const int row = c / (kD / 8), col = c % (kD / 8) * 8;
      T* const dst = s_k + stage * kBlockN * kD + swizzled<kD>(row, col);
      if constexpr (kPaged) {
        const T* src = paged_row(a.k.data, a.k.head, a.k_page, a.k.token, k0 + row);
        cp_async16_or_zero(dst, src ? src + col : static_cast<const T*>(a.k.data), src != nullptr);
      } else {
        const bool in = k0 + row < seq.valid_k;
        cp_async16_or_zero(dst, in ? k_ptr + (k0 + row) * a.k.token + col : k_ptr, in);
      }
    }
    for (int c = tid; c < kBlockN * kDv / 8; c += kThreads) {
      const int row = c / (kDv / 8), col = c % (kDv / 8) * 8;
      T* const dst = s_v + stage * kBlockN * kDv + swizzled<kDv>(row, col);
      if constexpr (kPaged) {
        const T* src = paged_row(a.v.data, a.v.head, a.v_page, a.v.token, k0 + row);
        cp_async16_or_zero(dst, src ? src + col : static_cast<const T*>(a.v.data), src != nullptr);
      } else {
        const bool in = k0 + row < seq.valid_k;
        cp_async16_or_zero(dst, in ? v_ptr + (k0 + row) * a.v.token + col : v_ptr, in);
      }
    }
    if (docs) {
      for (int r = tid; r < kBlockN; r += kThreads) {
        s_doc_k[stage][r] = k0 + r < seq.valid_k ? a.doc_k[k_begin + k0 + r] : -1;
      }
    }
  };

  // This thread's rows: (m tile mt, half h) is row warp_row0 + 16 mt + 8 h + lane / 4.
  const int warp_row0 = warp * 16 * kMTiles;
  int row_lo[kMTiles][2], row_hi[kMTiles][2], row_doc[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = q0 + warp_row0 + 16 * mt + 8 * h + lane / 4;
      const attention::KeyRange r = attention::visible_keys(a.rules, seq, i);
      row_lo[mt][h] = static_cast<int>(r.lo);
      row_hi[mt][h] = static_cast<int>(r.hi);
      row_doc[mt][h] = docs && i < q1 ? a.doc_q[q_begin + i] : 0;
    }
  }

  float o[kMTiles][kDvTiles][4] = {};
  float row_max[kMTiles][2], row_sum[kMTiles][2] = {};
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) row_max[mt][0] = row_max[mt][1] = -INFINITY;

  int n = next_visible(n_begin), stage = 0;
  if (n < n_end) load_kv(n, 0);
  cp_async_commit();
  while (n < n_end) {
    const int next = next_visible(n + 1);
    if (next < n_end) load_kv(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const T* const k_tile = s_k + stage * kBlockN * kD;
    const T* const v_tile = s_v + stage * kBlockN * kDv;
    float s[kMTiles][kNTiles][4] = {};
#pragma unroll 2
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t qa[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        ldmatrix_x4(qa[mt],
                    s_q + swizzled<kD>(warp_row0 + 16 * mt + lane % 16, 16 * kk + lane / 16 * 8));
      }
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, k_tile + swizzled<kD>(16 * np + lane / 16 * 8 + lane % 8,
                                              16 * kk + (lane / 8) % 2 * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_16816<T>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_16816<T>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // Scores in base-2 units (soft-capped first), then the mask where the tile needs one.
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float x = s[mt][nt][c];
          s[mt][nt][c] = kSoftcap ? a.softcap_log2 * tanhf(x * a.softcap_in) : x * a.scale_log2;
        }
      }
    }
    if (!fully_visible(n)) {
      const int k0 = n * kBlockN;
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int h = c / 2, col = 8 * nt + 2 * (lane % 4) + c % 2, j = k0 + col;
            const bool see = j >= row_lo[mt][h] && j < row_hi[mt][h] &&
                             (!docs || s_doc_k[stage][col] == row_doc[mt][h]);
            if (!see) s[mt][nt][c] = -INFINITY;
          }
        }
      }
    }

    // Online softmax: new row maxima (quad-reduced), rescale O and the partial sums, P = 2^(s - m).
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = row_max[mt][h];
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
          m = fmaxf(m, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        m = fmaxf(m, __shfl_xor_sync(~0u, m, 1));
        m = fmaxf(m, __shfl_xor_sync(~0u, m, 2));
        const float base = m == -INFINITY ? 0.f : m;  // no -inf - -inf
        const float correction = fast_exp2(row_max[mt][h] - base);
        row_max[mt][h] = m;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          s[mt][nt][2 * h] = fast_exp2(s[mt][nt][2 * h] - base);
          s[mt][nt][2 * h + 1] = fast_exp2(s[mt][nt][2 * h + 1] - base);
          sum += s[mt][nt][2 * h] + s[mt][nt][2 * h + 1];
        }
        row_sum[mt][h] = row_sum[mt][h] * correction + sum;
#pragma unroll
        for (int dt = 0; dt < kDvTiles; ++dt) {
          o[mt][dt][2 * h] *= correction;
          o[mt][dt][2 * h + 1] *= correction;
        }
      }
    }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t pa[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        pa[mt][0] = pack_pair<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack_pair<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack_pair<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack_pair<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDv / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_tile + swizzled<kDv>(16 * kk + (lane / 8) % 2 * 8 + lane % 8,
                                                     16 * dp + lane / 16 * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          mma_16816<T>(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_16816<T>(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // this stage's K and V are read before the next iteration refills them
    n = next;
    stage ^= 1;
  }
  cp_async_wait<0>();

  // O / sum and lse; rows past the sequence are not stored.
  T* const out = static_cast<T*>(a.out.data) + (q_begin + q0) * a.out.token + head * a.out.head;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[mt][h];
      sum += __shfl_xor_sync(~0u, sum, 1);
      sum += __shfl_xor_sync(~0u, sum, 2);
      const float inv = sum > 0 ? 1.f / sum : 0.f;
      const int row = warp_row0 + 16 * mt + 8 * h + lane / 4;
      if (q0 + row >= q1) continue;
      T* const out_row = out + int64_t{row} * a.out.token;
#pragma unroll
      for (int dt = 0; dt < kDvTiles; ++dt) {
        const uint32_t pair = pack_pair<T>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
        *reinterpret_cast<uint32_t*>(out_row + 8 * dt + 2 * (lane % 4)) = pair;
      }
      if (lane % 4 == 0) {
        constexpr float kLn2 = 0.6931471805599453f;
        const float lse = sum > 0 ? (row_max[mt][h] + log2f(sum)) * kLn2 : -INFINITY;
        a.lse[head * a.lse_head + (q_begin + q0 + row) * a.lse_token] = lse;
      }
    }
  }
  if (head == 0 && warp == 0)
    report_decreasing_documents<kBlockM>(a, seq, q_begin, k_begin, tile.m_block);
}

// Shared memory of one CTA: Q, two K and two V tiles.
template <typename T, int kD, int kDv, int kMTiles, int kBlockN>
constexpr int smem_bytes() {
  return static_cast<int>(sizeof(T)) * (16 * kMTiles * kWarps * kD + 2 * kBlockN * (kD + kDv));
}

}  // namespace kiln::cuda::attention_fwd

namespace kiln::cuda::attention_fwd {

// Launches the kernel of one head-dim configuration for a's dtype; returns the variant name.
template <int kD, int kDv, int kMTiles, int kBlockN>
std::string launch(const AttentionForwardArgs& a, Stream stream) {
  constexpr int kBlockM = 16 * kMTiles * kWarps;
  const int64_t slots = (a.total_q + kBlockM - 1) / kBlockM + a.batch;
  const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(a.hq));
  auto run = [&](auto kernel, int smem) {
    KILN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<grid, kThreads, smem, stream>>>(a);
    KILN_CUDA_CHECK(cudaGetLastError());
  };
  auto pick = [&](auto softcap, auto paged) {
    constexpr bool kCap = decltype(softcap)::value, kPage = decltype(paged)::value;
    if (a.dtype == DType::bf16) {
      run(attention_forward_kernel<__nv_bfloat16, kD, kDv, kMTiles, kBlockN, kCap, kPage>,
          smem_bytes<__nv_bfloat16, kD, kDv, kMTiles, kBlockN>());
    } else {
      run(attention_forward_kernel<__half, kD, kDv, kMTiles, kBlockN, kCap, kPage>,
          smem_bytes<__half, kD, kDv, kMTiles, kBlockN>());
    }
  };
  // The page-table path is its own instance: its address math would push the contiguous
  // kernel past 255 registers (measured: spills, 20-25% slower).
  auto with_paging = [&](auto softcap) {
    if (a.block_table) {
      pick(softcap, std::true_type{});
    } else {
      pick(softcap, std::false_type{});
    }
  };
  if (a.softcap_in > 0) {
    with_paging(std::true_type{});
  } else {
    with_paging(std::false_type{});
  }
  return std::string("attention_fwd_mma_sync<") + std::string(dtype_name(a.dtype)) + ",d" +
         std::to_string(kD) + (kDv != kD ? "_dv" + std::to_string(kDv) : "") + ",m" +
         std::to_string(kBlockM) + ",n" + std::to_string(kBlockN) +
         (a.softcap_in > 0 ? ",softcap" : "") +
         (a.block_table ? ",paged" + std::to_string(1 << a.page_shift) : "") + ">";
}

}  // namespace kiln::cuda::attention_fwd
