#pragma once
// Launch shape of the rope kernel: a pure function of the problem, unit-tested on the host.
//
// A token's work is heads (Hq + Hk) x chunks pair groups, a chunk being the W pairs a thread
// rotates at once (W = 16 / element bytes on the vector path: two 16-byte loads and stores a
// head, both halves of every pair in the thread's registers; W = 1 on the scalar path). A block
// is chunk_lanes x head_lanes x token_lanes threads. A thread loads its chunk's W cos and W sin
// once a token and rotates that chunk in each of the heads_per_thread heads it steps over, so
// the token's cos/sin row (4 R bytes) is read once a thread, not once a head. Heads are spread
// so every thread steps over the same number (GQA, 32 + 8 heads, 8 chunks: 20 lanes x 2 heads,
// 160 threads, rather than 32 lanes and a second round on 8 of them); threads left over take
// more tokens (small heads counts, decode).
// Napkin, H100 (~3 TB/s of copy): T = 16384, Hq = Hk = 32, D = 128 bf16 moves 537 MB of q and k
// (read + written) and 8.4 MB of cos/sin rows: about 0.18 ms at the copy rate.
#include <algorithm>
#include <cstdint>

#include "core/int_math.h"

namespace kiln::cuda {

inline constexpr int kRopeMaxThreads = 256;
inline constexpr int kRopeMaxTokenLanes = 64;     // blockDim.z's limit
inline constexpr int64_t kRopeMaxGrid = 1 << 20;  // blocks; a grid-stride loop covers the rest

struct RopeConfig {
  int chunk_lanes = 1, head_lanes = 1, token_lanes = 1;
  int heads_per_thread = 1;
  int64_t grid = 1;
  int threads() const { return chunk_lanes * head_lanes * token_lanes; }
};

inline RopeConfig rope_config(int64_t tokens, int64_t heads, int64_t chunks) {
  RopeConfig c;
  c.chunk_lanes = static_cast<int>(std::clamp<int64_t>(chunks, 1, kRopeMaxThreads));
  const int64_t max_head_lanes = kRopeMaxThreads / c.chunk_lanes;
  c.heads_per_thread = static_cast<int>(std::max<int64_t>(1, ceil_div(heads, max_head_lanes)));
  c.head_lanes = static_cast<int>(std::max<int64_t>(1, ceil_div(heads, c.heads_per_thread)));
  c.token_lanes = static_cast<int>(std::clamp<int64_t>(
      std::min<int64_t>(kRopeMaxThreads / (c.chunk_lanes * c.head_lanes), tokens), 1,
      kRopeMaxTokenLanes));
  c.grid = std::clamp<int64_t>(ceil_div(tokens, c.token_lanes), 1, kRopeMaxGrid);
  return c;
}

}  // namespace kiln::cuda
