// rope / rope_backward: one launch for q and k. A block's threads are (chunk, head, token)
// lanes (rope_config.h): a thread loads its chunk's W cos and W sin of the token's row once and
// rotates that chunk in every head it steps over, q's heads first, then k's. A chunk is two
// accesses of W elements, 16 bytes where every pointer, stride and size allows (else W = 1),
// holding both halves of W pairs; which elements and angles is rope_pairs.h. Out of place, the
// tails [R, D) are copied through; a bad position is counted by one thread of the token and its
// heads are left alone (in place) or copied (out of place), the cache never read for it.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/aligned.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/rope/rope_config.h"
#include "cuda/rope/rope_launch.h"
#include "cuda/rope/rope_pairs.h"

namespace kiln::cuda {
namespace {

struct RopeTensor {
  const void* in;
  void* out;
  int64_t in_token_stride, in_head_stride, out_token_stride, out_head_stride;
  int heads;
  bool copy;  // out of place: untouched elements are written too
};

struct RopeArgs {
  RopeTensor x[2];  // q, k
  const float* cos_sin;
  const int64_t* positions;
  int32_t* bad_positions;
  int64_t tokens, max_position;
  int head_dim, half;  // half = R / 2
  float sin_sign;      // -1: rope_backward
};

// Head h of the token (q's heads, then k's): its tensor and the head's input and output.
template <typename T>
struct Head {
  const RopeTensor& x;
  const T* in;
  T* out;
};

template <typename T>
__device__ __forceinline__ Head<T> head(const RopeArgs& a, int64_t t, int h) {
  const bool is_k = h >= a.x[0].heads;
  const RopeTensor& x = a.x[is_k];
  const int64_t hh = is_k ? h - a.x[0].heads : h;
  return {x, static_cast<const T*>(x.in) + t * x.in_token_stride + hh * x.in_head_stride,
          static_cast<T*>(x.out) + t * x.out_token_stride + hh * x.out_head_stride};
}

// The cos and sin (times sign) of chunk c's W pairs: two vector loads of each, or four of W/2
// for GPT-J (its two accesses' pairs take angles from two runs).
template <int kW, bool kNeox>
__device__ __forceinline__ void load_angles(const float* row, int c, int half, float sign,
                                            float (&cs)[kW], float (&sn)[kW]) {
  namespace rp = rope_pairs;
  if constexpr (kNeox || rp::kAdjacent<kW, kNeox>) {
    load_floats<float, kW>(row + rp::angle<kW, kNeox>(c, 0, half), cs);
    load_floats<float, kW>(row + half + rp::angle<kW, kNeox>(c, 0, half), sn);
  } else {
    constexpr int kHalf = kW / 2;
    float c0[kHalf], c1[kHalf], s0[kHalf], s1[kHalf];
    const float* first = row + rp::angle<kW, kNeox>(c, 0, half);
    const float* second = row + rp::angle<kW, kNeox>(c, kHalf, half);
    load_floats<float, kHalf>(first, c0);
    load_floats<float, kHalf>(second, c1);
    load_floats<float, kHalf>(first + half, s0);
    load_floats<float, kHalf>(second + half, s1);
#pragma unroll
    for (int m = 0; m < kHalf; ++m) {
      cs[m] = c0[m];
      cs[kHalf + m] = c1[m];
      sn[m] = s0[m];
      sn[kHalf + m] = s1[m];
    }
  }
#pragma unroll
  for (int j = 0; j < kW; ++j) sn[j] *= sign;
}

// Chunk c of one head: its W pairs rotated by (cs, sn).
template <typename T, int kW, bool kNeox>
__device__ __forceinline__ void rotate_chunk(const T* in, T* out, int c, int half,
                                             const float (&cs)[kW], const float (&sn)[kW]) {
  namespace rp = rope_pairs;
  const int64_t first = rp::first<kW, kNeox>(c, half), second = rp::second<kW, kNeox>(c, half);
  float e[2][kW], o[2][kW];
  load_floats<T, kW>(in + first, e[0]);
  load_floats<T, kW>(in + second, e[1]);
#pragma unroll
  for (int j = 0; j < kW; ++j) {
    const int a = rp::elem_a<kW, kNeox>(j), b = rp::elem_b<kW, kNeox>(j);
    const float x1 = e[a / kW][a % kW], x2 = e[b / kW][b % kW];
    o[a / kW][a % kW] = x1 * cs[j] - x2 * sn[j];
    o[b / kW][b % kW] = x2 * cs[j] + x1 * sn[j];
  }
  store_floats<T, kW>(out + first, o[0]);
  store_floats<T, kW>(out + second, o[1]);
}

// Out-of-place heads of token t: elements [from, D) copied unchanged, W at a time.
template <typename T, int kW>
__device__ __forceinline__ void copy_through(const RopeArgs& a, int64_t t, int from) {
  const int vecs = (a.head_dim - from) / kW;
  if (vecs == 0 || !(a.x[0].copy || a.x[1].copy)) return;
  const int heads = a.x[0].heads + a.x[1].heads;
  for (int h = threadIdx.y; h < heads; h += blockDim.y) {
    const Head<T> hd = head<T>(a, t, h);
    if (!hd.x.copy) continue;
    for (int v = threadIdx.x; v < vecs; v += blockDim.x) {
      const int d = from + v * kW;
      *reinterpret_cast<Pack<T, kW>*>(hd.out + d) =
          *reinterpret_cast<const Pack<T, kW>*>(hd.in + d);
    }
  }
}

template <typename T, int kW, bool kNeox>
__global__ void __launch_bounds__(kRopeMaxThreads) rope_kernel(const __grid_constant__ RopeArgs a) {
  const int chunks = a.half / kW;
  const int heads = a.x[0].heads + a.x[1].heads;
  const int64_t step = int64_t{gridDim.x} * blockDim.z;
  for (int64_t t = int64_t{blockIdx.x} * blockDim.z + threadIdx.z; t < a.tokens; t += step) {
    const int64_t pos = a.positions[t];
    if (pos < 0 || pos >= a.max_position) {
      if (a.bad_positions != nullptr && threadIdx.x == 0 && threadIdx.y == 0) {
        atomicAdd(a.bad_positions, 1);
      }
      copy_through<T, kW>(a, t, 0);
      continue;
    }
    const float* row = a.cos_sin + pos * (2 * a.half);
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      float cs[kW], sn[kW];
      load_angles<kW, kNeox>(row, c, a.half, a.sin_sign, cs, sn);
      for (int h = threadIdx.y; h < heads; h += blockDim.y) {
        const Head<T> hd = head<T>(a, t, h);
        rotate_chunk<T, kW, kNeox>(hd.in, hd.out, c, a.half, cs, sn);
      }
    }
    copy_through<T, kW>(a, t, 2 * a.half);
  }
}

// The 16-byte path: W = 16 / element bytes divides R / 2 and D, every pointer is 16-byte aligned
// and every stride that is used (of a dim longer than 1) is a multiple of W.
bool vector_ok(const RopeProblem& p, int w) {
  bool ok = (p.rotary_dim / 2) % w == 0 && p.head_dim % w == 0 && aligned16(p.cos_sin);
  for (const RopeHeads* x : {&p.q, &p.k}) {
    ok = ok && aligned16(x->in) && aligned16(x->out);
    if (p.tokens > 1) ok = ok && x->in_token_stride % w == 0 && x->out_token_stride % w == 0;
    if (x->heads > 1) ok = ok && x->in_head_stride % w == 0 && x->out_head_stride % w == 0;
  }
  return ok;
}

RopeTensor tensor_args(const RopeHeads& x) {
  return {x.in,
          x.out,
          x.in_token_stride,
          x.in_head_stride,
          x.out_token_stride,
          x.out_head_stride,
          static_cast<int>(x.heads),
          !x.in_place()};
}

}  // namespace

std::string rope(const RopeProblem& p, Stream stream) {
  if (p.tokens == 0) return "empty";
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool vec = vector_ok(p, w);
  const int width = vec ? w : 1;
  const RopeConfig config = rope_config(p.tokens, p.q.heads + p.k.heads, p.rotary_dim / 2 / width);
  const RopeArgs args{{tensor_args(p.q), tensor_args(p.k)},
                      p.cos_sin,
                      p.positions,
                      p.bad_positions,
                      p.tokens,
                      p.max_position,
                      static_cast<int>(p.head_dim),
                      static_cast<int>(p.rotary_dim / 2),
                      p.inverse ? -1.0f : 1.0f};
  const dim3 block(config.chunk_lanes, config.head_lanes, config.token_lanes);
  const unsigned grid = static_cast<unsigned>(config.grid);
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.layout == RopeLayout::neox, [&](auto neox) {
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
        rope_kernel<T, kW, decltype(neox)::value><<<grid, block, 0, stream>>>(args);
        KILN_CUDA_CHECK(cudaGetLastError());
      });
    });
  });
  std::string variant = std::string(p.inverse ? "rope_backward<" : "rope<") +
                        std::string(dtype_name(p.dtype)) + "," +
                        std::string(rope_layout_name(p.layout)) + ",vec" + std::to_string(width) +
                        ",H" + std::to_string(p.q.heads) + "+" + std::to_string(p.k.heads) + ",D" +
                        std::to_string(p.head_dim) + ",R" + std::to_string(p.rotary_dim) + ">";
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
