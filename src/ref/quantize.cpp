#include "ref/quantize.h"

#include <algorithm>
#include <cmath>

#include "core/element.h"

namespace kiln::ref {
namespace {

// Runs f(r, c) over the elements of tile (i, j).
template <typename F>
void for_tile(const QuantTiles& t, int64_t rows, int64_t cols, int64_t i, int64_t j, F&& f) {
  const int64_t r_end = std::min(rows, (i + 1) * t.tile_rows);
  const int64_t c_end = std::min(cols, (j + 1) * t.tile_cols);
  for (int64_t r = i * t.tile_rows; r < r_end; ++r) {
    for (int64_t c = j * t.tile_cols; c < c_end; ++c) f(r, c);
  }
}

float& scale_at(const QuantTiles& t, int64_t i, int64_t j) {
  return t.scales[i * t.row_stride + j * t.col_stride];
}

}  // namespace

float tile_absmax(const QuantizeProblem& p, int64_t i, int64_t j) {
  float amax = 0.f;
  for_tile(p.tiles, p.x.rows, p.x.cols, i, j, [&](int64_t r, int64_t c) {
    const float a =
        std::fabs(static_cast<float>(element::load(p.x.data, p.x.dtype, r * p.x.row_stride + c)));
    amax = std::fmax(amax, a);  // fmax ignores NaN
  });
  return amax;
}

float scale_of_amax(float amax, float amax_floor, float amax_ceiling, DType fp8) {
  return std::fmin(std::fmax(amax, amax_floor), amax_ceiling) / fp8_max(fp8);
}

void quantize_fp8(const QuantizeProblem& p) {
  const QuantTiles& t = p.tiles;
  for (int64_t i = 0; i < t.grid_rows; ++i) {
    for (int64_t j = 0; j < t.grid_cols; ++j) {
      float scale = scale_at(t, 0, 0);
      if (!p.static_scale) {
        scale = scale_of_amax(tile_absmax(p, i, j), p.amax_floor, p.amax_ceiling, p.fp8);
        scale_at(t, i, j) = scale;
      }
      const float inv = 1.f / scale;
      for_tile(t, p.x.rows, p.x.cols, i, j, [&](int64_t r, int64_t c) {
        const float x =
            static_cast<float>(element::load(p.x.data, p.x.dtype, r * p.x.row_stride + c));
        element::store(p.values.data, p.values.dtype, r * p.values.row_stride + c, x * inv);
      });
    }
  }
}

void dequantize_fp8(const DequantizeProblem& p) {
  const QuantTiles& t = p.tiles;
  for (int64_t r = 0; r < p.values.rows; ++r) {
    for (int64_t c = 0; c < p.values.cols; ++c) {
      const float q = static_cast<float>(
          element::load(p.values.data, p.values.dtype, r * p.values.row_stride + c));
      const float s = scale_at(t, r / t.tile_rows, c / t.tile_cols);
      element::store(p.out.data, p.out.dtype, r * p.out.row_stride + c, q * s);
    }
  }
}

}  // namespace kiln::ref
