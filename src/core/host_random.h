#pragma once
// Fast, seeded, roughly normal host data for tests and benchmarks: a sum of four 16-bit
// uniforms (Irwin-Hall), from splitmix64. Fast enough to fill 2^31 elements.
#include <cmath>
#include <cstdint>

#include "core/element.h"

namespace kiln {

class HostRandom {
 public:
  explicit HostRandom(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // mean 0, variance 1
  double normal() {
    const uint64_t r = next();
    const double s = double(r & 0xffff) + double((r >> 16) & 0xffff) + double((r >> 32) & 0xffff) +
                     double(r >> 48) - 2 * 65535.0;
    return s * (std::sqrt(3.0) / 65536.0);
  }
  // Fills n contiguous elements of `dtype` with normal(mean, stddev), rounded to the dtype.
  void fill(void* data, DType dtype, int64_t n, double mean = 0.0, double stddev = 1.0) {
    for (int64_t i = 0; i < n; ++i) element::store(data, dtype, i, mean + stddev * normal());
  }

 private:
  uint64_t state_;
};

}  // namespace kiln
