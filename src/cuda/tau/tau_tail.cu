// tau_tail: a block per token (grid-stride over tokens); its threads walk the token's q and v
// heads one access (16 bytes where aligned) at a time, each scaling by tanh(tok) + tau[pos, h].
// k is never touched. A bad position is counted by thread 0 and the token left as it was.
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/tau/tau_launch.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

struct TauArgs {
  void* qkv;
  const void* tok;
  const void* table;
  const void* positions;
  int32_t* bad_positions;
  int64_t tokens, table_rows, qkv_stride, tok_stride;
  int heads, head_dim;
  bool positions64;
};

template <typename T, typename Tok, typename Tau, int kW>
__global__ void __launch_bounds__(kThreads) tau_tail_kernel(const __grid_constant__ TauArgs a) {
  const int vecs = a.head_dim / kW;
  const int per_half = a.heads * vecs;
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    const int64_t pos = a.positions64 ? static_cast<const int64_t*>(a.positions)[t]
                                      : static_cast<const int32_t*>(a.positions)[t];
    if (pos < 0 || pos >= a.table_rows) {
      if (threadIdx.x == 0 && a.bad_positions != nullptr) atomicAdd(a.bad_positions, 1);
      continue;
    }
    for (int w = threadIdx.x; w < 2 * per_half; w += blockDim.x) {
      const int which = w / per_half, rem = w % per_half;
      const int h = rem / vecs, vec = rem % vecs;
      const float tok =
          to_float(static_cast<const Tok*>(a.tok)[t * a.tok_stride + which * a.heads + h]);
      const float scale =
          tanhf(tok) + to_float(static_cast<const Tau*>(a.table)[pos * a.heads + h]);
      T* p = static_cast<T*>(a.qkv) + t * a.qkv_stride +
             (which == 0 ? 0 : 2 * int64_t{a.heads} * a.head_dim) + int64_t{h} * a.head_dim +
             vec * kW;
      float v[kW];
      load_floats<T, kW>(p, v);
#pragma unroll
      for (int k = 0; k < kW; ++k) v[k] *= scale;
      store_floats<T, kW>(p, v);
    }
  }
}

}  // namespace

std::string tau_tail(const TauProblem& p, Stream stream) {
  if (p.tokens == 0) return "empty";
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool vec = p.head_dim % w == 0 && reinterpret_cast<uintptr_t>(p.qkv.data) % 16 == 0 &&
                   (p.tokens <= 1 || p.qkv.row_stride % w == 0);
  const TauArgs args{p.qkv.data,
                     p.tok.data,
                     p.table,
                     p.positions,
                     p.bad_positions,
                     p.tokens,
                     p.table_rows,
                     p.qkv.row_stride,
                     p.tok.row_stride,
                     static_cast<int>(p.heads),
                     static_cast<int>(p.head_dim),
                     p.positions64};
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(p.tokens, 1 << 20));
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.tok_dtype == DType::f32, [&](auto tf) {
      using Tok = std::conditional_t<decltype(tf)::value, float, T>;
      dispatch_bool(p.tau_dtype == DType::f32, [&](auto af) {
        using Tau = std::conditional_t<decltype(af)::value, float, T>;
        dispatch_bool(vec, [&](auto v) {
          constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
          tau_tail_kernel<T, Tok, Tau, kW><<<grid, kThreads, 0, stream>>>(args);
          KILN_CUDA_CHECK(cudaGetLastError());
          variant = "tau_tail<" + std::string(dtype_name(p.dtype)) + ",vec" + std::to_string(kW) +
                    ",H" + std::to_string(p.heads) + ",D" + std::to_string(p.head_dim) + ">";
        });
      });
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
