#pragma once
#include <cuda_runtime.h>

#include <string>

#include "kiln/core/error.h"

namespace kiln::cuda {

inline void check_cuda(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw Error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                "): " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

}  // namespace kiln::cuda

// Turns a failed CUDA runtime call into a kiln::Error naming the call and the place.
#define KILN_CUDA_CHECK(call) ::kiln::cuda::check_cuda((call), #call, __FILE__, __LINE__)
