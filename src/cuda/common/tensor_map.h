#pragma once
// Host side of TMA: encodes the tensor maps the copy engine reads tiles through. The driver's
// encoder is reached through the runtime (cudaGetDriverEntryPointByVersion), so nothing links
// libcuda directly.
#include <cuda.h>

#include <cstdint>
#include <string>

namespace kiln::cuda {

// A 3-D view of 16-bit (or, element_bytes = 1, 8-bit) elements, dims[0] contiguous, with element
// strides for dims 1 and 2, read in boxes of box[0] x box[1] x box[2] elements into
// 128-byte-swizzled shared memory (box[0] * element_bytes must be 128). Returns an empty string on
// success, or why TMA cannot describe the view (the base not 16-byte aligned, a stride not a
// multiple of 16 bytes, an extent too large): the caller then takes a path that does not need TMA.
std::string encode_tensor_map_3d(CUtensorMap* map, const void* base, const uint64_t (&dims)[3],
                                 const int64_t (&strides)[2], const uint32_t (&box)[3],
                                 int element_bytes = 2);

}  // namespace kiln::cuda
