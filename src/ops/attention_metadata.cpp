// Host-side reading and checking of the packed-sequence metadata (see attention_metadata.h).
#include "ops/attention_metadata.h"

#include <string>

#include "core/check.h"

namespace kiln::attention_metadata {

void on_cpu(std::string_view op, std::string_view arg, const TensorView& t) {
  if (t.defined() && !t.device.is_cpu()) {
    throw_arg_error(op, arg, "a CPU tensor (a host op: metadata is checked before a launch)",
                    t.device.str());
  }
}

// An int32 vector of n elements on the CPU, copied out (any stride).
std::vector<int32_t> int32_vector(std::string_view op, std::string_view arg, const TensorView& t,
                                  int64_t n) {
  on_cpu(op, arg, t);
  check::dtype_in(op, arg, t, {DType::i32});
  check::vector_of(op, arg, t, n);
  std::vector<int32_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<const int32_t*>(t.data)[i * t.stride(0)];
  return v;
}

// cu_seqlens: 0 first, non-decreasing; returns it.
std::vector<int32_t> seqlens(std::string_view op, std::string_view arg, const TensorView& t) {
  check::present(op, arg, t);
  if (t.rank != 1 || t.size(0) < 1) {
    throw_arg_error(op, arg, "int32 [B + 1] with B >= 0", t.describe());
  }
  std::vector<int32_t> cu = int32_vector(op, arg, t, t.size(0));
  if (cu[0] != 0) throw_arg_error(op, arg, "cu_seqlens[0] = 0", std::to_string(cu[0]));
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    if (cu[b + 1] < cu[b]) {
      throw_arg_error(op, arg, "non-decreasing offsets",
                      "cu_seqlens[" + std::to_string(b + 1) + "] = " + std::to_string(cu[b + 1]) +
                          " < cu_seqlens[" + std::to_string(b) + "] = " + std::to_string(cu[b]));
    }
  }
  return cu;
}

// Per-sequence valid lengths (absent: the lengths), each within its sequence.
std::vector<int32_t> valid_lengths(std::string_view op, std::string_view arg, const TensorView& t,
                                   const std::vector<int32_t>& cu) {
  const int64_t batch = static_cast<int64_t>(cu.size()) - 1;
  std::vector<int32_t> v(batch);
  if (t.defined()) v = int32_vector(op, arg, t, batch);
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t len = cu[b + 1] - cu[b];
    if (!t.defined()) v[b] = len;
    if (v[b] < 0 || v[b] > len) {
      throw_arg_error(op, arg, "0 <= " + std::string(arg) + "[b] <= the sequence's length",
                      std::string(arg) + "[" + std::to_string(b) + "] = " + std::to_string(v[b]) +
                          ", length " + std::to_string(len));
    }
  }
  return v;
}

}  // namespace kiln::attention_metadata
