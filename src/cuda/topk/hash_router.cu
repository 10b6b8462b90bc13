// The hash router: ids[t, j] = table[token_ids[t], j], weights 1 / k. A thread per token: one
// token id load, then its k table entries (independent loads, 16-byte packs when the rows allow),
// so the dependent chain is two loads long and no thread divides by k. A token id outside
// [0, vocab) is never used as an index: its ids are -1, its weights 0, and it is counted (when
// there is a count). Memory-bound and tiny (T k 8 bytes written, T (8 + 4 k) read).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/topk/router_launch.h"
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

// 128 threads a block: T = 16384 tokens spread over 128 SMs.
constexpr int kThreads = 128;

struct HashArgs {
  const int64_t* token_ids;
  int64_t token_stride;
  const int32_t* table;
  int64_t table_stride0, table_stride1;
  float* weights;
  int64_t weights_stride0, weights_stride1;
  int32_t* ids;
  int64_t ids_stride0, ids_stride1;
  int32_t* bad;
  int64_t rows, vocab, k;
  float inv_k;
};

// kPack 4: the table, ids and weights rows are contiguous, 16-byte aligned and k % 4 == 0; the
// strides along k are then 1. kPack 1: any strides.
template <int kPack>
__global__ void __launch_bounds__(kThreads) hash_router_kernel(const __grid_constant__ HashArgs a) {
  const int64_t t = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t >= a.rows) return;
  const int64_t tok = a.token_ids[t * a.token_stride];
  const bool ok = tok >= 0 && tok < a.vocab;
  if (!ok && a.bad != nullptr) atomicAdd(a.bad, 1);
  const int32_t* row = a.table + (ok ? tok : 0) * a.table_stride0;
  int32_t* ids = a.ids + t * a.ids_stride0;
  float* weights = a.weights + t * a.weights_stride0;
  const float w = ok ? a.inv_k : 0.f;
  if constexpr (kPack == 4) {
#pragma unroll 2
    for (int64_t j = 0; j < a.k; j += 4) {
      const int4 v = ok ? __ldg(reinterpret_cast<const int4*>(row + j)) : make_int4(-1, -1, -1, -1);
      *reinterpret_cast<int4*>(ids + j) = v;
      *reinterpret_cast<float4*>(weights + j) = make_float4(w, w, w, w);
    }
  } else {
#pragma unroll 4
    for (int64_t j = 0; j < a.k; ++j) {
      ids[j * a.ids_stride1] = ok ? __ldg(row + j * a.table_stride1) : -1;
      weights[j * a.weights_stride1] = w;
    }
  }
}

bool packs_of_4(const HashRouterProblem& p) {
  auto aligned = [](const void* ptr, int64_t row_stride) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && row_stride % 4 == 0;
  };
  return p.k % 4 == 0 && p.table_stride[1] == 1 && p.ids_stride[1] == 1 &&
         p.weights_stride[1] == 1 && aligned(p.table, p.table_stride[0]) &&
         aligned(p.ids, p.ids_stride[0]) && aligned(p.weights, p.weights_stride[0]);
}

}  // namespace

std::string hash_router(const HashRouterProblem& p, Stream stream) {
  if (p.rows == 0 || p.k == 0) return "empty";
  const HashArgs a{p.token_ids,
                   p.token_stride,
                   p.table,
                   p.table_stride[0],
                   p.table_stride[1],
                   p.weights,
                   p.weights_stride[0],
                   p.weights_stride[1],
                   p.ids,
                   p.ids_stride[0],
                   p.ids_stride[1],
                   p.bad,
                   p.rows,
                   p.vocab,
                   p.k,
                   1.f / static_cast<float>(p.k)};
  const int64_t blocks = ceil_div(p.rows, int64_t{kThreads});
  if (blocks > 2147483647) {
    throw Error(p.op + ": T = " + std::to_string(p.rows) +
                " tokens need more blocks than CUDA's grid allows");
  }
  const bool packed = packs_of_4(p);
  auto kernel = packed ? hash_router_kernel<4> : hash_router_kernel<1>;
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  KILN_CUDA_CHECK(cudaGetLastError());
  return packed ? "hash_router<thread_per_token,pack4>" : "hash_router<thread_per_token>";
}

}  // namespace kiln::cuda
