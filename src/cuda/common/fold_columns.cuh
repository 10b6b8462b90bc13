#pragma once
// Deterministic column sums of per-slot fp32 partial rows (the dweight / dbias of the norm and
// dropout backwards): out[c] = sum over slots of partials[slot * cols + c], in a fixed order, so
// the bits are the same every run. Launched right after the kernel that wrote the partials, as
// its programmatic dependent (pdl.h).
#include <cstdint>

#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/pdl.h"

namespace kiln::cuda {

// Up to two sums a launch (blockIdx.y picks one); a null partials pointer is a sum not wanted.
template <typename T>
struct FoldColumns {
  const float* partials[2] = {nullptr, nullptr};
  T* out[2] = {nullptr, nullptr};
  int64_t slots = 0;
  int cols = 0;
};

// Thread (tx, ty) sums slots ty, ty + 32, ... of column blockIdx.x * 32 + tx, then thread ty = 0
// adds the 32 chains in order.
template <typename T>
__global__ void __launch_bounds__(1024)
    fold_columns_kernel(const __grid_constant__ FoldColumns<T> f) {
  __shared__ float chains[32][33];
  wait_for_prerequisite();  // the partials of the kernel ahead
  const float* const partials = f.partials[blockIdx.y];
  if (partials == nullptr) return;  // uniform over the block
  const int c = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < f.cols) {
    for (int64_t s = threadIdx.y; s < f.slots; s += 32) acc += partials[s * f.cols + c];
  }
  chains[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < f.cols) {
    float total = 0.f;
    for (int j = 0; j < 32; ++j) total += chains[j][threadIdx.x];
    f.out[blockIdx.y][c] = from_float<T>(total);
  }
}

// The sums of `fold` (two when fold.partials[1] is set), on `stream` after the kernel ahead.
template <typename T>
void launch_fold_columns(const FoldColumns<T>& fold, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((fold.cols + 31) / 32), fold.partials[1] ? 2 : 1);
  launch_dependent(fold_columns_kernel<T>, grid, dim3(32, 32), 0, stream, fold);
}

}  // namespace kiln::cuda
