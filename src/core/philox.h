#pragma once
// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind kiln's dropout masks:
// the same (key, counter) gives the same bits on the host and on the GPU, so a mask is
// regenerated, never stored. Checked against Random123's known-answer vectors (tests/core).
#include <cstdint>

#include "core/hd.h"

namespace kiln::philox {

struct Block {
  uint32_t v[4];
};

KILN_HD Block philox4x32_10(Block counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t* c = counter.v;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kMul0} * c[0];
    const uint64_t p1 = uint64_t{kMul1} * c[2];
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ key0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ key1;
    c[1] = static_cast<uint32_t>(p1);
    c[3] = static_cast<uint32_t>(p0);
    c[0] = n0;
    c[2] = n2;
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The four uniforms in [0, 1) (24-bit resolution, exactly representable in float) of elements
// 4j .. 4j+3 of a stream keyed by (seed, offset): counter = (j, offset), key = seed.
KILN_HD void uniforms4(uint64_t seed, uint64_t offset, uint64_t j, float (&u)[4]) {
  const Block b =
      philox4x32_10(Block{{static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32),
                           static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32)}},
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  for (int k = 0; k < 4; ++k) u[k] = static_cast<float>(b.v[k] >> 8) * (1.0f / 16777216.0f);
}

// Uniform of element i of the stream (the same value uniforms4 gives it).
KILN_HD float uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  float u[4];
  uniforms4(seed, offset, i / 4, u);
  return u[i % 4];
}

}  // namespace kiln::philox
