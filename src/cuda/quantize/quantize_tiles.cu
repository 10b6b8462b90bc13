// The tile quantization kernel (shapes: quantize_config.h). A team of threads owns a tile (a
// 1 x 128 group, a row, a 128 x 128 block): it loads the tile into registers, reduces its absmax
// (shuffles within a warp, shared memory across the block), computes scale = clamp(amax) /
// fp8_max, and stores fp8(x * (1 / scale)) by the hardware's satfinite conversion, and the scale.
// Per-tensor scales (given, or from the absmax pass) skip the reduction.
// Bytes: x read once (tiles too large for registers: twice, the second from L2), values written
// once, one fp32 scale a tile.
#include <algorithm>
#include <string>
#include <type_traits>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fp8_pack.cuh"
#include "cuda/quantize/quantize_kernels.h"

namespace kiln::cuda {
namespace {

// The maximum over a team of TEAM threads; every thread of the block calls it together.
template <int TEAM>
__device__ __forceinline__ float team_max(float v) {
  static_assert(TEAM <= 32 || TEAM == kQuantThreads, "a team is a warp's part or the block");
#pragma unroll
  for (int off = std::min(TEAM, 32) / 2; off > 0; off /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  }
  if constexpr (TEAM > 32) {
    __shared__ float warp_max[TEAM / 32];
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
    __syncthreads();
    v = warp_max[0];
#pragma unroll
    for (int w = 1; w < TEAM / 32; ++w) v = fmaxf(v, warp_max[w]);
    __syncthreads();  // warp_max is reused by the next tile
  }
  return v;
}

template <typename T, int W>
__device__ __forceinline__ float fold_absmax(const Pack<T, W>& p, float m) {
  float f[W];
  widen(p, f);
#pragma unroll
  for (int k = 0; k < W; ++k) m = fmaxf(m, fabsf(f[k]));  // fmaxf drops NaN
  return m;
}

// Blocks a SM each instance is held to (registers: 65536 / (256 x blocks)). 16-byte 1 x 128
// groups: 8 (32 registers; unbounded, teams of 16 with one access a thread took 54, four blocks
// a SM, and ran bf16 groups at 63% of copy on the H100 at 16384 x 8192). Scalar groups: 4. The
// 4-access block-wide kernel: 4 (64). The 8-access one (128 x 128 blocks, rows past 1024
// accesses): 3 (80 registers; it spills 16-32 bytes there; unbounded it took 117-122, two blocks a
// SM, and ran 128 x 128 bf16 blocks at 75% of copy; at 80, 95%).
template <int W, int TEAM, int ITEMS>
constexpr int quant_min_blocks() {
  if constexpr (TEAM != kQuantThreads) return W > 1 ? 8 : 4;
  return ITEMS == kQuantWideItemsSmall ? 4 : 3;
}

template <typename T, __nv_fp8_interpretation_t Q, int W, int TEAM, int ITEMS>
__global__ void __launch_bounds__(kQuantThreads, quant_min_blocks<W, TEAM, ITEMS>())
    quant_tiles_kernel(const __grid_constant__ QuantTileArgs a) {
  constexpr int kChunk = TEAM * ITEMS;  // a team's accesses per pass
  const int lane = threadIdx.x % TEAM, team = threadIdx.x / TEAM;
  const int64_t tj = (int64_t{blockIdx.x} << a.teams_x_log2) + (team & ((1 << a.teams_x_log2) - 1));
  const int ty = team >> a.teams_x_log2;
  const bool cached = a.tile_vecs <= kChunk;
  const bool reduce = a.given_scale == nullptr && a.given_amax == nullptr;
  const T* x = static_cast<const T*>(a.x);
  uint8_t* q = static_cast<uint8_t*>(a.values);
  const int64_t row_mask = (int64_t{1} << a.vecs_per_row_log2) - 1;
  // Rows in use (a device count, the same for every thread) and the tile rows they cover.
  const int64_t rows = a.rows_used != nullptr ? min(a.rows, int64_t{*a.rows_used}) : a.rows;
  const int64_t grid_rows = a.rows_used != nullptr
                                ? min(a.grid_rows, (rows + a.tile_rows - 1) / a.tile_rows)
                                : a.grid_rows;
  // Block-uniform loop: every thread runs the same iterations (team_max has barriers).
  for (int64_t ti0 = int64_t{blockIdx.y} * a.teams_y; ti0 < grid_rows;
       ti0 += int64_t{gridDim.y} * a.teams_y) {
    const int64_t ti = ti0 + ty;
    const bool active = ti < grid_rows && tj < a.grid_cols;
    const int64_t r0 = ti * a.tile_rows, c0 = tj * a.tile_cols;
    // Access v = v0 + i * TEAM + lane of the tile (v0 a multiple of kChunk): its element offsets
    // in x and values, false when outside x. TEAM is a multiple of a block tile's accesses a row,
    // so item i sits (TEAM >> vecs_per_row_log2) rows below item 0 in the same column, or, in a
    // row tile, TEAM accesses to its right: offsets are a base plus i steps, not recomputed from
    // v by shifts and masks an item.
    const int64_t lane_row = a.tile_rows > 1 ? lane >> a.vecs_per_row_log2 : 0;
    const int64_t lane_col = (a.tile_rows > 1 ? lane & row_mask : lane) * W;
    const int64_t row_step = a.tile_rows > 1 ? TEAM >> a.vecs_per_row_log2 : 0;
    const int64_t col_step = a.tile_rows > 1 ? 0 : int64_t{TEAM} * W;
    auto locate = [&](int64_t v0, int i, int64_t& x_off, int64_t& q_off) {
      const int64_t chunk_rows = a.tile_rows > 1 ? v0 >> a.vecs_per_row_log2 : 0;
      const int64_t chunk_cols = a.tile_rows > 1 ? 0 : v0 * W;
      const int64_t r = r0 + chunk_rows + lane_row + i * row_step;
      const int64_t c = c0 + chunk_cols + lane_col + i * col_step;
      x_off = r * a.x_stride + c;
      q_off = r * a.values_stride + c;
      return active && v0 + i * TEAM + lane < a.tile_vecs && r < rows && c < a.cols;
    };
    auto load = [&](int64_t v0, int i) {
      int64_t xo, qo;
      return locate(v0, i, xo, qo) ? *reinterpret_cast<const Pack<T, W>*>(x + xo)
                                   : splat<T, W>(0.f);
    };
    auto store = [&](int64_t v0, int i, const Pack<T, W>& p, float inv) {
      int64_t xo, qo;
      if (!locate(v0, i, xo, qo)) return;
      float f[W];
      widen(p, f);
      *reinterpret_cast<Pack<uint8_t, W>*>(q + qo) = to_fp8<Q, W>(f, inv);
    };

    Pack<T, W> regs[ITEMS];
    float amax = 0.f;
    if (cached) {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) regs[i] = load(0, i);
      if (reduce) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) amax = fold_absmax(regs[i], amax);
      }
    } else if (reduce) {
      for (int64_t v0 = 0; v0 < a.tile_vecs; v0 += kChunk) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) regs[i] = load(v0, i);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) amax = fold_absmax(regs[i], amax);
      }
    }
    float scale;
    if (a.given_scale != nullptr) {
      scale = *a.given_scale;
    } else {
      amax = reduce ? team_max<TEAM>(amax) : __uint_as_float(*a.given_amax);
      scale = fminf(fmaxf(amax, a.amax_floor), a.amax_ceiling) / kFp8Max<Q>;
      if (lane == 0 && (reduce ? active : ti == 0 && tj == 0)) {
        a.scales[reduce ? ti * a.scale_row_stride + tj * a.scale_col_stride : 0] = scale;
      }
    }
    const float inv = 1.f / scale;
    if (cached) {
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) store(0, i, regs[i], inv);
    } else {
      for (int64_t v0 = 0; v0 < a.tile_vecs; v0 += kChunk) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) regs[i] = load(v0, i);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) store(v0, i, regs[i], inv);
      }
    }
  }
}

// 1 x 128 groups with dynamic scales on the 16-byte path (the hot case: activations before an
// FP8 GEMM): the tile kernel's shape (teams of 64 / W threads, two accesses 64 elements apart, the
// block's teams across a row of groups and down teams_y rows), with the tile kernel's choices that
// are fixed here made at compile time and each access's offsets computed once a row. ncu at
// 16384 x 8192 bf16 counted 107 M instructions for the tile kernel against 68 M for
// torch.compile's, at 15% more time under locked clocks.
template <typename T, __nv_fp8_interpretation_t Q>
__global__ void __launch_bounds__(kQuantThreads, 8)
    quant_groups_kernel(const __grid_constant__ QuantTileArgs a) {
  constexpr int W = 16 / sizeof(T), kTeam = quant_group_team(W), kHalf = 64;
  const int lane = threadIdx.x % kTeam, team = threadIdx.x / kTeam;
  const int64_t group =
      (int64_t{blockIdx.x} << a.teams_x_log2) + (team & ((1 << a.teams_x_log2) - 1));
  const int64_t c0 = group * 128 + lane * W, c1 = c0 + kHalf;
  const bool in_row = group < a.grid_cols, ok0 = in_row && c0 < a.cols, ok1 = in_row && c1 < a.cols;
  const int64_t rows = a.rows_used != nullptr ? min(a.rows, int64_t{*a.rows_used}) : a.rows;
  const T* x = static_cast<const T*>(a.x);
  uint8_t* q = static_cast<uint8_t*>(a.values);
  float* scale_of_row = a.scales + group * a.scale_col_stride;
  // Every thread runs the same iterations: the team's shuffles need its whole warp.
  for (int64_t r0 = int64_t{blockIdx.y} * a.teams_y; r0 < rows;
       r0 += int64_t{gridDim.y} * a.teams_y) {
    const int64_t r = r0 + (team >> a.teams_x_log2);
    const bool row_ok = r < rows;
    const T* xr = x + r * a.x_stride;
    const Pack<T, W> p0 =
        row_ok && ok0 ? *reinterpret_cast<const Pack<T, W>*>(xr + c0) : splat<T, W>(0.f);
    const Pack<T, W> p1 =
        row_ok && ok1 ? *reinterpret_cast<const Pack<T, W>*>(xr + c1) : splat<T, W>(0.f);
    float f0[W], f1[W];
    widen(p0, f0);
    widen(p1, f1);
    float amax = 0.f;
#pragma unroll
    for (int k = 0; k < W; ++k) amax = fmaxf(amax, fmaxf(fabsf(f0[k]), fabsf(f1[k])));
    amax = team_max<kTeam>(amax);
    const float scale = fminf(fmaxf(amax, a.amax_floor), a.amax_ceiling) / kFp8Max<Q>;
    if (!row_ok) continue;
    if (lane == 0 && in_row) scale_of_row[r * a.scale_row_stride] = scale;
    const float inv = 1.f / scale;
    uint8_t* qr = q + r * a.values_stride;
    if (ok0) *reinterpret_cast<Pack<uint8_t, W>*>(qr + c0) = to_fp8<Q, W>(f0, inv);
    if (ok1) *reinterpret_cast<Pack<uint8_t, W>*>(qr + c1) = to_fp8<Q, W>(f1, inv);
  }
}

}  // namespace

const char* launch_quant_tiles(const QuantTileArgs& a, const QuantTileConfig& c, DType x_dtype,
                               DType fp8, cudaStream_t stream) {
  const char* kernel = "tiles";
  dispatch_value<DType::f32, DType::bf16, DType::f16>(x_dtype, "quantize_fp8", [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(fp8 == DType::f8e5m2, [&](auto e5m2) {
      constexpr __nv_fp8_interpretation_t kQ = decltype(e5m2)::value ? __NV_E5M2 : __NV_E4M3;
      dispatch_bool(c.vec_width > 1, [&](auto vec) {
        constexpr int kW = decltype(vec)::value ? 16 / static_cast<int>(sizeof(T)) : 1;
        auto launch = [&](auto team, auto items) {
          constexpr int kTeam = decltype(team)::value, kItems = decltype(items)::value;
          if (c.vec_width != kW || c.team != kTeam || c.items != kItems) {
            throw Error("quantize_fp8: launch config does not match an instantiated kernel");
          }
          quant_tiles_kernel<T, kQ, kW, kTeam, kItems>
              <<<dim3(static_cast<unsigned>(c.grid_x), static_cast<unsigned>(c.grid_y)),
                 kQuantThreads, 0, stream>>>(a);
          KILN_CUDA_CHECK(cudaGetLastError());
        };
        if (c.team == kQuantThreads) {
          dispatch_value<kQuantWideItemsSmall, kQuantWideItems>(
              c.items, "quantize_fp8 accesses a thread",
              [&](auto items) { launch(std::integral_constant<int, kQuantThreads>{}, items); });
        } else {
          constexpr int kTeam = quant_group_team(kW);
          if constexpr (kW > 1) {
            if (a.given_scale == nullptr && a.given_amax == nullptr) {
              if (c.team != kTeam || c.items != 128 / (kW * kTeam)) {
                throw Error("quantize_fp8: launch config does not match the group kernel");
              }
              quant_groups_kernel<T, kQ>
                  <<<dim3(static_cast<unsigned>(c.grid_x), static_cast<unsigned>(c.grid_y)),
                     kQuantThreads, 0, stream>>>(a);
              KILN_CUDA_CHECK(cudaGetLastError());
              kernel = "groups";
              return;
            }
          }
          launch(std::integral_constant<int, kTeam>{},
                 std::integral_constant<int, 128 / (kW * kTeam)>{});
        }
      });
    });
  });
  return kernel;
}

}  // namespace kiln::cuda
