// The hash router: ids[t, j] = table[token_ids[t], j], weights 1 / k. A thread per (token, pick);
// a token id outside [0, vocab) is never used as an index: its ids are -1, its weights 0, and the
// thread of pick 0 counts it (when there is a count). Memory-bound and tiny (T k 12 bytes written,
// T (8 + 4 k) read).
#include <cuda_runtime.h>

#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/topk/router_launch.h"
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

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

__global__ void __launch_bounds__(kThreads) hash_router_kernel(const __grid_constant__ HashArgs a) {
  const int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (i >= a.rows * a.k) return;
  const int64_t t = i / a.k, j = i - t * a.k;
  const int64_t tok = a.token_ids[t * a.token_stride];
  const bool ok = tok >= 0 && tok < a.vocab;
  if (!ok && j == 0 && a.bad != nullptr) atomicAdd(a.bad, 1);
  a.ids[t * a.ids_stride0 + j * a.ids_stride1] =
      ok ? a.table[tok * a.table_stride0 + j * a.table_stride1] : -1;
  a.weights[t * a.weights_stride0 + j * a.weights_stride1] = ok ? a.inv_k : 0.f;
}

}  // namespace

std::string hash_router(const HashRouterProblem& p, Stream stream) {
  const int64_t threads = p.rows * p.k;
  if (threads == 0) return "empty";
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
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  if (blocks > 2147483647) {
    throw Error(p.op + ": T * k = " + std::to_string(threads) +
                " picks need more blocks than CUDA's grid allows");
  }
  hash_router_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                       static_cast<cudaStream_t>(stream)>>>(a);
  KILN_CUDA_CHECK(cudaGetLastError());
  return "hash_router<thread_per_pick>";
}

}  // namespace kiln::cuda
