#pragma once
// Host tensors for tests: owning byte storage plus a TensorView, random fill, comparisons.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/element.h"
#include "core/host_random.h"
#include "kiln/core/tensor_view.h"

namespace kiln::testing {

// A host tensor of `sizes` whose rows (last dim) are `row_pitch` elements apart (>= last size),
// so tests can make strided-row views.
struct HostTensor {
  DType dtype = DType::f32;
  std::vector<int64_t> sizes;
  int64_t row_pitch = 0;
  std::vector<uint8_t> bytes;

  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> sizes, int64_t row_pitch = 0)
      : dtype(dtype), sizes(std::move(sizes)) {
    this->row_pitch = row_pitch > 0 ? row_pitch : this->sizes.back();
    bytes.assign(static_cast<size_t>(rows() * this->row_pitch) * dtype_size(dtype), 0xFF);
  }
  int64_t cols() const { return sizes.back(); }
  int64_t rows() const {
    int64_t r = 1;
    for (size_t d = 0; d + 1 < sizes.size(); ++d) r *= sizes[d];
    return r;
  }
  int64_t numel() const { return rows() * cols(); }
  std::vector<int64_t> strides() const {
    std::vector<int64_t> s(sizes.size());
    int64_t stride = row_pitch;
    s.back() = 1;
    for (int d = static_cast<int>(sizes.size()) - 2; d >= 0; --d) {
      s[d] = stride;
      stride *= sizes[d];
    }
    return s;
  }
  TensorView view(void* data = nullptr, Device device = Device::cpu()) {
    const std::vector<int64_t> st = strides();
    return TensorView(data ? data : bytes.data(), dtype, device, sizes, st);
  }
  double at(int64_t row, int64_t col) const {
    return element::load(bytes.data(), dtype, row * row_pitch + col);
  }
  void set(int64_t row, int64_t col, double v) {
    element::store(bytes.data(), dtype, row * row_pitch + col, v);
  }
  // Roughly normal(mean, stddev) values, rounded to the dtype; the pad between rows stays
  // poisoned.
  void randn(std::mt19937_64& rng, double mean = 0.0, double stddev = 1.0) {
    HostRandom random(rng());
    for (int64_t i = 0; i < rows(); ++i)
      for (int64_t j = 0; j < cols(); ++j) set(i, j, mean + stddev * random.normal());
  }
  void poison() { std::memset(bytes.data(), 0xFF, bytes.size()); }  // NaN in every float type
};

struct Comparison {
  double rel_l2 = 0;
  int64_t nan_count = 0;
  std::string first_mismatches;  // "(row, col): got g, want w" for the first few
};

// ||got - want|| / max(||want||, scale_norm) over the logical elements; NaN in `got` is counted
// separately. `scale_norm` is the size of the terms the result is a difference of, for outputs
// that cancel (a norm's dx at N = 1 is a difference of two near-equal terms).
inline Comparison compare(const HostTensor& got, const HostTensor& want, double tolerance,
                          double scale_norm = 0.0) {
  const int64_t row_begin = 0, row_end = want.rows();
  Comparison c;
  double num = 0, den = 0;
  int shown = 0;
  for (int64_t i = row_begin; i < row_end; ++i) {
    for (int64_t j = 0; j < want.cols(); ++j) {
      const double g = got.at(i, j), w = want.at(i, j);
      if (std::isnan(g)) ++c.nan_count;
      num += (g - w) * (g - w);
      den += w * w;
      const double scale = std::fabs(w) + 1e-3;
      if ((std::isnan(g) || std::fabs(g - w) > 50 * tolerance * scale) && shown < 5) {
        c.first_mismatches += "(" + std::to_string(i) + ", " + std::to_string(j) + "): got " +
                              std::to_string(g) + ", want " + std::to_string(w) + "; ";
        ++shown;
      }
    }
  }
  den = std::max(den, scale_norm * scale_norm);
  c.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  return c;
}

// The tolerance table (DESIGN.md): relative L2 per dtype.
inline double tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return 1e-5;
    case DType::bf16:
      return 1e-2;
    case DType::f16:
      return 1e-2;
    default:
      return 0.0;
  }
}

}  // namespace kiln::testing
