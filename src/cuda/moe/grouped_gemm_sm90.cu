// Launcher of the grouped expert GEMM (grouped_gemm_sm90.cuh).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_arch.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/tensor_map.h"
#include "cuda/moe/grouped_gemm_launch.h"
#include "cuda/moe/grouped_gemm_sm90.cuh"

namespace kiln::cuda {
namespace {

enum class TileChoice { n128, n128x2, n256 };

// The tile. Gated (the up projection, K = H): 128 x 256 where I is a multiple of 128, else
// 128 x 128. Plain (the down projection, K = I, short): 128 x 128 with 3 stages and 2 CTAs per SM,
// so one CTA's epilogue (a 128 x 128 tile of stores) overlaps the other's main loop. At
// DeepSeek-V3's prefill shape on the H100 the n256 up GEMM took 7.4 ms and the n256 down GEMM
// 5.9 ms (a third of the FLOPs, so the epilogue and pipeline fill dominate it); the GEMMs are
// bound by L2 traffic (ncu: 93% of L2 throughput with n128x2), which the wide tile cuts by a
// quarter (bench/results/2026-11-23-h100-s6). KILN_GROUPED_GEMM_TILE=n128|n128x2|n256 forces one
// where the columns allow it (an A/B switch, named in the receipt).
// FP8 holds two accumulator sets (the running sums and the slice's), so it always takes n128: one
// CTA a SM (two, at 113 registers, spilled over a kilobyte a thread).
TileChoice pick_tile(const GroupedGemm& p) {
  if (p.dtype == DType::f8e4m3) return TileChoice::n128;
  const char* env = std::getenv("KILN_GROUPED_GEMM_TILE");
  const std::string forced = env != nullptr ? env : "";
  const bool wide_ok = p.gated ? (p.n / 2) % 128 == 0 : p.n >= 256;
  if (forced == "n128") return TileChoice::n128;
  if (forced == "n128x2") return TileChoice::n128x2;
  if (forced == "n256" && wide_ok) return TileChoice::n256;
  if (!p.gated) return TileChoice::n128x2;
  return wide_ok ? TileChoice::n256 : TileChoice::n128;
}

// Calls f with the tile configuration type of `tile`.
template <typename F>
void with_tile(TileChoice tile, F&& f) {
  using namespace grouped_gemm;  // NOLINT: the tile configurations
  switch (tile) {
    case TileChoice::n256:
      return f(Tile256{});
    case TileChoice::n128x2:
      return f(Tile128x2{});
    default:
      return f(Tile128{});
  }
}

// The receipt's name of a tile configuration.
template <typename Cfg>
std::string tile_name(int slice_k) {
  return ",m128,n" + std::to_string(Cfg::kBlockN) + ",k" + std::to_string(slice_k) + ",stages" +
         std::to_string(Cfg::kStages) + (Cfg::kCtasPerSm > 1 ? ",ctas2" : "");
}

// Encodes the tensor maps and launches one tile configuration; returns the receipt's name, or ""
// (nothing launched) when TMA cannot describe a view.
template <typename Cfg>
std::string launch_tile(const GroupedGemm& p, grouped_gemm::GroupedGemmArgs g, Stream stream) {
  using namespace grouped_gemm;  // NOLINT: the kernel's constants
  const bool fp8 = p.dtype == DType::f8e4m3;
  // A stage's K slice: one 128-byte swizzled row, 64 two-byte or 128 FP8 elements.
  const uint32_t slice = fp8 ? 128 : kBlockK;
  const int element_bytes = fp8 ? 1 : 2;
  const uint64_t a_dims[3] = {static_cast<uint64_t>(p.k), static_cast<uint64_t>(p.rows), 1};
  const int64_t a_strides[2] = {p.a_stride, p.a_stride * p.rows};
  const uint32_t a_box[3] = {slice, kBlockM, 1};
  const uint64_t b_dims[3] = {static_cast<uint64_t>(p.k), static_cast<uint64_t>(p.n),
                              static_cast<uint64_t>(p.experts)};
  const int64_t b_strides[2] = {p.k, p.k * p.n};
  const uint32_t b_box[3] = {slice, Cfg::kBlockN / 2, 1};  // two boxes a tile
  if (!encode_tensor_map_3d(&g.a, p.a, a_dims, a_strides, a_box, element_bytes).empty() ||
      !encode_tensor_map_3d(&g.b, p.b, b_dims, b_strides, b_box, element_bytes).empty()) {
    return "";
  }

  const int64_t n_tiles = p.gated ? p.n / Cfg::kBlockN : (p.n + Cfg::kBlockN - 1) / Cfg::kBlockN;
  g.n_tiles = static_cast<int>(n_tiles);
  const int64_t ctas = int64_t{g.m_blocks} * n_tiles;
  if (ctas > INT32_MAX) return "";
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  // T: of a, b and out; FP8: of out (a and b are e4m3 bytes).
  dispatch_value<DType::bf16, DType::f16>(
      fp8 ? p.out_dtype : p.dtype, "grouped_gemm", [&](auto dt) {
        using T = typename CudaType<decltype(dt)::value>::type;
        dispatch_bool(p.gated, [&](auto gated) {
          auto launch = [&](auto kernel) {
            KILN_CUDA_CHECK(cudaFuncSetAttribute(
                kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
            kernel<<<static_cast<unsigned>(ctas), kThreads, Cfg::kSmemBytes, cuda_stream>>>(g);
            KILN_CUDA_CHECK(cudaGetLastError());
          };
          constexpr bool kGated = decltype(gated)::value;
          if constexpr (std::is_same_v<Cfg, Tile128>) {  // the one FP8 tile (pick_tile)
            if (fp8) return launch(grouped_gemm_kernel<T, kGated, Cfg, true>);
          }
          launch(grouped_gemm_kernel<T, kGated, Cfg>);
        });
      });
  return std::string("grouped_gemm_wgmma_tma<") +
         (fp8 ? "e4m3->" + std::string(dtype_name(p.out_dtype))
              : std::string(dtype_name(p.dtype))) +
         tile_name<Cfg>(static_cast<int>(slice)) +
         (p.gated ? std::string(",") + act::kind_name(p.kind) : "") +
         (p.activate ? std::string(",") + act::kind_name(p.kind) : "") +
         (p.row_scale ? ",row_scale" : "") + ">";
}

}  // namespace

std::string grouped_gemm_sm90(const GroupedGemm& p, Stream stream) {
  using namespace grouped_gemm;  // NOLINT: the kernel's constants
  if (p.rows == 0 || p.k == 0 || p.n == 0 || p.experts == 0) return "";
  if (p.n % 2 != 0 || p.out_stride % 2 != 0 || (p.gated && (p.n / 2) % 64 != 0)) return "";
  const bool fp8 = p.dtype == DType::f8e4m3;
  if (p.dtype != DType::bf16 && p.dtype != DType::f16 && !fp8) return "";
  if (fp8 && (p.a_scale == nullptr || p.b_scale == nullptr || p.k % 16 != 0 ||
              (p.out_dtype != DType::bf16 && p.out_dtype != DType::f16))) {
    return "";
  }
  if (!on_hopper()) return "";
  GroupedGemmArgs g;
  g.block_expert = p.block_expert;
  g.block_rows = p.block_rows;
  g.rows_used = p.rows_used;
  g.row_scale = p.row_scale;
  g.out = p.out;
  g.out_stride = p.out_stride;
  g.rows = p.rows;
  g.n = p.n;
  g.k = p.k;
  g.kind = p.kind;
  g.activate = p.activate;
  g.a_scale = p.a_scale;
  g.a_scale_stride = p.a_scale_stride;
  g.b_scale = p.b_scale;
  g.m_blocks = static_cast<int>((p.rows + kBlockM - 1) / kBlockM);
  std::string name;
  with_tile(pick_tile(p), [&](auto cfg) { name = launch_tile<decltype(cfg)>(p, g, stream); });
  return name;
}

}  // namespace kiln::cuda
