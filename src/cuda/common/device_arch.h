#pragma once
// Which GPU architecture the current device is: the kernels written for one (wgmma + TMA on
// Hopper) check it on the host before they launch.
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.h"

namespace kiln::cuda {

// Whether the current device is a Hopper GPU (compute capability 9.x).
inline bool on_hopper() {
  int device = 0, major = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major == 9;
}

}  // namespace kiln::cuda
