#pragma once
// Programmatic dependent launch (Hopper): a kernel launched with launch_dependent may be scheduled
// before the kernel ahead of it in the stream has finished (once every block of that one has
// called allow_dependents() or exited), and waits for it, with its memory visible, in
// wait_for_prerequisite(). What it saves is the gap between the two launches.
#include <cuda_runtime.h>

#include <utility>

#include "cuda/common/cuda_check.h"
#include "cuda/common/env.h"

namespace kiln::cuda {

#if defined(__CUDACC__)
// In the kernel ahead: its dependents may be scheduled from here on (no data is promised).
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// In the dependent kernel, before it reads what the kernel ahead wrote: returns once that kernel
// has completed and its writes are visible (at once when not launched as a dependent).
__device__ __forceinline__ void wait_for_prerequisite() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
#endif

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent of the stream's
// previous kernel; KILN_DEV_PDL=0 launches it plainly (the A/B; the kernel's wait then returns at
// once).
template <typename... KernelArgs, typename... Args>
void launch_dependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = env_is("KILN_DEV_PDL", "0") ? 0 : 1;
  KILN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace kiln::cuda
