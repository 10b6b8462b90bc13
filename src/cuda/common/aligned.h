#pragma once
// Whether a pointer allows 16-byte accesses: the launchers' test for their vector paths.
#include <cstdint>

namespace kiln::cuda {

inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace kiln::cuda
