#pragma once
// What every torch/csrc/<family>.cpp shares: at::Tensor -> kiln::TensorView (dtypes mapped, or a
// kiln-style error naming the op and argument), the device scope an op runs in (device guard and
// the current CUDA stream), and the translation of kiln::Error into a torch error whose message
// Python shows unchanged. Torch stays here, out of include/ and src/.
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "kiln/kiln.h"

#if KILN_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace kiln::torch_binding {

inline DType to_kiln_dtype(std::string_view op, std::string_view arg, at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::f32;
    case at::kBFloat16:
      return DType::bf16;
    case at::kHalf:
      return DType::f16;
    case at::kFloat8_e4m3fn:
      return DType::f8e4m3;
    case at::kFloat8_e5m2:
      return DType::f8e5m2;
    case at::kInt:
      return DType::i32;
    case at::kLong:
      return DType::i64;
    case at::kByte:
      return DType::u8;
    case at::kBool:
      return DType::boolean;
    default:
      throw_arg_error(op, arg,
                      "a dtype kiln knows (float32, bfloat16, float16, float8_e4m3fn, "
                      "float8_e5m2, int32, int64, uint8, bool)",
                      "torch." + c10::getDtypeNames(t).first);
  }
}

// A view of `t` (sizes and strides in elements, data at the tensor's storage offset).
inline TensorView to_view(std::string_view op, std::string_view arg, const at::Tensor& t) {
  Device device;
  if (t.is_cpu()) {
    device = Device::cpu();
  } else if (t.is_cuda()) {
    device = Device::cuda(t.get_device());
  } else {
    throw_arg_error(op, arg, "a CPU or CUDA tensor", "one on " + t.device().str());
  }
  const DType dtype = to_kiln_dtype(op, arg, t.scalar_type());
  if (t.dim() > kMaxRank) {
    throw_arg_error(op, arg, "rank <= " + std::to_string(kMaxRank),
                    "rank " + std::to_string(t.dim()));
  }
  const size_t rank = static_cast<size_t>(t.dim());
  return TensorView(t.data_ptr(), dtype, device, std::span<const int64_t>(t.sizes().data(), rank),
                    std::span<const int64_t>(t.strides().data(), rank));
}

// An absent optional (None) is an absent view.
inline TensorView to_view(std::string_view op, std::string_view arg,
                          const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? to_view(op, arg, *t) : TensorView{};
}

// Where an op runs: on x's device, and for CUDA on the current stream of that device (so ops
// follow torch.cuda.stream(...) and are captured by torch.cuda.graph). CPU: the null stream,
// which the reference backend ignores.
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& x) {
#if KILN_TORCH_CUDA
    if (x.is_cuda()) {
      guard_.emplace(x.device());
      stream_ = at::cuda::getCurrentCUDAStream(x.get_device()).stream();
    }
#else
    (void)x;
#endif
  }
  Stream stream() const {
    return stream_;
  }

 private:
#if KILN_TORCH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard_;
#endif
  Stream stream_ = nullptr;
};

// Runs `body`, turning a kiln::Error into a c10::Error (RuntimeError in Python) with the same
// message, so the op, argument, expected and given survive the trip through the dispatcher.
template <class Body>
decltype(auto) translate_errors(Body&& body) {
  try {
    return std::forward<Body>(body)();
  } catch (const Error& e) {
    TORCH_CHECK(false, e.what());
  }
}

}  // namespace kiln::torch_binding
