#pragma once
// The attention mask contract, one definition for the reference, the dense debugging mask and
// the kernels' tile skipping (issue 4). Positions are 0-based within one packed sequence of
// lq queries and lk keys; the queries are the last lq of the lk positions (bottom-right aligned,
// as FlashAttention 2.1+ does when a sequence has fewer queries than keys), so query i sits at
// key position i + (lk - lq).
//
// Key j is visible to query i iff all of:
// - validity: i < valid_q and j < valid_k (per-sequence valid prefixes; rows past valid_q see
//   nothing: their output is 0 and their log-sum-exp -inf);
// - causal:   j <= i + (lk - lq);
// - window:   i + (lk - lq) - left <= j <= i + (lk - lq) + right (left or right < 0: unbounded);
// - documents: doc_q[i] == doc_k[j] (document ids, non-decreasing along a sequence).
#include <cstdint>

#include "core/hd.h"

namespace kiln::attention {

struct MaskRules {
  bool causal = false;
  int64_t window_left = -1, window_right = -1;  // < 0: no bound on that side
};

struct SequenceShape {
  int64_t lq = 0, lk = 0;            // queries and keys of the sequence
  int64_t valid_q = 0, valid_k = 0;  // valid prefixes (<= lq, lk)
  KILN_HD int64_t offset() const { return lk - lq; }
};

// The key range [lo, hi) query i may see from causality, the window and validity (documents
// are applied separately: they are per token, not per position).
struct KeyRange {
  int64_t lo, hi;
};

KILN_HD KeyRange visible_keys(const MaskRules& r, const SequenceShape& s, int64_t i) {
  if (i >= s.valid_q || i < 0) return {0, 0};
  const int64_t diag = i + s.offset();
  int64_t lo = 0, hi = s.valid_k;
  if (r.causal && diag + 1 < hi) hi = diag + 1;
  if (r.window_right >= 0 && diag + r.window_right + 1 < hi) hi = diag + r.window_right + 1;
  if (r.window_left >= 0 && diag - r.window_left > lo) lo = diag - r.window_left;
  if (hi < lo) hi = lo;
  return {lo, hi};
}

KILN_HD bool visible(const MaskRules& r, const SequenceShape& s, int64_t i, int64_t j,
                     int64_t doc_q, int64_t doc_k) {
  const KeyRange k = visible_keys(r, s, i);
  return j >= k.lo && j < k.hi && doc_q == doc_k;
}

// The queries [lo, hi) that see some key of [k0, k1) from causality, the window and validity
// (documents apart): exact, every row inside sees one and no row outside does. The backward's
// dK/dV walks only these rows' tiles.
//
// Row i (diagonal d = i + (lk - lq)) sees [max(0, d - left), min(valid_k, d + a)), a = 1 if
// causal, right + 1 with a right window (the smaller), unbounded otherwise; that meets
// [k0, min(k1, valid_k)) iff d + a > k0 and d - left < min(k1, valid_k).
struct QueryRange {
  int64_t lo, hi;
};

KILN_HD QueryRange visible_queries(const MaskRules& r, const SequenceShape& s, int64_t k0,
                                   int64_t k1) {
  const int64_t end = k1 < s.valid_k ? k1 : s.valid_k;
  if (k0 < 0) k0 = 0;
  if (k0 >= end) return {0, 0};
  int64_t lo = 0, hi = s.valid_q;
  int64_t a = -1;  // < 0: no bound on the right
  if (r.causal) a = 1;
  if (r.window_right >= 0 && (a < 0 || r.window_right + 1 < a)) a = r.window_right + 1;
  if (a >= 0 && k0 - a + 1 - s.offset() > lo) lo = k0 - a + 1 - s.offset();
  if (r.window_left >= 0 && end + r.window_left - s.offset() < hi) {
    hi = end + r.window_left - s.offset();
  }
  if (hi < lo) hi = lo;
  return {lo, hi};
}

// A tile: queries [q0, q1) and keys [k0, k1) of one sequence, with the smallest and largest
// document id among its queries and among its keys (any values when there are no documents,
// as long as they overlap: pass 0, 0, 0, 0).
struct Tile {
  int64_t q0, q1, k0, k1;
  int64_t q_doc_min = 0, q_doc_max = 0, k_doc_min = 0, k_doc_max = 0;
};

// False only when no key of the tile is visible to any query of it: the kernels never load such
// a tile. Conservative for documents (it compares id ranges, so a tile spanning several documents
// is kept); exact for causality, windows and validity.
//
// Why exact: with d = i + (lk - lq) a row's diagonal, the tile has a visible pair iff
// max over the tile's valid rows of A(d) - B(d) > 0, where A(d) = min(C, d + a) is the end of the
// row's keys clipped to the tile (C = min(valid_k, k1); a = 1 if causal, right + 1 with a right
// window, the smaller of the two) and B(d) = max(D, d - left) its start (D = k0). A rises with
// slope 1 then stays flat, B stays flat then rises with slope 1, so A - B is largest at the
// first of their breakpoints (C - a, D + left), clamped into the tile's diagonals.
KILN_HD bool tile_may_be_visible(const MaskRules& r, const SequenceShape& s, const Tile& t) {
  if (t.q0 >= t.q1 || t.k0 >= t.k1) return false;
  if (t.k_doc_max < t.q_doc_min || t.k_doc_min > t.q_doc_max) return false;
  const int64_t last = (t.q1 < s.valid_q ? t.q1 : s.valid_q) - 1;
  if (last < t.q0) return false;  // every row past the valid prefix
  constexpr int64_t kInf = int64_t{1} << 62;
  const int64_t d0 = t.q0 + s.offset(), d1 = last + s.offset();
  const int64_t c = s.valid_k < t.k1 ? s.valid_k : t.k1, d = t.k0 > 0 ? t.k0 : 0;
  int64_t a = kInf;
  if (r.causal) a = 1;
  if (r.window_right >= 0 && r.window_right + 1 < a) a = r.window_right + 1;
  const int64_t left = r.window_left >= 0 ? r.window_left : kInf;
  const int64_t rise_end = a == kInf ? -kInf : c - a;       // A stops rising here
  const int64_t flat_end = left == kInf ? kInf : d + left;  // B starts rising here
  int64_t best = rise_end < flat_end ? rise_end : flat_end;
  best = best < d0 ? d0 : best > d1 ? d1 : best;
  const int64_t end = a == kInf ? c : (c < best + a ? c : best + a);
  const int64_t start = left == kInf ? d : (d > best - left ? d : best - left);
  return end > start;
}

}  // namespace kiln::attention
