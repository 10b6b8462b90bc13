#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_runtime.h>

#include "cuda/common/cuda_check.h"
#include "cuda/common/tensor_map.h"

namespace kiln::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    KILN_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                     cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || f == nullptr) {
      throw Error("tensor maps: the driver has no cuTensorMapEncodeTiled");
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

std::string encode_tensor_map_3d(CUtensorMap* map, const void* base, const uint64_t (&dims)[3],
                                 const int64_t (&strides)[2], const uint32_t (&box)[3],
                                 int element_bytes) {
  if (element_bytes != 1 && element_bytes != 2) return "element size not 1 or 2 bytes";
  const int64_t kElement = element_bytes;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return "base address not 16-byte aligned";
  for (const uint64_t d : dims) {
    if (d == 0 || d > (uint64_t{1} << 32)) return "an extent of 0 or past 2^32";
  }
  cuuint64_t global_dims[3] = {dims[0], dims[1], dims[2]};
  cuuint64_t global_strides[2];
  for (int i = 0; i < 2; ++i) {
    // A dim of extent 1 is never stepped over; give it a legal stride whatever the view says.
    const int64_t bytes = dims[i + 1] == 1 ? 16 : strides[i] * kElement;
    if (bytes <= 0 || bytes % 16 != 0 || bytes >= (int64_t{1} << 40)) {
      return "stride of dim " + std::to_string(i + 1) + " (" + std::to_string(strides[i]) +
             " elements) not a positive multiple of 16 bytes";
    }
    global_strides[i] = static_cast<cuuint64_t>(bytes);
  }
  cuuint32_t box_dims[3] = {box[0], box[1], box[2]};
  cuuint32_t element_strides[3] = {1, 1, 1};
  // The bf16 type code serves f16 as well, and uint8 serves fp8: the copy moves elements unchanged.
  const CUresult r = encoder()(
      map, element_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8, 3,
      const_cast<void*>(base), global_dims, global_strides, box_dims, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return "cuTensorMapEncodeTiled failed (CUresult " + std::to_string(r) + ")";
  return "";
}

}  // namespace kiln::cuda
