#include "core/check.h"

#include <algorithm>
#include <string>

namespace kiln::check {

void present(std::string_view op, std::string_view arg, const TensorView& t) {
  if (!t.defined()) throw_arg_error(op, arg, "a tensor", "absent");
}

void dtype_in(std::string_view op, std::string_view arg, const TensorView& t,
              std::initializer_list<DType> allowed) {
  for (DType d : allowed) {
    if (t.dtype == d) return;
  }
  std::string expected = "dtype in {";
  bool first = true;
  for (DType d : allowed) {
    expected.append(first ? "" : ", ").append(dtype_name(d));
    first = false;
  }
  throw_arg_error(op, arg, expected + "}", dtype_name(t.dtype));
}

void same_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType expected) {
  if (t.dtype != expected) {
    throw_arg_error(op, arg, "dtype " + std::string(dtype_name(expected)), dtype_name(t.dtype));
  }
}

void same_device(std::string_view op, std::string_view arg, const TensorView& t,
                 const Device& expected) {
  if (!(t.device == expected)) {
    throw_arg_error(op, arg, "a tensor on " + expected.str(), "one on " + t.device.str());
  }
}

void same_shape(std::string_view op, std::string_view arg, const TensorView& t,
                const TensorView& like) {
  bool equal = t.rank == like.rank;
  for (int d = 0; equal && d < t.rank; ++d) equal = t.sizes[d] == like.sizes[d];
  if (!equal) throw_arg_error(op, arg, "shape " + like.shape_str(), "shape " + t.shape_str());
}

void rank_at_least(std::string_view op, std::string_view arg, const TensorView& t, int rank) {
  if (t.rank < rank) {
    throw_arg_error(op, arg, "rank >= " + std::to_string(rank),
                    "rank " + std::to_string(t.rank) + " " + t.shape_str());
  }
}

void vector_of(std::string_view op, std::string_view arg, const TensorView& t, int64_t n) {
  if (t.rank != 1 || t.sizes[0] != n) {
    throw_arg_error(op, arg, "shape [" + std::to_string(n) + "]", "shape " + t.shape_str());
  }
  if (n > 1 && t.strides[0] != 1) {
    throw_arg_error(op, arg, "a contiguous vector", "stride " + std::to_string(t.strides[0]));
  }
}

RowMatrix rows_of(std::string_view op, std::string_view arg, const TensorView& t) {
  present(op, arg, t);
  rank_at_least(op, arg, t, 1);
  const int last = t.rank - 1;
  if (t.numel() == 0) {  // nothing is addressed: any strides will do (e.g. expanded gradients)
    return RowMatrix{t.data, t.dtype, t.numel() / std::max<int64_t>(t.sizes[last], 1),
                     t.sizes[last], t.sizes[last]};
  }
  if (t.sizes[last] > 1 && t.strides[last] != 1) {
    throw_arg_error(op, arg, "a contiguous last dim (stride 1)",
                    "stride " + std::to_string(t.strides[last]) + " on shape " + t.shape_str());
  }
  RowMatrix m{t.data, t.dtype, 1, t.sizes[last], t.sizes[last]};
  // Collapse leading dims from the innermost outwards; size-1 dims carry no stride constraint.
  bool have_stride = false;
  for (int d = last - 1; d >= 0; --d) {
    if (t.sizes[d] == 1) continue;
    if (!have_stride) {
      m.row_stride = t.strides[d];
      have_stride = true;
    } else if (t.strides[d] != m.rows * m.row_stride) {
      throw_arg_error(op, arg, "leading dims that collapse into one row stride",
                      "strides that do not, on shape " + t.shape_str());
    }
    m.rows *= t.sizes[d];
  }
  if (m.rows > 1 && m.row_stride < m.cols) {
    throw_arg_error(op, arg,
                    "rows that do not overlap (row stride >= " + std::to_string(m.cols) + ")",
                    "row stride " + std::to_string(m.row_stride));
  }
  return m;
}

RowMatrix like(std::string_view op, std::string_view arg, const TensorView& t,
               const TensorView& first) {
  present(op, arg, t);
  same_device(op, arg, t, first.device);
  same_dtype(op, arg, t, first.dtype);
  same_shape(op, arg, t, first);
  return rows_of(op, arg, t);
}

int32_t* counter(std::string_view op, std::string_view arg, const TensorView& t,
                 const Device& device) {
  present(op, arg, t);
  same_device(op, arg, t, device);
  dtype_in(op, arg, t, {DType::i32});
  vector_of(op, arg, t, 1);
  return static_cast<int32_t*>(t.data);
}

int32_t* optional_counter(std::string_view op, std::string_view arg, const TensorView& t,
                          const Device& device) {
  return t.defined() ? counter(op, arg, t, device) : nullptr;
}

}  // namespace kiln::check
