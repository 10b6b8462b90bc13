// Row gathers as byte copies in the widest unit (16 bytes down to 1) that every row size, stride
// and base pointer allows. A thread copies one unit: blockIdx.z picks the tensor (k or v of a
// pair: one launch), blockIdx.x the gathered rows (threadIdx.y one of them), blockIdx.y the units
// of a row. An out-of-range index writes a zero row and is counted once (blockIdx.y = z = 0,
// thread x = 0) into bad_indices, when there is one.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/dispatch.h"
#include "core/int_math.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/row_shape.h"
#include "cuda/gather/gather_launch.h"
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

struct GatherArgs {
  GatherRows rows[2];
  const void* index;
  bool index64;
  int64_t n, m;
  int32_t* bad_indices;
};

// Blocks of 128 threads, each copying one unit, no loop: ncu at 131072 rows of 2 KB counted 82%
// of the warp slots busy with blocks of 256 walking two rows each (grid capped at 65535 rows),
// against 87% for index_select's 128-thread blocks, and 2.4% more time.
constexpr int kGatherThreads = 128;

template <typename Unit>
__global__ void __launch_bounds__(kGatherThreads)
    gather_kernel(const __grid_constant__ GatherArgs a) {
  const GatherRows& g = a.rows[blockIdx.z];
  const int64_t m = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
  if (m >= a.m) return;
  const int64_t units = g.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const int64_t u = int64_t{blockIdx.y} * blockDim.x + threadIdx.x;
  const int64_t i =
      a.index64 ? static_cast<const int64_t*>(a.index)[m] : static_cast<const int32_t*>(a.index)[m];
  const bool ok = i >= 0 && i < a.n;
  if (!ok && a.bad_indices != nullptr && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0) {
    atomicAdd(a.bad_indices, 1);
  }
  if (u >= units) return;
  Unit value{};
  if (ok) {
    value =
        reinterpret_cast<const Unit*>(static_cast<const char*>(g.src) + i * g.src_stride_bytes)[u];
  }
  reinterpret_cast<Unit*>(static_cast<char*>(g.out) + m * g.out_stride_bytes)[u] = value;
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
  // row_shape's split of a block between a row's units and rows (its grid puts rows on y, capped:
  // here they go on x, uncapped).
  const RowShape shape = row_shape(p.m, units, 1, 0, kGatherThreads);
  const int threads_per_row = shape.threads_per_row, rows_per_block = shape.rows_per_block;
  const int64_t row_blocks = ceil_div(p.m, int64_t{rows_per_block});
  const int64_t unit_blocks = std::max<int64_t>(1, ceil_div(units, int64_t{threads_per_row}));
  if (row_blocks > 2147483647 || unit_blocks > 65535) {
    throw Error(p.op + ": " + std::to_string(p.m) + " rows of " + std::to_string(units) +
                " units need more blocks than CUDA's grid allows");
  }
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(unit_blocks),
                  pair ? 2 : 1);
  const dim3 block(threads_per_row, rows_per_block);
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
      gather_kernel<Unit><<<grid, block, 0, stream>>>(args);
      KILN_CUDA_CHECK(cudaGetLastError());
    });
  }
  return std::string(pair ? "gather_rows_pair<" : "gather_rows<") + "unit" + std::to_string(unit) +
         "B,index" + (p.index64 ? "64" : "32") + ",tpr" + std::to_string(threads_per_row) + ",rpb" +
         std::to_string(rows_per_block) + ">";
}

}  // namespace kiln::cuda
