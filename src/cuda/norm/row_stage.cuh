#pragma once
// A ring of shared-memory buffers that holds the rows a persistent norm block will work on next,
// filled with cp.async while the current row is reduced and written. Each thread stages and
// reads back only its own 16-byte packs, so no barrier guards the buffers: the thread's own
// cp.async wait is enough.
//
// Layout: [kStages][rows_per_block][tensors][kVpt][threads_per_row] packs of 16 bytes.
#include <cstddef>
#include <cstdint>

#include "cuda/common/cp_async.cuh"

namespace kiln::cuda {

template <int kStages, int kVpt>
struct RowStage {
  static constexpr size_t bytes(int block_threads, int tensors) {
    return size_t{kStages} * tensors * kVpt * block_threads * 16;
  }

  uint4* base;
  int tensors;

  __device__ __forceinline__ uint4* slot(int stage, int tensor, int i) const {
    const int row_in_block = stage * blockDim.y + threadIdx.y;
    return base + ((row_in_block * tensors + tensor) * kVpt + i) * blockDim.x + threadIdx.x;
  }

  // Copies this thread's packs of one row into `stage`, as one group: `t0`, `t1`, `t2` point at
  // the row's start in each staged tensor (null from the first absent one on, which matches
  // `tensors`). An invalid row copies nothing, but the group is still committed so that every
  // thread counts the same groups.
  template <int kW, typename T>
  __device__ __forceinline__ void fetch(int stage, bool row_valid, int cols, const T* t0,
                                        const T* t1 = nullptr, const T* t2 = nullptr) const {
    if (row_valid) {
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        const int c = (i * blockDim.x + threadIdx.x) * kW;
        if (c >= cols) continue;
        cp_async16(slot(stage, 0, i), t0 + c);
        if (t1) cp_async16(slot(stage, 1, i), t1 + c);
        if (t2) cp_async16(slot(stage, 2, i), t2 + c);
      }
    }
    cp_async_commit();
  }

  // Blocks until the group of the row that will be read next has landed (the later
  // kStages - 2 groups may still be in flight).
  __device__ __forceinline__ void wait_oldest() const {
    cp_async_wait<kStages - 2>();
  }

  template <typename Pack>
  __device__ __forceinline__ Pack read(int stage, int tensor, int i) const {
    return *reinterpret_cast<const Pack*>(slot(stage, tensor, i));
  }
};

}  // namespace kiln::cuda
