#pragma once
// Pieces the attention kernels share: the CTA shape, the swizzled shared-memory layout, MUFU
// exp2, and the tile lookup that needs no host copy of cu_seqlens.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "attention/mask_rules.h"
#include "cuda/attention/attention_launch.h"
#include "cuda/common/fast_math.cuh"
#include "cuda/common/warp_reduce.cuh"

namespace kiln::cuda::attention_tiles {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

// f(type tag, softcap tag) with the element type of `dtype` (bf16 or f16) and the soft-cap flag
// as compile-time tags: the launchers' one place to pick a kernel instance.
template <typename F>
void with_dtype_and_softcap(DType dtype, bool softcap, F&& f) {
  auto typed = [&](auto cap) {
    if (dtype == DType::bf16) {
      f(std::type_identity<__nv_bfloat16>{}, cap);
    } else {
      f(std::type_identity<__half>{}, cap);
    }
  };
  if (softcap) {
    typed(std::true_type{});
  } else {
    typed(std::false_type{});
  }
}

// Shared-memory index of element (row, col) of a row-major tile of `width` 16-bit elements, its
// 16-byte chunks XOR-swizzled by the row so the 8 rows an ldmatrix reads hit 8 bank groups.
template <int kWidth>
__device__ __forceinline__ int swizzled(int row, int col) {
  return row * kWidth + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// The (sequence, query tile) of tile slot `slot` (key tiles with kByKeys), or sequence -1 when the
// slot is past the last tile. Under a causal mask the heaviest tiles go first and the light ones
// fill the tail of the grid: a sequence's query tiles last first (the last rows see the most
// keys), its key tiles first first (the first keys are seen by the most rows).
// Sequences with bad metadata have no tiles; the reporter CTA counts them.
struct TileSlot {
  int sequence, m_block;
};

// The tiles of sequence b (kBlock queries, or keys with kByKeys); ok false, and no tiles, when
// its offsets or valid prefixes are out of range.
template <int kBlock, bool kByKeys>
__device__ __forceinline__ int sequence_tiles(const AttentionForwardArgs& a, int b, bool& ok) {
  const int q0 = a.cu_q[b], q1 = a.cu_q[b + 1], k0 = a.cu_k[b], k1 = a.cu_k[b + 1];
  ok = q0 >= 0 && q0 <= q1 && q1 <= a.total_q && k0 >= 0 && k0 <= k1 && k1 <= a.total_k;
  if (ok && a.valid_q) ok = a.valid_q[b] >= 0 && a.valid_q[b] <= q1 - q0;
  if (ok && a.valid_k) ok = a.valid_k[b] >= 0 && a.valid_k[b] <= k1 - k0;
  return ok ? ((kByKeys ? k1 - k0 : q1 - q0) + kBlock - 1) / kBlock : 0;
}

template <int kBlock, bool kByKeys = false, int kCtaThreads = kThreads>
__device__ TileSlot find_tile(const AttentionForwardArgs& a, int slot, bool reporter) {
  constexpr int kCtaWarps = kCtaThreads / 32;
  __shared__ int found[2], warp_total[kCtaWarps];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (tid == 0) found[0] = -1;
  int bad = 0;
  if (reporter && tid == 0) {
    if (a.cu_q[0] != 0 || a.cu_q[a.batch] != a.total_q) ++bad;
    if (a.cu_k[0] != 0 || (!a.block_table && a.cu_k[a.batch] != a.total_k)) ++bad;
  }
  int before = 0;
  for (int base = 0; base < a.batch; base += kCtaThreads) {
    const int b = base + tid;
    int tiles = 0;
    if (b < a.batch) {
      bool ok = false;
      tiles = sequence_tiles<kBlock, kByKeys>(a, b, ok);
      bad += !ok;
      if (ok && reporter && a.block_table) {  // every page the sequence's keys need
        const int pages = (a.cu_k[b + 1] - a.cu_k[b] + (1 << a.page_shift) - 1) >> a.page_shift;
        bad += pages > a.max_pages;
        for (int p = 0; p < min(pages, a.max_pages); ++p) {
          const int id = a.block_table[b * a.table_stride + p];
          bad += id < 0 || id >= a.num_pages;
        }
      }
    }
    int inclusive = warp_inclusive_sum(tiles, lane);  // then across warps: block-wide
    if (lane == 31) warp_total[warp] = inclusive;
    __syncthreads();
    int chunk = 0;
    for (int w = 0; w < kCtaWarps; ++w) {
      if (w < warp) inclusive += warp_total[w];
      chunk += warp_total[w];
    }
    const int first = before + inclusive - tiles;
    if (tiles > 0 && slot >= first && slot < first + tiles) {
      found[0] = b;
      found[1] = kByKeys ? slot - first : tiles - 1 - (slot - first);
    }
    before += chunk;
    __syncthreads();
    if (found[0] >= 0 && !reporter) break;
    __syncthreads();  // warp_total is rewritten by the next chunk
  }
  if (reporter && a.bad_metadata) {
    for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(~0u, bad, o);
    if (lane == 0 && bad) atomicAdd(a.bad_metadata, bad);
  }
  __syncthreads();
  return {found[0], found[1]};
}

// find_tile for one warp (every lane calls it and gets the answer) without the reporting: for a
// persistent kernel's producer, which looks up each of its tiles while the rest of the CTA works.
template <int kBlock, bool kByKeys = false>
__device__ TileSlot find_tile_in_warp(const AttentionForwardArgs& a, int slot) {
  const int lane = threadIdx.x % 32;
  int before = 0;
  for (int base = 0; base < a.batch; base += 32) {
    const int b = base + lane;
    bool ok = false;
    const int tiles = b < a.batch ? sequence_tiles<kBlock, kByKeys>(a, b, ok) : 0;
    const int inclusive = warp_inclusive_sum(tiles, lane);
    const int first = before + inclusive - tiles;
    const unsigned hit = __ballot_sync(~0u, tiles > 0 && slot >= first && slot < first + tiles);
    if (hit != 0) {
      const int src = __ffs(hit) - 1;
      const int offset = slot - __shfl_sync(~0u, first, src);
      const int count = __shfl_sync(~0u, tiles, src);
      return {__shfl_sync(~0u, b, src), kByKeys ? offset : count - 1 - offset};
    }
    before += __shfl_sync(~0u, inclusive, 31);
  }
  return {-1, 0};
}

// Sequence b's lengths and valid prefixes (its offsets are a.cu_q[b], a.cu_k[b]).
__device__ __forceinline__ attention::SequenceShape sequence_shape(const AttentionForwardArgs& a,
                                                                   int b) {
  attention::SequenceShape seq;
  seq.lq = a.cu_q[b + 1] - a.cu_q[b];
  seq.lk = a.cu_k[b + 1] - a.cu_k[b];
  seq.valid_q = a.valid_q ? a.valid_q[b] : seq.lq;
  seq.valid_k = a.valid_k ? a.valid_k[b] : seq.lk;
  return seq;
}

// The first of ids[0, n) (non-decreasing document ids) that is >= value, n when none is. A 32-way
// search by the calling warp (every lane calls it): each round one load a lane, the range 32
// times smaller, so 3 dependent loads for 8192 ids instead of a binary search's 13.
__device__ inline int first_id_at_least(const int32_t* ids, int n, int64_t value) {
  const int lane = threadIdx.x % 32;
  int lo = 0, hi = n;  // ids before lo are below value, from hi on they are not
  while (lo < hi) {
    const int step = (hi - lo + 31) / 32;
    const int probe = lo + lane * step;
    const unsigned below = __ballot_sync(~0u, probe < hi && ids[probe] < value);
    const int count = __popc(below);  // the ids do not decrease: lanes [0, count) are below
    const int base = lo;
    if (count > 0) lo = base + (count - 1) * step + 1;
    hi = min(hi, base + count * step);
  }
  return lo;
}

// How many t in [lo, hi) have ids[t] < ids[t - 1] (lo >= 1), counted by the calling warp (every
// lane calls it and gets the count).
__device__ inline int count_decreasing_ids(const int32_t* ids, int64_t lo, int64_t hi) {
  int bad = 0;
  for (int64_t t = lo + threadIdx.x % 32; t < hi; t += 32) bad += ids[t] < ids[t - 1];
  return __reduce_add_sync(~0u, bad);
}

// Document ids must not decrease along a sequence: the kernels skip tiles by the ids of their
// first and last tokens, so a decrease would hide visible keys without any out-of-range access.
// The calling warp of the CTA of query tile m_block (kBlock rows) checks its rows' ids and every
// (query tiles)-th run of kBlock key ids from its own: together the CTAs of one head check every
// id of the sequence once. The count goes to bad_metadata (when the caller passed one).
template <int kBlock>
__device__ void report_decreasing_documents(const AttentionForwardArgs& a,
                                            const attention::SequenceShape& seq, int64_t q_begin,
                                            int64_t k_begin, int m_block) {
  if (a.doc_q == nullptr || a.bad_metadata == nullptr) return;
  const int64_t step = (seq.lq + kBlock - 1) / kBlock * kBlock, first = int64_t{m_block} * kBlock;
  int bad = count_decreasing_ids(a.doc_q + q_begin, first + 1, min(seq.lq, first + kBlock + 1));
  for (int64_t k0 = first; k0 < seq.lk; k0 += step) {
    bad += count_decreasing_ids(a.doc_k + k_begin, k0 + 1, min(seq.lk, k0 + kBlock + 1));
  }
  if (threadIdx.x % 32 == 0 && bad > 0) atomicAdd(a.bad_metadata, bad);
}

// The key tiles of kBlockN keys that the query rows [q0, q1) of one sequence can see: the range
// [begin, end) outside which no row sees anything, the tiles inside it that some row sees
// (next_visible, which with documents skips tiles no (query, key) pair shares a document in), and
// the tiles every pair of which is visible (fully_visible: no per-element mask needed).
// Without documents every tile of [begin, end) is visible to some row (both ends of a row's
// range rise with the row), and the fully visible ones form the sub-range [full_begin, full_end).
template <int kBlockN>
struct KeyTiles {
  attention::MaskRules rules;
  attention::SequenceShape seq;
  attention::Tile rows;            // q0, q1 and the documents of the first and last valid row
  const int32_t* doc_k = nullptr;  // the sequence's key documents, or null without documents
  int begin = 0, end = 0, full_begin = 0, full_end = 0;

  __device__ KeyTiles() {}  // for a persistent kernel's copy of the one its producer staged
  __device__ KeyTiles(const AttentionForwardArgs& a, const attention::SequenceShape& s,
                      int64_t q_begin, int64_t k_begin, int q0, int q1)
      : rules(a.rules), seq(s), rows{q0, q1, 0, 0} {
    const int last_row = min(q1, static_cast<int>(seq.valid_q)) - 1;
    if (last_row < q0) return;
    if (a.doc_q) {
      doc_k = a.doc_k + k_begin;
      rows.q_doc_min = a.doc_q[q_begin + q0];
      rows.q_doc_max = a.doc_q[q_begin + last_row];
    }
    const attention::KeyRange first = attention::visible_keys(rules, seq, q0);
    const attention::KeyRange last = attention::visible_keys(rules, seq, last_row);
    if (last.hi > first.lo) {
      begin = static_cast<int>(first.lo) / kBlockN;
      end = static_cast<int>((last.hi + kBlockN - 1) / kBlockN);
    }
    if (q1 <= seq.valid_q) {
      full_begin = static_cast<int>((last.lo + kBlockN - 1) / kBlockN);
      full_end = static_cast<int>(min(first.hi, seq.valid_k) / kBlockN);
    }
    if (doc_k && begin < end) {
      // Document ids do not decrease along a sequence: the rows see no key before the first of
      // their first document nor after the last of their last one. Two binary searches narrow
      // [begin, end) so that next_visible does not walk every earlier document's tiles.
      const int first_key = first_at_least(rows.q_doc_min);
      const int past_key = first_at_least(rows.q_doc_max + 1);
      begin = max(begin, first_key / kBlockN);
      end = min(end, (past_key + kBlockN - 1) / kBlockN);
    }
  }

  // The first valid key whose document is >= doc (valid_k when none is).
  __device__ int first_at_least(int64_t doc) const {
    return first_id_at_least(doc_k, static_cast<int>(seq.valid_k), doc);
  }

  __device__ attention::Tile tile(int n) const {
    attention::Tile t = rows;
    t.k0 = int64_t{n} * kBlockN;
    t.k1 = min(t.k0 + kBlockN, seq.lk);
    if (t.k0 < seq.valid_k) {
      t.k_doc_min = doc_k[t.k0];
      t.k_doc_max = doc_k[min(t.k1, seq.valid_k) - 1];
    }
    return t;
  }
  // The first tile at or after n that some row sees (end when none).
  __device__ int next_visible(int n) const {
    if (!doc_k) return n;
    while (n < end && !attention::tile_may_be_visible(rules, seq, tile(n))) ++n;
    return n;
  }
  // The document of key j, read at the last valid key for j past it (a mask's ranges already hide
  // those keys: the load stays in bounds and needs no branch).
  __device__ int doc_of_key(int j) const {
    return doc_k[min(j, static_cast<int>(seq.valid_k) - 1)];
  }
  __device__ bool fully_visible(int n) const {
    if (n < full_begin || n >= full_end) return false;
    if (!doc_k) return true;
    const attention::Tile t = tile(n);
    return t.q_doc_min == t.q_doc_max && t.k_doc_min == t.k_doc_max && t.q_doc_min == t.k_doc_min;
  }
};

}  // namespace kiln::cuda::attention_tiles
