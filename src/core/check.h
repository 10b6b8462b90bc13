#pragma once
// Argument checks shared by every entry point, the reference and the bindings. Each throws
// kiln::Error naming the op, the argument, what was expected and what was given.
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "kiln/core/error.h"
#include "kiln/core/tensor_view.h"

namespace kiln::check {

// A tensor seen as `rows` rows of `cols` contiguous elements, `row_stride` elements apart.
struct RowMatrix {
  void* data = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
};

void present(std::string_view op, std::string_view arg, const TensorView& t);
void dtype_in(std::string_view op, std::string_view arg, const TensorView& t,
              std::initializer_list<DType> allowed);
void same_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType expected);
void same_device(std::string_view op, std::string_view arg, const TensorView& t,
                 const Device& expected);
void same_shape(std::string_view op, std::string_view arg, const TensorView& t,
                const TensorView& like);
void rank_at_least(std::string_view op, std::string_view arg, const TensorView& t, int rank);
// A 1-D tensor of `n` contiguous elements.
void vector_of(std::string_view op, std::string_view arg, const TensorView& t, int64_t n);
// Last dim contiguous and leading dims collapsible into one row stride.
RowMatrix rows_of(std::string_view op, std::string_view arg, const TensorView& t);
// The int32 [1] counter on `device` that a kernel adds its reports to (out-of-range indices it
// never read); returns its data.
int32_t* counter(std::string_view op, std::string_view arg, const TensorView& t,
                 const Device& device);
// counter, or null when t is absent: the caller asked for no count (bad entries are still never
// read, only not counted), and the op launches nothing to zero one.
int32_t* optional_counter(std::string_view op, std::string_view arg, const TensorView& t,
                          const Device& device);
// Present, on `first`'s device, of its dtype and shape; then rows_of.
RowMatrix like(std::string_view op, std::string_view arg, const TensorView& t,
               const TensorView& first);

}  // namespace kiln::check
