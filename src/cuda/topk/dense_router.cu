// The dense router from hidden states (router.h): logits = x gate^T in fp32, then the router.
// - Decode (T <= kDenseRouterFusedMaxTokens): one kernel. Block (b, s) takes experts
//   [8 b, 8 b + 8) (a warp each) over slice s of H: each lane walks the gate row in 16-byte packs,
//   multiplies them into every token's x (L1-resident: the block's 8 warps read the same x) and
//   keeps one fp32 sum a token; the warp's sums go to partial[s, t, e]. The block to finish last
//   (a counter zeroed before the launch, __threadfence before the ticket) adds the partials in
//   slice order (the same logits every run) and routes each token with route_row, a warp a row.
//   About two blocks a SM: the gate (E H elements) is read from DRAM once across the whole GPU.
// - Larger T: cublasGemmEx (fp32 accumulate and output, true fp32 for f32 inputs) into the
//   logits, then the router kernel (router.cu).
// NOT YET RUN ON A GPU: written and compiled for sm_90a; tests/cuda/router_cuda_test.cpp covers it.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/warp_reduce.cuh"
#include "cuda/topk/router_launch.h"
#include "cuda/topk/router_row.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = kDenseRouterExperts * 32;
constexpr int kMaxTokens = static_cast<int>(kDenseRouterFusedMaxTokens);

struct DenseArgs {
  const void* x;  // [T, H], rows x_stride apart
  int64_t x_stride;
  const void* gate;  // [E, H] contiguous
  int64_t hidden, slice;
  int tokens, experts, splits;
  float* partial;     // [splits, T, E]
  unsigned* counter;  // [1], zero at launch
  float* logits;      // [T, E], rows logits_stride apart
  int64_t logits_stride;
  RouterArgs router;  // routes `logits`
};

template <typename T, int kVec, int kPerLane, RouterKind kKind>
__global__ void __launch_bounds__(kThreads)
    dense_router_kernel(const __grid_constant__ DenseArgs a) {
  __shared__ uint32_t
      row_key[kKind == RouterKind::deepseek_v3 ? kDenseRouterExperts : 1][32 * kPerLane];
  __shared__ TopkSlot slots[kDenseRouterExperts][32];
  __shared__ bool last;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int e = blockIdx.x * kDenseRouterExperts + warp;
  const int64_t h0 = int64_t{blockIdx.y} * a.slice;
  const int64_t h1 = h0 + a.slice < a.hidden ? h0 + a.slice : a.hidden;
  if (e < a.experts) {
    float acc[kMaxTokens] = {};
    const T* g = static_cast<const T*>(a.gate) + int64_t{e} * a.hidden;
    for (int64_t h = h0 + int64_t{lane} * kVec; h < h1; h += 32 * kVec) {
      float gv[kVec];
      load_floats<T, kVec>(g + h, gv);
#pragma unroll
      for (int t = 0; t < kMaxTokens; ++t) {
        if (t < a.tokens) {
          float xv[kVec];
          load_floats<T, kVec>(static_cast<const T*>(a.x) + t * a.x_stride + h, xv);
#pragma unroll
          for (int m = 0; m < kVec; ++m) acc[t] = fmaf(gv[m], xv[m], acc[t]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < a.tokens) {
        const float sum = warp_sum(acc[t]);
        if (lane == 0) a.partial[(int64_t{blockIdx.y} * a.tokens + t) * a.experts + e] = sum;
      }
    }
  }
  __threadfence();  // this block's partials are visible GPU-wide before its ticket is taken
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(a.counter, 1u) == gridDim.x * gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int n = a.tokens * a.experts;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    float sum = 0.f;
    for (int s = 0; s < a.splits; ++s) sum += __ldcg(a.partial + int64_t{s} * n + i);
    const int t = i / a.experts;
    a.logits[t * a.logits_stride + (i - t * a.experts)] = sum;
  }
  __syncthreads();
  for (int row = warp; row < a.tokens; row += kDenseRouterExperts) {
    route_row<float, kPerLane, kKind, Layout::strided>(
        a.router, a.logits + row * a.logits_stride, row,
        row_key[kKind == RouterKind::deepseek_v3 ? warp : 0], slots[warp]);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// One cuBLAS handle a thread and device, made on first use and kept.
cublasHandle_t cublas_handle(const Device& device) {
  thread_local std::map<int, cublasHandle_t> handles;
  auto it = handles.find(device.index);
  if (it != handles.end()) return it->second;
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    throw Error("dense_router: cublasCreate failed on " + device.str());
  }
  handles.emplace(device.index, handle);
  return handle;
}

cudaDataType_t cublas_type(DType dtype) {
  return dtype == DType::bf16 ? CUDA_R_16BF : dtype == DType::f16 ? CUDA_R_16F : CUDA_R_32F;
}

std::string gemm_then_route(const DenseRouterProblem& p, const RouterProblem& r, Stream stream) {
  const int64_t tokens = r.rows, experts = r.experts;
  if (p.x.row_stride < p.hidden) {
    throw Error(p.op + ": the cuBLAS path (T > " + std::to_string(kDenseRouterFusedMaxTokens) +
                ") needs x's rows not to overlap: row stride " + std::to_string(p.x.row_stride) +
                " < H = " + std::to_string(p.hidden));
  }
  cublasHandle_t handle = cublas_handle(p.device);
  if (cublasSetStream(handle, static_cast<cudaStream_t>(stream)) != CUBLAS_STATUS_SUCCESS) {
    throw Error(p.op + ": cublasSetStream failed");
  }
  // Column-major: logits^T [E, T] = gate [E, H] (row-major = H x E column-major, transposed)
  // times x^T [H, T] (row-major x, leading dimension its row stride).
  const float one = 1.f, zero = 0.f;
  const cudaDataType_t type = cublas_type(p.x.dtype);
  const cublasStatus_t status = cublasGemmEx(
      handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(experts), static_cast<int>(tokens),
      static_cast<int>(p.hidden), &one, p.gate, type, static_cast<int>(p.hidden), p.x.data, type,
      static_cast<int>(p.x.row_stride), &zero, r.logits.data, CUDA_R_32F,
      static_cast<int>(r.logits.row_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(p.op + ": cublasGemmEx failed (status " + std::to_string(status) + ")");
  }
  return "dense_router<cublas_gemm_f32," + router(r, stream) + ">";
}

}  // namespace

std::string dense_router(const DenseRouterProblem& p, Stream stream) {
  const int64_t tokens = p.router.rows, experts = p.router.experts;
  if (tokens == 0) return "empty";
  // The logits: the caller's, or the first piece of the workspace.
  auto* base = static_cast<char*>(p.workspace.data);
  RouterProblem r = p.router;
  if (!p.logits_given) r.logits = {base, DType::f32, tokens, experts, experts};
  if (tokens > kDenseRouterFusedMaxTokens) return gemm_then_route(p, r, stream);

  const int sms = sm_count(p.device);
  const int splits = static_cast<int>(dense_router_splits(experts, p.hidden, sms));
  const DenseRouterScratch scratch = dense_router_scratch(tokens, experts, p.hidden, sms);
  auto* partial = reinterpret_cast<float*>(base + scratch.partials);
  auto* counter = reinterpret_cast<unsigned*>(base + scratch.counter);
  const auto s = static_cast<cudaStream_t>(stream);
  KILN_CUDA_CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), s));
  const DenseArgs args{p.x.data,
                       p.x.row_stride,
                       p.gate,
                       p.hidden,
                       dense_router_slice(p.hidden, splits),
                       static_cast<int>(tokens),
                       static_cast<int>(experts),
                       splits,
                       partial,
                       counter,
                       static_cast<float*>(r.logits.data),
                       r.logits.row_stride,
                       router_args(r)};
  const int64_t vec = 16 / static_cast<int64_t>(dtype_size(p.x.dtype));
  const bool vectors =
      p.hidden % vec == 0 && p.x.row_stride % vec == 0 && aligned16(p.x.data) && aligned16(p.gate);
  const int per_lane = router_per_lane(experts);
  const dim3 grid(static_cast<unsigned>((experts + kDenseRouterExperts - 1) / kDenseRouterExperts),
                  static_cast<unsigned>(splits));
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.x.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(vectors, [&](auto v) {
      constexpr int kVec = decltype(v)::value ? 16 / sizeof(T) : 1;
      dispatch_value<RouterKind::softmax, RouterKind::deepseek_v3, RouterKind::activation>(
          r.kind, "router kind", [&](auto kind) {
            dispatch_value<1, 2, 4, 8, 16, 32>(per_lane, "router experts per lane", [&](auto n) {
              dense_router_kernel<T, kVec, decltype(n)::value, decltype(kind)::value>
                  <<<grid, kThreads, 0, s>>>(args);
            });
          });
    });
  });
  KILN_CUDA_CHECK(cudaGetLastError());
  const char* kind = r.kind == RouterKind::softmax       ? "softmax"
                     : r.kind == RouterKind::deepseek_v3 ? "deepseek_v3"
                                                         : "activation";
  return std::string("dense_router<fused_gemv,") + kind + "," + std::string(dtype_name(p.x.dtype)) +
         (vectors ? ",vec" : ",scalar") + ",splits" + std::to_string(splits) + ",per_lane" +
         std::to_string(per_lane) + ">";
}

}  // namespace kiln::cuda
