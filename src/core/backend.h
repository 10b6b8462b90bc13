#pragma once
// Which backends this build has, and the error for a CUDA tensor in a build without CUDA.
#include <string_view>

#include <string>
#include <utility>

#include "kiln/core/error.h"
#include "kiln/core/receipt.h"
#include "kiln/core/tensor_view.h"

namespace kiln {

#if KILN_WITH_CUDA
inline constexpr bool kCudaBuilt = true;
#else
inline constexpr bool kCudaBuilt = false;
#endif

inline void require_cuda_built(std::string_view op, const Device& device) {
  if (!kCudaBuilt) {
    throw Error(std::string(op) + ": tensors are on " + device.str() +
                " but this kiln build has no CUDA backend (configure with -DKILN_CUDA=ON)");
  }
}

// Runs a validated problem on its device's backend and records the receipt: `ref()` on the host
// (the float64 reference), `cuda()` on a GPU (the launcher, which returns the variant it ran).
template <typename Problem, typename Ref, typename Cuda>
void run_on_backend(const Problem& p, std::string_view ref_variant, Ref&& ref, Cuda&& cuda) {
  Receipt receipt{p.op, "reference", std::string(ref_variant), ""};
  if (p.device.is_cuda()) {
    require_cuda_built(p.op, p.device);
    receipt.backend = "cuda";
    if constexpr (kCudaBuilt) receipt.variant = cuda();
  } else {
    ref();
  }
  record_receipt(std::move(receipt));
}

}  // namespace kiln
