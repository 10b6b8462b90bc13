// Entry points of rope and rope_backward: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/rope.h"

#include <cmath>
#include <string>
#include <tuple>
#include <utility>

#include "core/backend.h"
#include "cuda/rope/rope_launch.h"
#include "ops/rope_problem.h"
#include "ref/rope.h"

namespace kiln {
namespace {

std::string dims(int64_t a, int64_t b, int64_t c) {
  std::string s = "[";
  s.append(std::to_string(a)).append(", ").append(std::to_string(b)).append(", ");
  return s.append(std::to_string(c)).append("]");
}

// A [T, H, D] view with its last dim contiguous; returns its token and head strides.
std::pair<int64_t, int64_t> head_strides(std::string_view op, std::string_view arg,
                                         const TensorView& t) {
  if (t.size(2) > 1 && t.stride(2) != 1) {
    throw_arg_error(op, arg, "a contiguous last dim (stride 1)",
                    "stride " + std::to_string(t.stride(2)) + " on shape " + t.shape_str());
  }
  return {t.stride(0), t.stride(1)};
}

// An output's tokens and heads must not overlap one another (else threads race on them): the
// smaller of the two strides at least D, the larger spanning the smaller dim's extent.
void no_self_overlap(std::string_view op, std::string_view arg, const TensorView& t) {
  if (t.numel() == 0) return;
  const int64_t d = t.size(2);
  int64_t n_small = t.size(1), s_small = t.stride(1), n_big = t.size(0), s_big = t.stride(0);
  if (n_small <= 1 || (n_big > 1 && s_big < s_small)) {
    std::swap(n_small, n_big);
    std::swap(s_small, s_big);
  }
  const bool ok = (n_small <= 1 || s_small >= d) && (n_big <= 1 || s_big >= n_small * s_small);
  if (!ok) {
    throw_arg_error(op, arg, "tokens and heads that do not overlap",
                    "strides [" + std::to_string(t.stride(0)) + ", " + std::to_string(t.stride(1)) +
                        ", 1] on shape " + t.shape_str());
  }
}

// q or k and its output as a RopeHeads; `first` (q) sets T, D, the device and the dtype.
RopeHeads heads_of(std::string_view op, std::string_view in_name, std::string_view out_name,
                   const TensorView& in, const TensorView& out, const TensorView& first) {
  for (auto [name, t] : {std::pair{in_name, &in}, std::pair{out_name, &out}}) {
    check::present(op, name, *t);
    check::same_device(op, name, *t, first.device);
    check::same_dtype(op, name, *t, first.dtype);
  }
  if (in.rank != 3 || in.size(0) != first.size(0) || in.size(2) != first.size(2)) {
    throw_arg_error(op, in_name,
                    "shape " + dims(first.size(0), in.rank == 3 ? in.size(1) : 0, first.size(2)) +
                        " ([T, H, D])",
                    "shape " + in.shape_str());
  }
  check::same_shape(op, out_name, out, in);
  RopeHeads h;
  h.in = in.data;
  h.out = out.data;
  h.heads = in.size(1);
  std::tie(h.in_token_stride, h.in_head_stride) = head_strides(op, in_name, in);
  std::tie(h.out_token_stride, h.out_head_stride) = head_strides(op, out_name, out);
  no_self_overlap(op, out_name, out);
  // In place: the output must address what the input does (strides of size-1 dims aside).
  const bool same_tokens = in.size(0) <= 1 || h.in_token_stride == h.out_token_stride;
  const bool same_heads = h.heads <= 1 || h.in_head_stride == h.out_head_stride;
  if (h.in_place() && !(same_tokens && same_heads)) {
    throw_arg_error(op, out_name,
                    "the same view as " + std::string(in_name) + " (in place) or other memory",
                    "the same data with other strides");
  }
  return h;
}

void run_rope(std::string_view op, bool inverse, const TensorView& q_out, const TensorView& k_out,
              const TensorView& q, const TensorView& k, const TensorView& cos_sin_cache,
              const TensorView& positions, RopeLayout layout, int64_t rotary_dim,
              const TensorView& bad_positions, Stream stream) {
  const bool fwd = !inverse;
  const std::string_view q_in = fwd ? "q" : "dq_out", k_in = fwd ? "k" : "dk_out";
  const std::string_view q_res = fwd ? "q_out" : "dq", k_res = fwd ? "k_out" : "dk";
  check::present(op, q_in, q);
  check::dtype_in(op, q_in, q, {DType::f32, DType::bf16, DType::f16});
  if (q.rank != 3) throw_arg_error(op, q_in, "rank 3 ([T, Hq, D])", "shape " + q.shape_str());
  RopeProblem p;
  p.op = op;
  p.device = q.device;
  p.dtype = q.dtype;
  p.layout = layout;
  p.inverse = inverse;
  p.tokens = q.size(0);
  p.head_dim = q.size(2);
  p.q = heads_of(op, q_in, q_res, q, q_out, q);
  p.k = heads_of(op, k_in, k_res, k, k_out, q);
  if (rotary_dim < 2 || rotary_dim % 2 != 0 || rotary_dim > p.head_dim) {
    throw_arg_error(op, "rotary_dim",
                    "an even value in [2, D = " + std::to_string(p.head_dim) + "]",
                    std::to_string(rotary_dim));
  }
  p.rotary_dim = rotary_dim;
  check::present(op, "cos_sin_cache", cos_sin_cache);
  check::same_device(op, "cos_sin_cache", cos_sin_cache, q.device);
  check::dtype_in(op, "cos_sin_cache", cos_sin_cache, {DType::f32});
  if (cos_sin_cache.rank != 2 || cos_sin_cache.size(1) != rotary_dim ||
      !cos_sin_cache.is_contiguous()) {
    throw_arg_error(
        op, "cos_sin_cache",
        "a contiguous [max_position, rotary_dim = " + std::to_string(rotary_dim) + "] (cos | sin)",
        "shape " + cos_sin_cache.shape_str() +
            (cos_sin_cache.is_contiguous() ? "" : " (not contiguous)"));
  }
  p.max_position = cos_sin_cache.size(0);
  p.cos_sin = static_cast<const float*>(cos_sin_cache.data);
  check::present(op, "positions", positions);
  check::same_device(op, "positions", positions, q.device);
  check::dtype_in(op, "positions", positions, {DType::i64});
  check::vector_of(op, "positions", positions, p.tokens);
  p.positions = static_cast<const int64_t*>(positions.data);
  p.bad_positions = check::optional_counter(op, "bad_positions", bad_positions, q.device);
  run_on_backend(
      p, inverse ? "ref::rope_backward" : "ref::rope", [&] { ref::rope(p); },
      [&] { return cuda::rope(p, stream); });
}

}  // namespace

RopeLayout rope_layout(std::string_view name) {
  if (name == "neox") return RopeLayout::neox;
  if (name == "gptj") return RopeLayout::gptj;
  std::string given = "\"";
  given.append(name).append("\"");
  throw_arg_error("rope", "layout", "\"neox\" or \"gptj\"", given);
}

std::string_view rope_layout_name(RopeLayout layout) {
  return layout == RopeLayout::gptj ? "gptj" : "neox";
}

void rope_fill_cache(float* cache, int64_t max_position, int64_t rotary_dim, double base) {
  const int64_t half = rotary_dim / 2;
  for (int64_t p = 0; p < max_position; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle =
          static_cast<double>(p) * std::pow(base, -2.0 * static_cast<double>(i) / rotary_dim);
      cache[p * rotary_dim + i] = static_cast<float>(std::cos(angle));
      cache[p * rotary_dim + half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void rope(const TensorView& q_out, const TensorView& k_out, const TensorView& q,
          const TensorView& k, const TensorView& cos_sin_cache, const TensorView& positions,
          RopeLayout layout, int64_t rotary_dim, const TensorView& bad_positions, Stream stream) {
  run_rope("rope", false, q_out, k_out, q, k, cos_sin_cache, positions, layout, rotary_dim,
           bad_positions, stream);
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& dq_out,
                   const TensorView& dk_out, const TensorView& cos_sin_cache,
                   const TensorView& positions, RopeLayout layout, int64_t rotary_dim,
                   const TensorView& bad_positions, Stream stream) {
  run_rope("rope_backward", true, dq, dk, dq_out, dk_out, cos_sin_cache, positions, layout,
           rotary_dim, bad_positions, stream);
}

}  // namespace kiln
