// fused_moe for prefill-sized batches on the grouped wgmma GEMM (grouped_gemm_sm90.cuh):
// 1. moe_align_block_size (block 128): the (token, pick) entries grouped by local expert (bad ids
//    and map values counted into the caller's bad_ids);
// 2. gather, two launches: a thread a sorted row writes its routing weight, where each entry
//    landed (inverse, -1 for picks dropped or skipped) and how many rows of each block are in use
//    (the GEMMs skip the rest: padding sits at the end of each expert's last block); then a block
//    a token copies x's row to its picks' rows (read once; padding rows are left as they are);
// 3. up GEMM with the activation fused: h [rows, I];
// 4. down GEMM scaled by the routing weight: y [rows, H];
// 5. combine: out[t] = sum over the token's picks of y[inverse[t, j]], in pick order (the same
//    sum every run).
// w8a8 (FP8 weights with fp8_activations): x is quantized to e4m3 in 1 x 128 groups first (T rows,
// not T k), the gather moves its bytes and scale rows, both GEMMs run the FP8 form (DeepSeek-V3's
// scales) with bf16/f16 out, and the intermediate is quantized between them (rows in use only).
// All scratch is stream-ordered (cudaMallocAsync): no sync, capturable in a CUDA graph.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/dispatch.h"
#include "core/int_math.h"
#include "cuda/common/aligned.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_arch.h"
#include "cuda/common/elements.cuh"
#include "cuda/moe/fused_moe_launch.h"
#include "cuda/moe/grouped_gemm_launch.h"
#include "cuda/moe/moe_align_launch.h"
#include "cuda/quantize/quantize_launch.h"
#include "kiln/ops/moe_align.h"

namespace kiln::cuda {
namespace {

constexpr int kAlignBlock = 128;  // the grouped GEMM's row block

struct GatherArgs {
  const int32_t* sorted;    // [capacity] entries t * k + j, padding = T * k
  const int32_t* post_pad;  // [1] rows in use
  const void* x;            // [T, H]
  int64_t x_stride;
  const float* weights;  // [T, k]
  int64_t weights_stride;
  void* x_sorted;       // [capacity, H]
  float* scale_sorted;  // [capacity]
  int32_t* inverse;     // [T * k], -1 beforehand
  int32_t* block_rows;  // [capacity / 128], 0 beforehand: 1 + the last row in use of each block
  int64_t entries, k, hidden;
  // w8a8: x's group scales [T, scale_cols] (rows x_scale_stride apart) into [capacity,
  // scale_cols]; null otherwise.
  const float* x_scale;
  int64_t x_scale_stride, scale_cols;
  float* x_scale_sorted;
};

// The gather in two launches. Metadata first, a thread per sorted row: its routing weight, the
// inverse map (pick -> sorted row) and its block's last row in use.
__global__ void __launch_bounds__(256) gather_meta_kernel(const __grid_constant__ GatherArgs a) {
  const int64_t r = int64_t{blockIdx.x} * 256 + threadIdx.x;
  if (r >= *a.post_pad) return;
  const int64_t entry = a.sorted[r];
  const bool valid = entry >= 0 && entry < a.entries;
  a.scale_sorted[r] = valid ? a.weights[entry / a.k * a.weights_stride + entry % a.k] : 0.f;
  if (valid) {
    a.inverse[entry] = static_cast<int32_t>(r);
    atomicMax(&a.block_rows[r / kAlignBlock], static_cast<int32_t>(r % kAlignBlock) + 1);
  }
}

// Then the rows, block (t, y) copying 256 kW-element packs of token t's row (the combine's
// layout): each pack of x is read once and written to the sorted rows of the token's picks (the
// inverse map), so x is read once in token order, where a block per sorted row read it k times in
// expert order (x is past L2's size at prefill). Padding rows are not written: each GEMM row
// depends on its own A row only, and the combine reads the picks' rows only.
template <typename T, int kW>
__global__ void __launch_bounds__(256) gather_rows_kernel(const __grid_constant__ GatherArgs a) {
  const int64_t t = blockIdx.x, h = kW * (int64_t{blockIdx.y} * 256 + threadIdx.x);
  const int32_t* rows = a.inverse + t * a.k;
  if (h < a.hidden) {
    using P = Pack<T, kW>;
    const P v = *reinterpret_cast<const P*>(static_cast<const T*>(a.x) + t * a.x_stride + h);
    for (int64_t j = 0; j < a.k; ++j) {
      const int32_t r = rows[j];
      if (r >= 0)
        *reinterpret_cast<P*>(static_cast<T*>(a.x_sorted) + int64_t{r} * a.hidden + h) = v;
    }
  }
  if (a.x_scale != nullptr && blockIdx.y == 0) {
    for (int64_t c = threadIdx.x; c < a.scale_cols; c += blockDim.x) {
      const float v = a.x_scale[t * a.x_scale_stride + c];
      for (int64_t j = 0; j < a.k; ++j) {
        const int32_t r = rows[j];
        if (r >= 0) a.x_scale_sorted[int64_t{r} * a.scale_cols + c] = v;
      }
    }
  }
}

struct CombineArgs {
  const void* y;           // [capacity, H]
  const int32_t* inverse;  // [T * k]
  void* out;               // [T, H]
  int64_t out_stride, k, hidden;
};

// Block (t, y): 256 kW-element packs of token t's columns.
template <typename T, int kW>
__global__ void __launch_bounds__(256) combine_kernel(const __grid_constant__ CombineArgs a) {
  const int64_t t = blockIdx.x, h = kW * (int64_t{blockIdx.y} * 256 + threadIdx.x);
  if (h >= a.hidden) return;
  float sum[kW] = {};
  for (int64_t j = 0; j < a.k; ++j) {
    const int32_t r = a.inverse[t * a.k + j];
    if (r < 0) continue;
    float y[kW];
    load_floats<T, kW>(static_cast<const T*>(a.y) + int64_t{r} * a.hidden + h, y);
#pragma unroll
    for (int i = 0; i < kW; ++i) sum[i] += y[i];
  }
  store_floats<T, kW>(static_cast<T*>(a.out) + t * a.out_stride + h, sum);
}

// w8a8's activations: rows [rows, cols] of x's dtype to e4m3 q [rows, cols] with 1 x 128 group
// scales [rows, ceil(cols / 128)], by quantize_fp8's group kernel (the contract's recipe: scale =
// max(amax, 1e-4) / 448). rows_used: a device count past which rows are left alone, or null.
void quantize_groups(const MoeProblem& p, const void* x, int64_t x_stride, int64_t rows,
                     int64_t cols, uint8_t* q, float* scales, const int32_t* rows_used,
                     Stream stream) {
  QuantizeProblem qp;
  qp.op = p.op;
  qp.device = p.device;
  qp.x = {const_cast<void*>(x), p.dtype, rows, cols, x_stride};
  qp.values = {q, DType::f8e4m3, rows, cols, cols};
  qp.tiles = quant_tiles(QuantGranularity::group, rows, cols);
  qp.tiles.scales = scales;
  qp.tiles.row_stride = qp.tiles.grid_cols;
  qp.tiles.col_stride = 1;
  qp.rows_used = rows_used;
  quantize_fp8(qp, stream);
}

}  // namespace

bool fused_moe_grouped_fits(const MoeProblem& p) {
  const int64_t up_rows = p.gated() ? 2 * p.inter : p.inter;
  // FP8 (w8a8 only): rows of 1-byte elements TMA can describe (16-byte multiples).
  const bool fp8_ok =
      !p.fp8_weights() || (p.fp8_activations && p.hidden % 16 == 0 && p.inter % 16 == 0);
  return fp8_ok && on_hopper() && p.hidden % 8 == 0 && p.inter % (p.gated() ? 64 : 8) == 0 &&
         up_rows % 2 == 0 && aligned16(p.w13) && aligned16(p.w2) && p.tokens * p.k > 0 &&
         p.local_experts <= kMoeAlignMaxLocalExperts;
}

std::string fused_moe_grouped(const MoeProblem& p, Stream stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t entries = p.tokens * p.k, elem = static_cast<int64_t>(dtype_size(p.dtype));
  const int64_t capacity = moe_align_capacity(p.tokens, p.k, p.local_experts, kAlignBlock);
  const int64_t blocks = capacity / kAlignBlock;
  const bool fp8 = p.fp8_activations;
  const int64_t a_elem = fp8 ? 1 : elem;  // the GEMMs' A operands: e4m3 bytes or x's dtype
  const int64_t h_groups = ceil_div(p.hidden, 128), i_groups = ceil_div(p.inter, 128);
  // One scratch allocation, carved in 256-byte aligned pieces (the FP8 ones empty without w8a8).
  auto round = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  int64_t total = 0;
  std::vector<int64_t> offsets;
  auto piece = [&](int64_t bytes) {
    offsets.push_back(total);
    total += round(bytes);
    return offsets.size() - 1;
  };
  const size_t i_sorted = piece(capacity * 4), i_expert = piece(blocks * 4),
               i_block_rows = piece(blocks * 4), i_post_pad = piece(256),
               i_inverse = piece(entries * 4), i_scale = piece(capacity * 4),
               i_x_sorted = piece(capacity * p.hidden * a_elem),
               i_h_sorted = piece(capacity * p.inter * elem),
               i_y_sorted = piece(capacity * p.hidden * elem),
               i_xq = piece(fp8 ? p.tokens * p.hidden : 0),
               i_xs = piece(fp8 ? p.tokens * h_groups * 4 : 0),
               i_xs_sorted = piece(fp8 ? capacity * h_groups * 4 : 0),
               i_hq = piece(fp8 ? capacity * p.inter : 0),
               i_hs = piece(fp8 ? capacity * i_groups * 4 : 0);
  char* base = nullptr;
  KILN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&base), static_cast<size_t>(total), s));
  auto at = [&](size_t i) { return base + offsets[i]; };
  auto* sorted = reinterpret_cast<int32_t*>(at(i_sorted));
  auto* expert_ids = reinterpret_cast<int32_t*>(at(i_expert));
  auto* block_rows = reinterpret_cast<int32_t*>(at(i_block_rows));
  auto* post_pad = reinterpret_cast<int32_t*>(at(i_post_pad));
  auto* inverse = reinterpret_cast<int32_t*>(at(i_inverse));
  auto* scale_sorted = reinterpret_cast<float*>(at(i_scale));
  void* x_sorted = at(i_x_sorted);
  void* h_sorted = at(i_h_sorted);
  void* y_sorted = at(i_y_sorted);
  auto* xq = reinterpret_cast<uint8_t*>(at(i_xq));
  auto* xs = reinterpret_cast<float*>(at(i_xs));
  auto* xs_sorted = reinterpret_cast<float*>(at(i_xs_sorted));
  auto* hq = reinterpret_cast<uint8_t*>(at(i_hq));
  auto* hs = reinterpret_cast<float*>(at(i_hs));
  std::string up_variant, down_variant;
  try {
    KILN_CUDA_CHECK(cudaMemsetAsync(block_rows, 0, static_cast<size_t>(blocks * 4), s));
    KILN_CUDA_CHECK(cudaMemsetAsync(inverse, 0xFF, static_cast<size_t>(entries * 4), s));
    moe_align(fused_moe_align_args(p, kAlignBlock, capacity, sorted, expert_ids, post_pad), stream);
    if (fp8) {  // x once a token, before the gather copies it k times
      quantize_groups(p, p.x.data, p.x.row_stride, p.tokens, p.hidden, xq, xs, nullptr, stream);
    }
    GatherArgs g{sorted,
                 post_pad,
                 fp8 ? static_cast<const void*>(xq) : p.x.data,
                 fp8 ? p.hidden : p.x.row_stride,
                 static_cast<const float*>(p.weights.data),
                 p.weights.row_stride,
                 x_sorted,
                 scale_sorted,
                 inverse,
                 block_rows,
                 entries,
                 p.k,
                 p.hidden,
                 fp8 ? xs : nullptr,
                 h_groups,
                 h_groups,
                 xs_sorted};
    gather_meta_kernel<<<static_cast<unsigned>((capacity + 255) / 256), 256, 0, s>>>(g);
    KILN_CUDA_CHECK(cudaGetLastError());
    // Blocks (token, 256 packs of its row), as the combine's.
    auto row_grid = [&](int pack) {
      return dim3(static_cast<unsigned>(p.tokens),
                  static_cast<unsigned>(ceil_div(p.hidden, int64_t{256} * pack)));
    };
    if (fp8) {
      // fits() holds hidden to a multiple of 16: 16-byte packs of e4m3.
      gather_rows_kernel<uint8_t, 16><<<row_grid(16), 256, 0, s>>>(g);
    } else {
      // fits() holds hidden to a multiple of 8: 16-byte packs wherever x's rows are aligned.
      const bool x_vec = p.x.row_stride % 8 == 0 && aligned16(p.x.data);
      dispatch_value<DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
        using T = typename CudaType<decltype(dt)::value>::type;
        dispatch_bool(x_vec, [&](auto vec) {
          constexpr int kW = decltype(vec)::value ? 8 : 1;
          gather_rows_kernel<T, kW><<<row_grid(kW), 256, 0, s>>>(g);
        });
      });
    }
    KILN_CUDA_CHECK(cudaGetLastError());

    GroupedGemm up;
    up.dtype = fp8 ? DType::f8e4m3 : p.dtype;
    up.out_dtype = p.dtype;
    if (fp8) {
      up.a_scale = xs_sorted;
      up.a_scale_stride = h_groups;
      up.b_scale = p.w13_scale;
    }
    up.a = x_sorted;
    up.rows = capacity;
    up.k = p.hidden;
    up.a_stride = p.hidden;
    up.b = p.w13;
    up.experts = p.local_experts;
    up.n = p.gated() ? 2 * p.inter : p.inter;
    up.block_expert = expert_ids;
    up.block_rows = block_rows;
    up.rows_used = post_pad;
    up.out = h_sorted;
    up.out_stride = p.inter;
    up.gated = p.gated();
    up.activate = !p.gated();
    up.kind = p.act_kind();
    up_variant = grouped_gemm_sm90(up, stream);

    if (fp8) {  // the rows in use (post_pad) of the intermediate, as the reference does
      quantize_groups(p, h_sorted, p.inter, capacity, p.inter, hq, hs, post_pad, stream);
    }
    GroupedGemm down = up;  // the same row blocks
    down.a = fp8 ? static_cast<void*>(hq) : h_sorted;
    if (fp8) {
      down.a_scale = hs;
      down.a_scale_stride = i_groups;
      down.b_scale = p.w2_scale;
    }
    down.k = p.inter;
    down.a_stride = p.inter;
    down.b = p.w2;
    down.n = p.hidden;
    down.gated = false;
    down.activate = false;
    down.row_scale = scale_sorted;
    down.out = y_sorted;
    down.out_stride = p.hidden;
    down_variant = grouped_gemm_sm90(down, stream);
    if (up_variant.empty() || down_variant.empty()) {
      throw Error(p.op + ": the grouped GEMM refused a problem fused_moe_grouped_fits accepted");
    }

    CombineArgs c{y_sorted, inverse, p.out.data, p.out.row_stride, p.k, p.hidden};
    const bool out_vec = p.out.row_stride % 8 == 0 && aligned16(p.out.data);
    const int64_t per_block = 256 * (out_vec ? 8 : 1);
    const dim3 grid(static_cast<unsigned>(p.tokens),
                    static_cast<unsigned>((p.hidden + per_block - 1) / per_block));
    dispatch_value<DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
      using T = typename CudaType<decltype(dt)::value>::type;
      dispatch_bool(out_vec, [&](auto vec) {
        combine_kernel<T, decltype(vec)::value ? 8 : 1><<<grid, 256, 0, s>>>(c);
      });
    });
    KILN_CUDA_CHECK(cudaGetLastError());
  } catch (...) {
    cudaFreeAsync(base, s);
    throw;
  }
  KILN_CUDA_CHECK(cudaFreeAsync(base, s));
  return std::string("fused_moe_grouped<align128,") + (fp8 ? "w8a8_1x128," : "") + up_variant +
         "," + down_variant + ">";
}

}  // namespace kiln::cuda
