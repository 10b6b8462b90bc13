// The routers, one launch from logits to (weights, ids): a warp a row (warp_topk.cuh), blocks of
// 1 to 8 warps (row_warps_per_block). Each lane loads its logits (coalesced vector loads in the
// run layout where E = 32 * per_lane and rows are aligned) and turns them into selection keys:
// softmax keys the logits themselves (its exps come after the selection); sigmoid and
// sqrt-softplus scores on MUFU approximations, plus the bias (router_row.cuh). DeepSeek-V3's group
// filter zeroes the keys of the groups not kept, then warp_topk ranks the picks carrying the
// unbiased score (softmax: the logit), and the k lanes holding picks normalise and store at their
// rank.
// The group filter: the selection keys go to shared memory, 32 / n_group lanes (rounded down to a
// power of two) take a group's top two by integer max/min on keys, two butterfly steps merge them,
// and topk_group REDUX rounds keep the groups; e / per is a multiply-high, not a division. The old
// version had lane g walk its group alone with float compares, and divided per candidate.
#include <string>

#include "core/dispatch.h"
#include "core/int_math.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/topk/router_launch.h"
#include "cuda/topk/router_row.cuh"
#include "cuda/topk/topk_launch.h"
#include "cuda/topk/warp_topk.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 8;

template <typename T, int kPerLane, RouterKind kKind, Layout L>
__global__ void __launch_bounds__(kWarps * 32) router_kernel(const __grid_constant__ RouterArgs a) {
  __shared__ uint32_t row_key[kKind == RouterKind::deepseek_v3 ? kWarps : 1][32 * kPerLane];
  __shared__ TopkSlot slots[kWarps][kTopkSlots];
  const int warp = threadIdx.x / 32;  // blockDim.x / 32 <= kWarps warps a block
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + warp;
  if (row >= a.rows) return;
  route_row<T, kPerLane, kKind, L>(a, static_cast<const T*>(a.logits) + row * a.logits_stride, row,
                                   row_key[kKind == RouterKind::deepseek_v3 ? warp : 0],
                                   slots[warp]);
}

template <typename T, int kPerLane, RouterKind kKind, Layout L>
void launch(const RouterArgs& args, int warps, Stream stream) {
  const auto blocks = static_cast<unsigned>(ceil_div(args.rows, warps));
  router_kernel<T, kPerLane, kKind, L><<<blocks, warps * 32, 0, stream>>>(args);
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::string router(const RouterProblem& p, Stream stream) {
  if (p.rows == 0) return "empty";
  const RouterArgs args = router_args(p);
  const int per_lane = router_per_lane(p.experts);
  const bool run = run_layout_fits(p.logits.data, p.logits.row_stride, p.experts, per_lane,
                                   static_cast<int>(dtype_size(p.dtype)));
  const int warps = row_warps_per_block(p.rows, sm_count(p.device), kWarps);
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_value<RouterKind::softmax, RouterKind::deepseek_v3, RouterKind::activation>(
        p.kind, "router kind", [&](auto kind) {
          dispatch_value<1, 2, 4, 8, 16, 32>(per_lane, "router experts per lane", [&](auto n) {
            constexpr int kN = decltype(n)::value;
            with_layout<T, kN>(run, [&](auto layout) {
              launch<T, kN, decltype(kind)::value, decltype(layout)::value>(args, warps, stream);
            });
          });
        });
  });
  const char* kind = p.kind == RouterKind::softmax       ? "softmax"
                     : p.kind == RouterKind::deepseek_v3 ? "deepseek_v3"
                                                         : "activation";
  return std::string("router_warp_row<") + kind + "," + std::string(dtype_name(p.dtype)) +
         ",per_lane" + std::to_string(per_lane) + (run ? ",run" : ",strided") + ">";
}

}  // namespace kiln::cuda
