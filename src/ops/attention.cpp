// Entry points of dense varlen attention: validate everything, then run the float64 reference on
// the CPU. CUDA tensors are refused with a message until the kernels land (issue 4).
#include "kiln/ops/attention.h"

#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/element.h"
#include "kiln/core/receipt.h"
#include "ops/attention_metadata.h"
#include "ref/attention.h"

namespace kiln {
namespace {

namespace meta = attention_metadata;

// [rows, heads, dim] of q's dtype and device, the last dim contiguous.
void heads_tensor(std::string_view op, std::string_view arg, const TensorView& t,
                  const TensorView& like_dtype) {
  check::present(op, arg, t);
  if (t.rank != 3) throw_arg_error(op, arg, "rank 3 [tokens, heads, dim]", t.shape_str());
  if (&t == &like_dtype) {
    check::dtype_in(op, arg, t, {DType::bf16, DType::f16});
  } else {
    check::same_dtype(op, arg, t, like_dtype.dtype);
    check::same_device(op, arg, t, like_dtype.device);
  }
  if (t.size(2) > 1 && t.stride(2) != 1) {
    throw_arg_error(op, arg, "a contiguous last dim (stride 1)",
                    "stride " + std::to_string(t.stride(2)));
  }
}

void expect_sizes(std::string_view op, std::string_view arg, const TensorView& t, int64_t rows,
                  int64_t heads, int64_t dim) {
  if (t.size(0) != rows || t.size(1) != heads || t.size(2) != dim) {
    throw_arg_error(op, arg,
                    "shape [" + std::to_string(rows) + ", " + std::to_string(heads) + ", " +
                        std::to_string(dim) + "]",
                    t.shape_str());
  }
}

// The validated problem in the reference's terms.
ref::AttentionShape make_shape(std::string_view op, const TensorView& q, const TensorView& k,
                               const TensorView& v, const AttentionMasks& m,
                               const AttentionOptions& o) {
  heads_tensor(op, "q", q, q);
  heads_tensor(op, "k", k, q);
  heads_tensor(op, "v", v, q);
  const int64_t hq = q.size(1), hkv = k.size(1), d = q.size(2), dv = v.size(2);
  expect_sizes(op, "k", k, k.size(0), hkv, d);
  expect_sizes(op, "v", v, k.size(0), hkv, dv);
  if (hkv < 1 || hq % hkv != 0) {
    throw_arg_error(op, "q", "a head count that is a multiple of k's (" + std::to_string(hkv) + ")",
                    std::to_string(hq) + " heads");
  }
  const bool supported = (d == dv && (d == 64 || d == 128 || d == 256)) || (d == 192 && dv == 128);
  if (!supported) {
    throw_arg_error(op, "q", "head dims D = Dv in {64, 128, 256} or D = 192 with Dv = 128",
                    "D = " + std::to_string(d) + ", Dv = " + std::to_string(dv));
  }
  if (!(o.softmax_scale > 0) || !std::isfinite(o.softmax_scale)) {
    throw_arg_error(op, "softmax_scale", "a finite value > 0", std::to_string(o.softmax_scale));
  }
  if (!(o.softcap >= 0) || !std::isfinite(o.softcap)) {
    throw_arg_error(op, "softcap", "a finite value >= 0 (0: none)", std::to_string(o.softcap));
  }
  if (q.device.is_cuda()) {
    throw Error(std::string(op) +
                ": no CUDA kernel in this build yet (issue 4); CPU tensors run the float64 "
                "reference");
  }
  ref::AttentionShape s;
  s.cu_q = meta::seqlens(op, "cu_seqlens_q", m.cu_seqlens_q);
  s.cu_k = meta::seqlens(op, "cu_seqlens_k", m.cu_seqlens_k);
  if (s.cu_q.size() != s.cu_k.size()) {
    throw_arg_error(op, "cu_seqlens_k", "B + 1 = " + std::to_string(s.cu_q.size()) + " offsets",
                    std::to_string(s.cu_k.size()));
  }
  if (s.cu_q.back() != q.size(0)) {
    throw_arg_error(op, "cu_seqlens_q", "to end at total_q = " + std::to_string(q.size(0)),
                    std::to_string(s.cu_q.back()));
  }
  if (s.cu_k.back() != k.size(0)) {
    throw_arg_error(op, "cu_seqlens_k", "to end at total_k = " + std::to_string(k.size(0)),
                    std::to_string(s.cu_k.back()));
  }
  if (m.valid_q.defined()) s.valid_q = meta::valid_lengths(op, "valid_q", m.valid_q, s.cu_q);
  if (m.valid_k.defined()) s.valid_k = meta::valid_lengths(op, "valid_k", m.valid_k, s.cu_k);
  if (m.doc_ids_q.defined() != m.doc_ids_k.defined()) {
    throw_arg_error(op, m.doc_ids_q.defined() ? "doc_ids_k" : "doc_ids_q",
                    "both document id tensors or neither", "only one");
  }
  if (m.doc_ids_q.defined()) {
    s.doc_q = meta::int32_vector(op, "doc_ids_q", m.doc_ids_q, q.size(0));
    s.doc_k = meta::int32_vector(op, "doc_ids_k", m.doc_ids_k, k.size(0));
  }
  s.hq = hq;
  s.hkv = hkv;
  s.d = d;
  s.dv = dv;
  s.scale = o.softmax_scale;
  s.softcap = o.softcap;
  s.rules = {m.causal, m.window_left, m.window_right};
  return s;
}

// A [rows, heads, dim] view as dense float64, and back (rounded once to the view's dtype).
std::vector<double> to_doubles(const TensorView& t) {
  std::vector<double> out(t.numel());
  size_t n = 0;
  for (int64_t r = 0; r < t.size(0); ++r) {
    for (int64_t h = 0; h < t.size(1); ++h) {
      for (int64_t e = 0; e < t.size(2); ++e) {
        out[n++] = element::load(t.data, t.dtype, r * t.stride(0) + h * t.stride(1) + e);
      }
    }
  }
  return out;
}

void from_doubles(const std::vector<double>& in, const TensorView& t) {
  size_t n = 0;
  for (int64_t r = 0; r < t.size(0); ++r) {
    for (int64_t h = 0; h < t.size(1); ++h) {
      for (int64_t e = 0; e < t.size(2); ++e) {
        element::store(t.data, t.dtype, r * t.stride(0) + h * t.stride(1) + e, in[n++]);
      }
    }
  }
}

void check_lse(std::string_view op, const TensorView& lse, const TensorView& q) {
  check::present(op, "lse", lse);
  check::dtype_in(op, "lse", lse, {DType::f32});
  check::same_device(op, "lse", lse, q.device);
  if (lse.rank != 2 || lse.size(0) != q.size(1) || lse.size(1) != q.size(0)) {
    throw_arg_error(op, "lse",
                    "shape [Hq, total_q] = [" + std::to_string(q.size(1)) + ", " +
                        std::to_string(q.size(0)) + "]",
                    lse.shape_str());
  }
}

}  // namespace

void attention_varlen(const TensorView& out, const TensorView& lse, const TensorView& q,
                      const TensorView& k, const TensorView& v, const AttentionMasks& masks,
                      const AttentionOptions& options, Stream) {
  constexpr std::string_view op = "attention_varlen";
  check::present(op, "out", out);
  check::present(op, "lse", lse);
  const ref::AttentionShape s = make_shape(op, q, k, v, masks, options);
  heads_tensor(op, "out", out, q);
  expect_sizes(op, "out", out, q.size(0), s.hq, s.dv);
  check_lse(op, lse, q);
  std::vector<double> o(out.numel()), l(s.hq * s.total_q());
  ref::attention_forward(s, to_doubles(q).data(), to_doubles(k).data(), to_doubles(v).data(),
                         o.data(), l.data());
  from_doubles(o, out);
  for (int64_t h = 0; h < s.hq; ++h) {
    for (int64_t t = 0; t < s.total_q(); ++t) {
      static_cast<float*>(lse.data)[h * lse.stride(0) + t * lse.stride(1)] =
          static_cast<float>(l[h * s.total_q() + t]);
    }
  }
  record_receipt({std::string(op), "reference", "ref::attention_forward", ""});
}

void attention_varlen_backward(const TensorView& dq, const TensorView& dk, const TensorView& dv,
                               const TensorView& dout, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const TensorView& lse,
                               const AttentionMasks& masks, const AttentionOptions& options,
                               Stream) {
  constexpr std::string_view op = "attention_varlen_backward";
  const ref::AttentionShape s = make_shape(op, q, k, v, masks, options);
  struct Like {
    const char* name;
    const TensorView& t;
    const TensorView& like;
  };
  for (const Like& g : {Like{"dq", dq, q}, Like{"dk", dk, k}, Like{"dv", dv, v},
                        Like{"out", out, out}, Like{"dout", dout, out}}) {
    heads_tensor(op, g.name, g.t, q);
    expect_sizes(op, g.name, g.t, g.like.size(0), g.like.size(1), g.like.size(2));
  }
  expect_sizes(op, "out", out, q.size(0), s.hq, s.dv);
  check_lse(op, lse, q);
  std::vector<double> gq(q.numel()), gk(k.numel()), gv(v.numel());
  ref::attention_backward(s, to_doubles(q).data(), to_doubles(k).data(), to_doubles(v).data(),
                          to_doubles(dout).data(), gq.data(), gk.data(), gv.data());
  from_doubles(gq, dq);
  from_doubles(gk, dk);
  from_doubles(gv, dv);
  record_receipt({std::string(op), "reference", "ref::attention_backward", ""});
}

}  // namespace kiln
