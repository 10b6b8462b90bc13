#pragma once
// Which elements and angles a thread's chunk holds in the rope kernel (rope.cu), shared with the
// host tests, which check that the chunks cover each layout's pairs exactly once.
//
// Chunk c (of R / (2W)) of a head is two accesses of W elements: e[0] at first(c), e[1] at
// second(c). Pair j (< W) of the chunk is elements (a, b) of the concatenation e[0] | e[1],
// rotated by angle(c, j):
//   NeoX:  a = j, b = W + j (x_i and x_{i + R/2}), angle c W + j;
//   GPT-J: a = 2j, b = 2j + 1 (neighbours), angle c W/2 + j for the first access's W/2 pairs and
//          R/4 + c W/2 + (j - W/2) for the second's;
//   GPT-J at W = 1 (the scalar path): e[0], e[1] = the pair (2c, 2c + 1) itself, angle c.
// The accesses are at c W and c W + R/2 for every W > 1, so a warp's chunk lanes read and write
// whole contiguous runs in both layouts; the angles of each half-chunk are contiguous, so their
// cos and sin are vector loads too.
#include <cstdint>

#include "core/hd.h"

namespace kiln::cuda::rope_pairs {

template <int kW, bool kNeox>
inline constexpr bool kAdjacent = kW == 1 && !kNeox;

template <int kW, bool kNeox>
KILN_HD int64_t first(int c, int half) {
  (void)half;
  return kAdjacent<kW, kNeox> ? 2 * int64_t{c} : int64_t{c} * kW;
}

template <int kW, bool kNeox>
KILN_HD int64_t second(int c, int half) {
  return kAdjacent<kW, kNeox> ? 2 * int64_t{c} + 1 : int64_t{c} * kW + half;
}

// Element a (x1) and b (x2) of pair j in e[0] | e[1].
template <int kW, bool kNeox>
KILN_HD int elem_a(int j) {
  return kNeox ? j : 2 * j;
}
template <int kW, bool kNeox>
KILN_HD int elem_b(int j) {
  return kNeox ? kW + j : 2 * j + 1;
}

// The cache column (< R/2) of pair j's cos; its sin is R/2 further.
template <int kW, bool kNeox>
KILN_HD int angle(int c, int j, int half) {
  if (kNeox || kAdjacent<kW, kNeox>) return c * kW + j;
  constexpr int kHalf = kW > 1 ? kW / 2 : 1;
  return j < kHalf ? c * kHalf + j : half / 2 + c * kHalf + (j - kHalf);
}

}  // namespace kiln::cuda::rope_pairs
