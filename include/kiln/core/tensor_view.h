#pragma once
// TensorView: a non-owning view of memory kiln reads or writes. Sizes and strides are in
// elements (int64). A default-constructed view is "absent" (for optional arguments).
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include "kiln/core/device.h"
#include "kiln/core/dtype.h"

namespace kiln {

inline constexpr int kMaxRank = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu();
  int rank = -1;  // -1: absent
  std::array<int64_t, kMaxRank> sizes{};
  std::array<int64_t, kMaxRank> strides{};

  TensorView() = default;
  // A view with explicit sizes and strides (in elements).
  TensorView(void* data, DType dtype, Device device, std::span<const int64_t> sizes,
             std::span<const int64_t> strides);
  // A row-major contiguous view.
  TensorView(void* data, DType dtype, Device device, std::span<const int64_t> sizes);
  TensorView(void* data, DType dtype, Device device, std::initializer_list<int64_t> sizes)
      : TensorView(data, dtype, device, std::span<const int64_t>(sizes.begin(), sizes.size())) {}

  bool defined() const { return rank >= 0; }
  int64_t numel() const;
  // Negative dims count from the end, as in PyTorch.
  int64_t size(int dim) const { return sizes[wrap(dim)]; }
  int64_t stride(int dim) const { return strides[wrap(dim)]; }
  bool is_contiguous() const;
  size_t element_size() const { return dtype_size(dtype); }
  // "bf16[16384, 4096] cuda:0" — used in error messages and receipts.
  std::string describe() const;
  std::string shape_str() const;

 private:
  int wrap(int dim) const { return dim < 0 ? dim + rank : dim; }
};

}  // namespace kiln
