#pragma once
// Which backends this build has, and the error for a CUDA tensor in a build without CUDA.
#include <string_view>

#include "kiln/core/error.h"
#include "kiln/core/tensor_view.h"

namespace kiln {

#if KILN_WITH_CUDA
inline constexpr bool kCudaBuilt = true;
#else
inline constexpr bool kCudaBuilt = false;
#endif

inline void require_cuda_built(std::string_view op, const Device& device) {
  if (!kCudaBuilt) {
    throw Error(std::string(op) + ": tensors are on " + device.str() +
                " but this kiln build has no CUDA backend (configure with -DKILN_CUDA=ON)");
  }
}

}  // namespace kiln
