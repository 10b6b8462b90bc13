#include <array>
#include <atomic>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"

namespace kiln::cuda {

int sm_count(const Device& device) {
  static std::array<std::atomic<int>, 64> cache{};
  if (device.index < 0 || device.index >= static_cast<int>(cache.size())) {
    throw Error("sm_count: device index out of range: " + device.str());
  }
  int count = cache[device.index].load(std::memory_order_relaxed);
  if (count == 0) {
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device.index));
    cache[device.index].store(count, std::memory_order_relaxed);
  }
  return count;
}

}  // namespace kiln::cuda
