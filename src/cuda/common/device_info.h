#pragma once
#include "kiln/core/device.h"

namespace kiln::cuda {

// Streaming multiprocessors of a CUDA device, read once per device and cached.
int sm_count(const Device& device);

}  // namespace kiln::cuda
