// The dense router from hidden states (router.h): logits = x gate^T in fp32, then the router.
// - Decode (T <= kDenseRouterFusedMaxTokens): one kernel. Block (b, s) takes experts
//   [8 b, 8 b + 8) over slice s of H, in chunks of 2 KB of x a token. Lane 4 g + p of warp w
//   takes packs 4 w + p + 32 j (16 bytes each, 4 a chunk) of expert g's gate row in the chunk and
//   loads all of them before it uses any; then the block stages x [T, chunk] in shared memory by
//   cp.async. So a chunk's bytes are in flight at once (a loop of one pack a lane waited a DRAM
//   round trip a pack), and the next chunk's gate loads while this one computes. bf16/f16 in
//   16-byte packs: the 4 lanes' packs are the B fragments of two m16n8k16 MMAs (16 tokens x the 8
//   experts, x's A fragments taking the columns in the same permuted order), so T = 16 costs no
//   more instructions than T = 1. fp32 (true fp32, as cuBLAS gives) and the unaligned case: fp32
//   FMAs, a sum a token a lane, added over the expert's 4 lanes. The 8 warps' sums go in warp
//   order to partial[s, t, e]. The block to finish last (a counter zeroed before the launch,
//   __threadfence before the ticket) adds the partials in slice order (the same logits every run;
//   its loads batched, not a round trip a slice) and routes each token with route_row, a warp a
//   row.
//   About two blocks a SM: the gate (E H elements) is read from DRAM once across the whole GPU.
// - Larger T: cublasGemmEx (fp32 accumulate and output, true fp32 for f32 inputs) into the
//   logits, then the router kernel (router.cu).
// H100 (s9, 4bcff6e; DeepSeek-V3 gate, bf16): the restructured fused kernel takes T = 16 in 22.7 us
// (was 62.6 before it; 5.1x eager) and T = 1 in 18.6 us; tests/cuda/router_cuda_test.cpp covers it.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/aligned.h"
#include "cuda/common/cp_async.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/topk/router_launch.h"
#include "cuda/topk/router_row.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = kDenseRouterExperts * 32;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTokens = static_cast<int>(kDenseRouterFusedMaxTokens);
constexpr int kGroup = 32 / kDenseRouterExperts;  // lanes an expert has in a warp
constexpr int kChunkBytes = 2048;                 // x a token a chunk
// A warp's A fragments read 64 bytes from each of 8 rows of x: padded rows alternate between
// the two halves of the banks, 4 wavefronts (the least for 512 bytes) instead of 8.
constexpr int kPadBytes = 64;
static_assert(kGroup * kDenseRouterExperts == 32 && kMaxTokens == 16 && kDenseRouterExperts == 8,
              "one m16n8 tile: 16 tokens x the block's 8 experts");
static_assert(kMaxTokens * kDenseRouterExperts <= kThreads, "a thread a (token, expert) sum");

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

// This lane's gate packs of the chunk at hc: pack q0 + 32 j of its expert's row, zero past h1
// (and for an expert past E) so that they add nothing.
template <typename T, int kVec, int kPacks>
__device__ __forceinline__ void load_gate(Pack<T, kVec> (&g)[kPacks], const T* row, bool live,
                                          int64_t hc, int64_t h1, int q0) {
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int64_t h = hc + int64_t{q0 + 32 * j} * kVec;
    g[j] = live && h < h1 ? *reinterpret_cast<const Pack<T, kVec>*>(row + h) : splat<T, kVec>(0.f);
  }
}

// x [T, hc .. hc + kElems) into xs, zero from he on (the gate there is zero too: 0 x garbage
// could be a NaN).
template <typename T, int kVec, int kElems, int kPitch>
__device__ __forceinline__ void stage_x(T (*xs)[kPitch], const DenseArgs& a, int64_t hc,
                                        int64_t he) {
  const T* x = static_cast<const T*>(a.x);
  if constexpr (kVec * sizeof(T) == 16) {
    constexpr int kRow = kElems / kVec;
    for (int i = threadIdx.x; i < a.tokens * kRow; i += kThreads) {
      const int t = i / kRow, c = i % kRow * kVec;
      const bool in = hc + c < he;
      cp_async16_or_zero(&xs[t][c], in ? x + t * a.x_stride + hc + c : x, in);
    }
    cp_async_commit();
    cp_async_wait<0>();
  } else {
    // Element loads: a batch a thread issued before any is stored.
    constexpr int kBatch = 16;
    const int n = a.tokens * kElems;
    for (int i0 = threadIdx.x; i0 < n; i0 += kBatch * kThreads) {
      T v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * kThreads, t = i / kElems, c = i % kElems;
        v[u] = i < n && hc + c < he ? x[t * a.x_stride + hc + c] : from_float<T>(0.f);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * kThreads;
        if (i < n) xs[i / kElems][i % kElems] = v[u];
      }
    }
  }
}

// acc[t] += this lane's packs . x[t] over the chunk.
template <typename T, int kVec, int kPacks, int kPitch>
__device__ __forceinline__ void fma_chunk(float (&acc)[kMaxTokens],
                                          const Pack<T, kVec> (&g)[kPacks], const T (*xs)[kPitch],
                                          int tokens, int q0) {
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int c = (q0 + 32 * j) * kVec;
    float gv[kVec];
    widen(g[j], gv);
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < tokens) {
        float xv[kVec];
        load_floats<T, kVec>(&xs[t][c], xv);
#pragma unroll
        for (int m = 0; m < kVec; ++m) acc[t] = fmaf(gv[m], xv[m], acc[t]);
      }
    }
  }
}

// acc (the C fragment: tokens g, g + 8 x experts 2 p, 2 p + 1) += x . gate over the chunk. Lane
// 4 g + p holds columns 8 p .. 8 p + 7 of a 32-column step: 8 p .. 8 p + 3 as B's k 2 p, 2 p + 1,
// 2 p + 8, 2 p + 9 of the first MMA, 8 p + 4 .. 8 p + 7 as those of the second. Its A registers
// take x's rows g and g + 8 at the same columns for the same k, so each MMA adds x . gate over
// 16 columns, in a permuted k order.
template <typename T, int kPacks, int kPitch>
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const Pack<T, 8> (&g)[kPacks],
                                          const T (*xs)[kPitch], int tokens, int q0, int g_row) {
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int c = (q0 + 32 * j) * 8;
    const uint4 lo = *reinterpret_cast<const uint4*>(&xs[g_row][c]);
    // Rows past T are never read back; past 8 tokens nothing is there.
    const uint4 hi =
        tokens > 8 ? *reinterpret_cast<const uint4*>(&xs[g_row + 8][c]) : make_uint4(0, 0, 0, 0);
    const auto* b = reinterpret_cast<const uint32_t*>(&g[j]);
    const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y}, a1[4] = {lo.z, hi.z, lo.w, hi.w};
    mma_16816<T>(acc, a0, b[0], b[1]);
    mma_16816<T>(acc, a1, b[2], b[3]);
  }
}

template <int W>
__device__ __forceinline__ void load_cg(const float* p, float (&v)[W]) {
  if constexpr (W == 4) {
    const float4 f = __ldcg(reinterpret_cast<const float4*>(p));
    v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
  } else {
    static_assert(W == 1);
    v[0] = __ldcg(p);
  }
}

// logits = the partials added in slice order, W of them a load: each thread's loads of a pass
// (kBatch elements x 4 slices unrolled) go out together instead of a round trip a slice.
template <int W>
__device__ __forceinline__ void add_partials(const DenseArgs& a) {
  constexpr int kBatch = 4;
  const int n = a.tokens * a.experts, nw = n / W;
  for (int i0 = threadIdx.x; i0 < nw; i0 += kBatch * kThreads) {
    float sum[kBatch][W] = {};
#pragma unroll 4
    for (int s = 0; s < a.splits; ++s) {
      const float* p = a.partial + int64_t{s} * n;
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        if (i0 + u * kThreads < nw) {
          float v[W];
          load_cg<W>(p + (i0 + u * kThreads) * W, v);
#pragma unroll
          for (int m = 0; m < W; ++m) sum[u][m] += v[m];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (i0 + u * kThreads < nw) {
#pragma unroll
        for (int m = 0; m < W; ++m) {
          const int i = (i0 + u * kThreads) * W + m, t = i / a.experts;
          a.logits[t * a.logits_stride + (i - t * a.experts)] = sum[u][m];
        }
      }
    }
  }
}

// Two blocks a SM, as the split count assumes (at 32 DeepSeek-V3 candidates a lane the last
// block's routing spills a few registers to stay under 128).
template <typename T, int kVec, int kPerLane, RouterKind kKind>
__global__ void __launch_bounds__(kThreads, 2)
    dense_router_kernel(const __grid_constant__ DenseArgs a) {
  constexpr bool kMma = sizeof(T) == 2 && kVec == 8;
  // Unaligned: 16 element loads a lane a chunk (32 of 16-bit elements spilled).
  constexpr int kElems = kVec * sizeof(T) == 16 ? kChunkBytes / sizeof(T) : 32 * 16;
  constexpr int kPitch = kElems + kPadBytes / sizeof(T), kPacks = kElems / (32 * kVec);
  constexpr int kKeyRows = kKind == RouterKind::deepseek_v3 ? kDenseRouterExperts : 1;
  constexpr int kKeyBytes = kKeyRows * 32 * kPerLane * sizeof(uint32_t);
  constexpr int kRouteBytes = kKeyBytes + kDenseRouterExperts * kTopkSlots * sizeof(TopkSlot);
  constexpr int kXBytes = kMaxTokens * kPitch * sizeof(T);
  // x's chunk, then (in the last block, after the ticket) the router's row keys and slots.
  __shared__ alignas(16) unsigned char shared[kXBytes > kRouteBytes ? kXBytes : kRouteBytes];
  __shared__ float warp_sums[kWarps][kMaxTokens][kDenseRouterExperts];
  __shared__ bool last;
  auto* xs = reinterpret_cast<T(*)[kPitch]>(shared);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int group = lane / kGroup, part = lane % kGroup, q0 = warp * kGroup + part;
  const int e = blockIdx.x * kDenseRouterExperts + group;
  const bool live = e < a.experts;
  const T* row = static_cast<const T*>(a.gate) + int64_t{live ? e : 0} * a.hidden;
  const int64_t h0 = int64_t{blockIdx.y} * a.slice;
  const int64_t h1 = h0 + a.slice < a.hidden ? h0 + a.slice : a.hidden;
  float acc[kMma ? 4 : kMaxTokens] = {};
  Pack<T, kVec> g[kPacks];
  load_gate(g, row, live, h0, h1, q0);  // before x: the gate is the DRAM traffic
  for (int64_t hc = h0; hc < h1; hc += kElems) {
    if (hc != h0) __syncthreads();  // the last chunk's x is read
    stage_x<T, kVec, kElems, kPitch>(xs, a, hc, hc + kElems < h1 ? hc + kElems : h1);
    __syncthreads();
    Pack<T, kVec> next[kPacks];
    load_gate(next, row, live, hc + kElems, h1, q0);
    if constexpr (kMma) {
      mma_chunk<T, kPacks, kPitch>(acc, g, xs, a.tokens, q0, group);
    } else {
      fma_chunk<T, kVec, kPacks, kPitch>(acc, g, xs, a.tokens, q0);
    }
#pragma unroll
    for (int j = 0; j < kPacks; ++j) g[j] = next[j];
  }
  if constexpr (kMma) {
    if (group < a.tokens) {
      warp_sums[warp][group][2 * part] = acc[0];
      warp_sums[warp][group][2 * part + 1] = acc[1];
    }
    if (group + 8 < a.tokens) {
      warp_sums[warp][group + 8][2 * part] = acc[2];
      warp_sums[warp][group + 8][2 * part + 1] = acc[3];
    }
  } else {
#pragma unroll
    for (int t = 0; t < kMaxTokens; ++t) {
      if (t < a.tokens) {
        float v = acc[t];
#pragma unroll
        for (int o = 1; o < kGroup; o *= 2) v += __shfl_xor_sync(~0u, v, o);
        if (part == 0) warp_sums[warp][t][group] = v;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x < a.tokens * kDenseRouterExperts) {
    const int t = threadIdx.x / kDenseRouterExperts, col = threadIdx.x % kDenseRouterExperts;
    const int ex = blockIdx.x * kDenseRouterExperts + col;
    if (ex < a.experts) {
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += warp_sums[w][t][col];
      a.partial[(int64_t{blockIdx.y} * a.tokens + t) * a.experts + ex] = sum;
    }
  }
  __threadfence();  // this block's partials are visible GPU-wide before its ticket is taken
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(a.counter, 1u) == gridDim.x * gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // 16-byte loads where every slice's partials start 16-byte aligned.
  if (a.tokens * a.experts % 4 == 0 && reinterpret_cast<uintptr_t>(a.partial) % 16 == 0) {
    add_partials<4>(a);
  } else {
    add_partials<1>(a);
  }
  __syncthreads();
  auto* keys = reinterpret_cast<uint32_t*>(shared) + (kKeyRows > 1 ? warp : 0) * 32 * kPerLane;
  auto* slots = reinterpret_cast<TopkSlot*>(shared + kKeyBytes) + warp * kTopkSlots;
  for (int row_t = warp; row_t < a.tokens; row_t += kWarps) {
    route_row<float, kPerLane, kKind, Layout::strided>(a.router, a.logits + row_t * a.logits_stride,
                                                       row_t, keys, slots);
  }
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
