#pragma once
// The environment switches of the A/B runs and of forcing a kernel (each documented where read).
#include <cstdlib>
#include <string_view>

namespace kiln::cuda {

// Whether environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, std::string_view value) {
  const char* set = std::getenv(name);
  return set != nullptr && value == set;
}

}  // namespace kiln::cuda
