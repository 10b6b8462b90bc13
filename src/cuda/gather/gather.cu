// Row gathers as byte copies in the widest unit (16 bytes down to 1) that every row size, stride
// and base pointer allows. blockIdx.z picks the tensor (k or v of a pair: one launch), blockIdx.y
// walks the gathered rows, blockIdx.x the units of a row. An out-of-range index writes a zero row
// and is counted once (blockIdx.x = z = 0, thread x = 0) into bad_indices, when there is one.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/row_launch.h"
#include "cuda/gather/gather_launch.h"

namespace kiln::cuda {
namespace {

struct GatherArgs {
  GatherRows rows[2];
  const void* index;
  bool index64;
  int64_t n, m;
  int32_t* bad_indices;
};

template <typename Unit>
__global__ void __launch_bounds__(kRowBlockThreads)
    gather_kernel(const __grid_constant__ GatherArgs a) {
  const GatherRows& g = a.rows[blockIdx.z];
  const int64_t units = g.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int64_t u = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t m = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; m < a.m; m += step) {
    const int64_t i = a.index64 ? static_cast<const int64_t*>(a.index)[m]
                                : static_cast<const int32_t*>(a.index)[m];
    const bool ok = i >= 0 && i < a.n;
    if (!ok && a.bad_indices != nullptr && blockIdx.x == 0 && blockIdx.z == 0 && threadIdx.x == 0) {
      atomicAdd(a.bad_indices, 1);
    }
    if (u >= units) continue;
    Unit value{};
    if (ok) {
      value = reinterpret_cast<const Unit*>(static_cast<const char*>(g.src) +
                                            i * g.src_stride_bytes)[u];
    }
    reinterpret_cast<Unit*>(static_cast<char*>(g.out) + m * g.out_stride_bytes)[u] = value;
  }
}

// The widest power-of-two unit (<= 16 bytes) dividing every size, stride and address.
int unit_bytes(const GatherProblem& p) {
  int unit = 16;
  for (const GatherRows* g : {&p.a, &p.b}) {
    if (g->src == nullptr) continue;
    for (int64_t v : {g->row_bytes, g->src_stride_bytes, g->out_stride_bytes,
                      static_cast<int64_t>(reinterpret_cast<uintptr_t>(g->src)),
                      static_cast<int64_t>(reinterpret_cast<uintptr_t>(g->out))}) {
      while (unit > 1 && v % unit != 0) unit /= 2;
    }
  }
  return unit;
}

}  // namespace

std::string gather_rows(const GatherProblem& p, Stream stream) {
  const bool pair = p.b.src != nullptr;
  const int unit = unit_bytes(p);
  const int64_t units = std::max(p.a.row_bytes, pair ? p.b.row_bytes : 0) / unit;
  RowLaunch launch = row_launch(p.m, units, 1);
  launch.grid.z = pair ? 2 : 1;
  const GatherArgs args{{p.a, p.b}, p.index, p.index64, p.n, p.m, p.bad_indices};
  if (p.m > 0) {
    dispatch_value<16, 8, 4, 2, 1>(unit, p.op, [&](auto u) {
      constexpr int kUnit = decltype(u)::value;
      using Unit = std::conditional_t<
          kUnit == 16, uint4,
          std::conditional_t<
              kUnit == 8, uint2,
              std::conditional_t<kUnit == 4, uint32_t,
                                 std::conditional_t<kUnit == 2, uint16_t, uint8_t>>>>;
      gather_kernel<Unit><<<launch.grid, launch.block, 0, stream>>>(args);
      KILN_CUDA_CHECK(cudaGetLastError());
    });
  }
  return std::string(pair ? "gather_rows_pair<" : "gather_rows<") + "unit" + std::to_string(unit) +
         "B,index" + (p.index64 ? "64" : "32") + ",tpr" + std::to_string(launch.threads_per_row) +
         ",rpb" + std::to_string(launch.rows_per_block) + ">";
}

}  // namespace kiln::cuda
