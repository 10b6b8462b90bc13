#include "kiln/core/tensor_view.h"

#include <algorithm>

#include "kiln/core/error.h"

namespace kiln {

TensorView::TensorView(void* data, DType dtype, Device device, std::span<const int64_t> sizes,
                       std::span<const int64_t> strides)
    : data(data), dtype(dtype), device(device), rank(static_cast<int>(sizes.size())) {
  if (sizes.size() > kMaxRank || strides.size() != sizes.size()) {
    throw Error("TensorView: rank must be <= 8 with one stride per size, got " +
                std::to_string(sizes.size()) + " sizes and " + std::to_string(strides.size()) +
                " strides");
  }
  std::copy(sizes.begin(), sizes.end(), this->sizes.begin());
  std::copy(strides.begin(), strides.end(), this->strides.begin());
}

TensorView::TensorView(void* data, DType dtype, Device device, std::span<const int64_t> sizes)
    : data(data), dtype(dtype), device(device), rank(static_cast<int>(sizes.size())) {
  if (sizes.size() > kMaxRank) {
    throw Error("TensorView: rank must be <= 8, got " + std::to_string(sizes.size()));
  }
  std::copy(sizes.begin(), sizes.end(), this->sizes.begin());
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= sizes[d];
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int d = 0; d < rank; ++d) n *= sizes[d];
  return rank < 0 ? 0 : n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (sizes[d] != 1 && strides[d] != expected) return false;
    expected *= sizes[d];
  }
  return true;
}

std::string TensorView::shape_str() const {
  if (!defined()) return "absent";
  std::string s = "[";
  for (int d = 0; d < rank; ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + "]";
}

std::string TensorView::describe() const {
  if (!defined()) return "absent";
  return std::string(dtype_name(dtype)) + shape_str() + " " + device.str();
}

}  // namespace kiln
