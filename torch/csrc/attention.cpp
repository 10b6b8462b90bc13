// torch.ops.kiln.attention_varlen and its backward (include/kiln/ops/attention.h): schemas, and
// CPU and CUDA impls over the kiln entry points. The forwards also return a fresh int32 [1] count
// of the sequences whose device metadata was bad (skipped, their rows not written; reading it is
// the caller's choice, as with gather_rows); on the CPU bad metadata throws instead. Fake impls and
// autograd: torch/kiln/_ops/attention.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kiln/ops/attention.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

AttentionMasks masks_of(std::string_view op, const at::Tensor& cu_q, const at::Tensor& cu_k,
                        const OptTensor& doc_q, const OptTensor& doc_k, const OptTensor& valid_q,
                        const OptTensor& valid_k, bool causal, int64_t window_left,
                        int64_t window_right) {
  AttentionMasks m;
  m.cu_seqlens_q = to_view(op, "cu_seqlens_q", cu_q);
  m.cu_seqlens_k = to_view(op, "cu_seqlens_k", cu_k);
  m.doc_ids_q = to_view(op, "doc_ids_q", doc_q);
  m.doc_ids_k = to_view(op, "doc_ids_k", doc_k);
  m.valid_q = to_view(op, "valid_q", valid_q);
  m.valid_k = to_view(op, "valid_k", valid_k);
  m.causal = causal;
  m.window_left = window_left;
  m.window_right = window_right;
  return m;
}

// The count the kernels add bad metadata to: on the GPU only (the CPU path checks on the host and
// throws).
at::Tensor bad_metadata_for(std::string_view op, AttentionMasks& m, const at::Tensor& q) {
  at::Tensor bad = at::zeros({1}, q.options().dtype(at::kInt));
  if (q.is_cuda()) m.bad_metadata = to_view(op, "bad_metadata", bad);
  return bad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_op(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cu_q,
    const at::Tensor& cu_k, const OptTensor& doc_q, const OptTensor& doc_k,
    const OptTensor& valid_q, const OptTensor& valid_k, bool causal, int64_t window_left,
    int64_t window_right, double softmax_scale, double softcap) {
  return translate_errors([&] {
    constexpr std::string_view op = "attention_varlen";
    const DeviceScope scope(q);
    const bool shaped = q.dim() == 3 && v.dim() == 3;
    at::Tensor out = at::empty(
        {shaped ? q.size(0) : 0, shaped ? q.size(1) : 0, shaped ? v.size(2) : 0}, q.options());
    at::Tensor lse =
        at::empty({shaped ? q.size(1) : 0, shaped ? q.size(0) : 0}, q.options().dtype(at::kFloat));
    AttentionMasks masks =
        masks_of(op, cu_q, cu_k, doc_q, doc_k, valid_q, valid_k, causal, window_left, window_right);
    at::Tensor bad = bad_metadata_for(op, masks, q);
    kiln::attention_varlen(to_view(op, "out", out), to_view(op, "lse", lse), to_view(op, "q", q),
                           to_view(op, "k", k), to_view(op, "v", v), masks,
                           {softmax_scale, softcap}, scope.stream());
    return std::make_tuple(out, lse, bad);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_backward_op(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& cu_q, const at::Tensor& cu_k,
    const OptTensor& doc_q, const OptTensor& doc_k, const OptTensor& valid_q,
    const OptTensor& valid_k, bool causal, int64_t window_left, int64_t window_right,
    double softmax_scale, double softcap) {
  return translate_errors([&] {
    constexpr std::string_view op = "attention_varlen_backward";
    const DeviceScope scope(q);
    at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
               dv = at::empty(v.sizes(), v.options());
    kiln::attention_varlen_backward(
        to_view(op, "dq", dq), to_view(op, "dk", dk), to_view(op, "dv", dv),
        to_view(op, "dout", dout), to_view(op, "q", q), to_view(op, "k", k), to_view(op, "v", v),
        to_view(op, "out", out), to_view(op, "lse", lse),
        masks_of(op, cu_q, cu_k, doc_q, doc_k, valid_q, valid_k, causal, window_left, window_right),
        {softmax_scale, softcap}, scope.stream());
    return std::make_tuple(dq, dk, dv);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_varlen_paged_op(
    const at::Tensor& q, const at::Tensor& key_cache, const at::Tensor& value_cache,
    const at::Tensor& block_table, const at::Tensor& cu_q, const at::Tensor& cu_k,
    const OptTensor& valid_q, const OptTensor& valid_k, bool causal, int64_t window_left,
    int64_t window_right, double softmax_scale, double softcap) {
  return translate_errors([&] {
    constexpr std::string_view op = "attention_varlen_paged";
    const DeviceScope scope(q);
    const bool shaped = q.dim() == 3 && value_cache.dim() == 4;
    at::Tensor out = at::empty(
        {shaped ? q.size(0) : 0, shaped ? q.size(1) : 0, shaped ? value_cache.size(3) : 0},
        q.options());
    at::Tensor lse =
        at::empty({shaped ? q.size(1) : 0, shaped ? q.size(0) : 0}, q.options().dtype(at::kFloat));
    AttentionMasks masks = masks_of(op, cu_q, cu_k, std::nullopt, std::nullopt, valid_q, valid_k,
                                    causal, window_left, window_right);
    at::Tensor bad = bad_metadata_for(op, masks, q);
    kiln::attention_varlen_paged(
        to_view(op, "out", out), to_view(op, "lse", lse), to_view(op, "q", q),
        to_view(op, "key_cache", key_cache), to_view(op, "value_cache", value_cache),
        to_view(op, "block_table", block_table), masks, {softmax_scale, softcap}, scope.stream());
    return std::make_tuple(out, lse, bad);
  });
}

void impl_attention_ops(torch::Library& m) {
  m.impl("attention_varlen", &attention_varlen_op);
  m.impl("attention_varlen_paged", &attention_varlen_paged_op);
  m.impl("attention_varlen_backward", &attention_varlen_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.attention");
  // (out [total_q, Hq, Dv], lse f32 [Hq, total_q], bad-metadata count int32 [1]) of packed
  // varlen attention.
  m.def(
      "attention_varlen(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
      "Tensor? doc_ids_q, Tensor? doc_ids_k, Tensor? valid_q, Tensor? valid_k, bool causal, "
      "int window_left, int window_right, float softmax_scale, float softcap) -> (Tensor, "
      "Tensor, Tensor)");
  // The forward over a paged KV cache (no autograd: inference); the count includes bad page ids.
  m.def(
      "attention_varlen_paged(Tensor q, Tensor key_cache, Tensor value_cache, Tensor block_table, "
      "Tensor cu_seqlens_q, Tensor cu_seqlens_k, Tensor? valid_q, Tensor? valid_k, bool causal, "
      "int window_left, int window_right, float softmax_scale, float softcap) -> (Tensor, "
      "Tensor, Tensor)");
  // (dq, dk, dv) of sum(out * dout).
  m.def(
      "attention_varlen_backward(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor "
      "lse, Tensor cu_seqlens_q, Tensor cu_seqlens_k, Tensor? doc_ids_q, Tensor? doc_ids_k, "
      "Tensor? valid_q, Tensor? valid_k, bool causal, int window_left, int window_right, float "
      "softmax_scale, float softcap) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_attention_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_attention_ops(m);
}
#endif
