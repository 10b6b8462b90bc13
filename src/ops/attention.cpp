// Entry points of dense varlen attention: validate everything, then run the CUDA kernels or the
// float64 reference on the CPU.
#include "kiln/ops/attention.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/check.h"
#include "core/element.h"
#include "cuda/attention/attention_launch.h"
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

struct HeadDims {
  int64_t hq, hkv, d, dv;
};

// q, k, v and the options (everything but the sequence metadata).
HeadDims check_heads(std::string_view op, const TensorView& q, const TensorView& k,
                     const TensorView& v, const AttentionOptions& o) {
  heads_tensor(op, "q", q, q);
  heads_tensor(op, "k", k, q);
  heads_tensor(op, "v", v, q);
  const HeadDims h{q.size(1), k.size(1), q.size(2), v.size(2)};
  expect_sizes(op, "k", k, k.size(0), h.hkv, h.d);
  expect_sizes(op, "v", v, k.size(0), h.hkv, h.dv);
  if (h.hkv < 1 || h.hq % h.hkv != 0) {
    throw_arg_error(op, "q",
                    "a head count that is a multiple of k's (" + std::to_string(h.hkv) + ")",
                    std::to_string(h.hq) + " heads");
  }
  const bool supported =
      (h.d == h.dv && (h.d == 64 || h.d == 128 || h.d == 256)) || (h.d == 192 && h.dv == 128);
  if (!supported) {
    throw_arg_error(op, "q", "head dims D = Dv in {64, 128, 256} or D = 192 with Dv = 128",
                    "D = " + std::to_string(h.d) + ", Dv = " + std::to_string(h.dv));
  }
  if (!(o.softmax_scale > 0) || !std::isfinite(o.softmax_scale)) {
    throw_arg_error(op, "softmax_scale", "a finite value > 0", std::to_string(o.softmax_scale));
  }
  if (!(o.softcap >= 0) || !std::isfinite(o.softcap)) {
    throw_arg_error(op, "softcap", "a finite value >= 0 (0: none)", std::to_string(o.softcap));
  }
  return h;
}

// The validated problem in the reference's terms (metadata read and checked on the host).
ref::AttentionShape host_shape(std::string_view op, const TensorView& q, const TensorView& k,
                               const HeadDims& h, const AttentionMasks& m,
                               const AttentionOptions& o) {
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
  s.hq = h.hq;
  s.hkv = h.hkv;
  s.d = h.d;
  s.dv = h.dv;
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

// The forward's inputs and outputs (out [total_q, Hq, Dv], lse [Hq, total_q]); their head dims.
HeadDims check_forward(std::string_view op, const TensorView& out, const TensorView& lse,
                       const TensorView& q, const TensorView& k, const TensorView& v,
                       const AttentionOptions& options) {
  check::present(op, "out", out);
  check::present(op, "lse", lse);
  const HeadDims h = check_heads(op, q, k, v, options);
  heads_tensor(op, "out", out, q);
  expect_sizes(op, "out", out, q.size(0), h.hq, h.dv);
  check_lse(op, lse, q);
  return h;
}

// An int32 vector on the device (n < 0: any length >= 1), contiguous; returns its length.
int64_t device_int32(std::string_view op, std::string_view arg, const TensorView& t, int64_t n,
                     const Device& device) {
  check::present(op, arg, t);
  check::dtype_in(op, arg, t, {DType::i32});
  check::same_device(op, arg, t, device);
  if (t.rank != 1 || (n >= 0 && t.size(0) != n) || t.size(0) < 1) {
    throw_arg_error(op, arg, n >= 0 ? "int32 [" + std::to_string(n) + "]" : "int32 [B + 1]",
                    t.describe());
  }
  if (t.size(0) > 1 && t.stride(0) != 1) {
    throw_arg_error(op, arg, "a contiguous vector on the GPU",
                    "stride " + std::to_string(t.stride(0)));
  }
  return t.size(0);
}

// The CUDA kernels move 16-byte chunks of rows: data and token/head strides 16-byte aligned.
void rows_aligned16(std::string_view op, std::string_view arg, const TensorView& t) {
  const auto address = reinterpret_cast<uintptr_t>(t.data);
  const int64_t elem = static_cast<int64_t>(dtype_size(t.dtype));
  for (int dim = 0; dim < 2; ++dim) {
    if (t.size(dim) > 1 && (t.stride(dim) * elem) % 16 != 0) {
      throw_arg_error(
          op, arg, "token and head strides that are multiples of 16 bytes on the GPU",
          "stride(" + std::to_string(dim) + ") = " + std::to_string(t.stride(dim)) + " elements");
    }
  }
  if (address % 16 != 0) {
    throw_arg_error(op, arg, "a 16-byte aligned data pointer on the GPU",
                    "an address = " + std::to_string(address % 16) + " mod 16");
  }
}

cuda::HeadRows heads_of(const TensorView& t) {
  return {t.data, t.stride(0), t.stride(1)};
}

// The launch arguments of a CUDA problem. Metadata values live on the device: the kernel checks
// them and counts bad sequences into masks.bad_metadata (they are skipped, never dereferenced
// past the tensors).
cuda::AttentionForwardArgs device_args(std::string_view op, const TensorView& out,
                                       const TensorView& lse, const TensorView& q,
                                       const TensorView& k, const TensorView& v, const HeadDims& h,
                                       const AttentionMasks& m, const AttentionOptions& o) {
  cuda::AttentionForwardArgs a;
  const int64_t batch = device_int32(op, "cu_seqlens_q", m.cu_seqlens_q, -1, q.device) - 1;
  device_int32(op, "cu_seqlens_k", m.cu_seqlens_k, batch + 1, q.device);
  if (m.valid_q.defined()) device_int32(op, "valid_q", m.valid_q, batch, q.device);
  if (m.valid_k.defined()) device_int32(op, "valid_k", m.valid_k, batch, q.device);
  if (m.doc_ids_q.defined() != m.doc_ids_k.defined()) {
    throw_arg_error(op, m.doc_ids_q.defined() ? "doc_ids_k" : "doc_ids_q",
                    "both document id tensors or neither", "only one");
  }
  if (m.doc_ids_q.defined()) {
    device_int32(op, "doc_ids_q", m.doc_ids_q, q.size(0), q.device);
    device_int32(op, "doc_ids_k", m.doc_ids_k, k.size(0), q.device);
  }
  if (m.bad_metadata.defined()) device_int32(op, "bad_metadata", m.bad_metadata, 1, q.device);
  if (h.hq > 65535)
    throw_arg_error(op, "q", "at most 65535 heads on the GPU", std::to_string(h.hq));
  for (const auto& [arg, t] :
       {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}, std::pair{"out", &out}}) {
    rows_aligned16(op, arg, *t);
  }
  auto ptr = [](const TensorView& t) {
    return t.defined() ? static_cast<const int32_t*>(t.data) : nullptr;
  };
  a.q = heads_of(q);
  a.k = heads_of(k);
  a.v = heads_of(v);
  a.out = heads_of(out);
  a.lse = static_cast<float*>(lse.data);
  a.lse_head = lse.stride(0);
  a.lse_token = lse.stride(1);
  a.cu_q = ptr(m.cu_seqlens_q);
  a.cu_k = ptr(m.cu_seqlens_k);
  a.doc_q = ptr(m.doc_ids_q);
  a.doc_k = ptr(m.doc_ids_k);
  a.valid_q = ptr(m.valid_q);
  a.valid_k = ptr(m.valid_k);
  a.bad_metadata = m.bad_metadata.defined() ? static_cast<int32_t*>(m.bad_metadata.data) : nullptr;
  a.total_q = q.size(0);
  a.total_k = k.size(0);
  a.batch = static_cast<int>(batch);
  a.hq = static_cast<int>(h.hq);
  a.hkv = static_cast<int>(h.hkv);
  a.head_dim = static_cast<int>(h.d);
  a.head_dim_v = static_cast<int>(h.dv);
  a.dtype = q.dtype;
  a.rules = {m.causal, m.window_left, m.window_right};
  constexpr double kLog2e = 1.4426950408889634;
  a.scale_log2 = static_cast<float>(o.softmax_scale * kLog2e);
  if (o.softcap > 0) {
    a.softcap_in = static_cast<float>(o.softmax_scale / o.softcap);
    a.softcap_log2 = static_cast<float>(o.softcap * kLog2e);
  }
  return a;
}

// Runs a CUDA launcher (the metadata stays on the device: no host-side reference path here)
// and records its receipt.
template <typename Launch>
void run_cuda(std::string_view op, const Device& device, Launch&& launch) {
  const struct {
    std::string op;
    Device device;
  } problem{std::string(op), device};
  run_on_backend(
      problem, "", [] {}, std::forward<Launch>(launch));
}

}  // namespace

void attention_varlen(const TensorView& out, const TensorView& lse, const TensorView& q,
                      const TensorView& k, const TensorView& v, const AttentionMasks& masks,
                      const AttentionOptions& options, Stream stream) {
  constexpr std::string_view op = "attention_varlen";
  const HeadDims h = check_forward(op, out, lse, q, k, v, options);
  if (q.device.is_cuda()) {
    const cuda::AttentionForwardArgs args = device_args(op, out, lse, q, k, v, h, masks, options);
    run_cuda(op, q.device, [&] { return cuda::attention_forward(args, stream); });
    return;
  }
  const ref::AttentionShape s = host_shape(op, q, k, h, masks, options);
  std::vector<double> o(out.numel()), l(s.hq * s.total_q());
  ref::attention_forward(s, to_doubles(q).data(), to_doubles(k).data(), to_doubles(v).data(),
                         o.data(), l.data());
  from_doubles(o, out);
  for (int64_t hd = 0; hd < s.hq; ++hd) {
    for (int64_t t = 0; t < s.total_q(); ++t) {
      static_cast<float*>(lse.data)[hd * lse.stride(0) + t * lse.stride(1)] =
          static_cast<float>(l[hd * s.total_q() + t]);
    }
  }
  record_receipt({std::string(op), "reference", "ref::attention_forward", ""});
}

void attention_varlen_paged(const TensorView& out, const TensorView& lse, const TensorView& q,
                            const TensorView& key_cache, const TensorView& value_cache,
                            const TensorView& block_table, const AttentionMasks& masks,
                            const AttentionOptions& options, Stream stream) {
  constexpr std::string_view op = "attention_varlen_paged";
  check::present(op, "key_cache", key_cache);
  check::present(op, "value_cache", value_cache);
  for (const auto& [arg, t] :
       {std::pair{"key_cache", &key_cache}, std::pair{"value_cache", &value_cache}}) {
    if (t->rank != 4) {
      throw_arg_error(op, arg, "rank 4 [num_pages, page_size, Hkv, D]", t->shape_str());
    }
    if (t->stride(0) != t->size(1) * t->stride(1)) {
      throw_arg_error(op, arg,
                      "pages of page_size consecutive slots (stride(0) = page_size * "
                      "stride(1))",
                      "stride(0) = " + std::to_string(t->stride(0)));
    }
  }
  const int64_t pages = key_cache.size(0), page_size = key_cache.size(1);
  if (value_cache.size(0) != pages || value_cache.size(1) != page_size ||
      value_cache.size(2) != key_cache.size(2)) {
    throw_arg_error(op, "value_cache", "the key cache's [num_pages, page_size, Hkv]",
                    value_cache.shape_str());
  }
  if (page_size < 16 || (page_size & (page_size - 1)) != 0) {
    throw_arg_error(op, "key_cache", "a page size that is a power of two >= 16",
                    std::to_string(page_size));
  }
  if (masks.doc_ids_q.defined() || masks.doc_ids_k.defined()) {
    throw_arg_error(op, "doc_ids", "no document ids with a paged cache", "document ids");
  }
  // The caches as [num_pages * page_size, Hkv, D] rows: slot r of page p is row p * page_size + r.
  auto rows = [&](const TensorView& c) {
    const int64_t sizes[] = {pages * page_size, c.size(2), c.size(3)};
    const int64_t strides[] = {c.stride(1), c.stride(2), c.stride(3)};
    return TensorView(c.data, c.dtype, c.device, sizes, strides);
  };
  const TensorView k = rows(key_cache), v = rows(value_cache);
  const HeadDims h = check_forward(op, out, lse, q, k, v, options);
  check::present(op, "block_table", block_table);
  check::dtype_in(op, "block_table", block_table, {DType::i32});
  check::same_device(op, "block_table", block_table, q.device);
  const int64_t batch = masks.cu_seqlens_q.defined() ? masks.cu_seqlens_q.numel() - 1 : -1;
  if (block_table.rank != 2 || block_table.size(0) != batch || block_table.size(1) < 1 ||
      (block_table.size(1) > 1 && block_table.stride(1) != 1)) {
    throw_arg_error(
        op, "block_table",
        "int32 [B, max_pages] = [" + std::to_string(batch) + ", >= 1] with contiguous rows",
        block_table.describe());
  }
  if (q.device.is_cuda()) {
    AttentionMasks m = masks;
    cuda::AttentionForwardArgs a = device_args(op, out, lse, q, k, v, h, m, options);
    a.block_table = static_cast<const int32_t*>(block_table.data);
    a.table_stride = block_table.stride(0);
    a.max_pages = static_cast<int>(block_table.size(1));
    a.num_pages = pages;
    a.page_shift = std::countr_zero(static_cast<uint64_t>(page_size));
    a.k_page = key_cache.stride(0);
    a.v_page = value_cache.stride(0);
    a.total_k = int64_t{1} << 31;  // keys are not packed: cu_seqlens_k gives lengths only
    run_cuda(op, q.device, [&] { return cuda::attention_forward(a, stream); });
    return;
  }
  // CPU: gather each sequence's keys into packed K/V (bad page ids are errors) and run the
  // contiguous reference.
  const std::vector<int32_t> cu_k = meta::seqlens(op, "cu_seqlens_k", masks.cu_seqlens_k);
  if (static_cast<int64_t>(cu_k.size()) != batch + 1) {
    throw_arg_error(op, "cu_seqlens_k", "B + 1 = " + std::to_string(batch + 1) + " offsets",
                    std::to_string(cu_k.size()));
  }
  const int64_t total_k = cu_k.back(), es = static_cast<int64_t>(dtype_size(q.dtype));
  std::vector<char> kp(total_k * h.hkv * h.d * es), vp(total_k * h.hkv * h.dv * es);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < cu_k[b + 1] - cu_k[b]; ++j) {
      const int64_t p = j / page_size;
      if (p >= block_table.size(1)) {
        throw_arg_error(op, "block_table", "enough pages for sequence " + std::to_string(b),
                        std::to_string(block_table.size(1)) + " pages for " +
                            std::to_string(cu_k[b + 1] - cu_k[b]) + " keys");
      }
      const int32_t id = static_cast<const int32_t*>(
          block_table.data)[b * block_table.stride(0) + p * block_table.stride(1)];
      if (id < 0 || id >= pages) {
        throw_arg_error(op, "block_table", "page ids in [0, " + std::to_string(pages) + ")",
                        "block_table[" + std::to_string(b) + "][" + std::to_string(p) +
                            "] = " + std::to_string(id));
      }
      const int64_t row = id * page_size + j % page_size, dst = cu_k[b] + j;
      for (int64_t hh = 0; hh < h.hkv; ++hh) {
        std::memcpy(&kp[(dst * h.hkv + hh) * h.d * es],
                    static_cast<const char*>(k.data) + (row * k.stride(0) + hh * k.stride(1)) * es,
                    h.d * es);
        std::memcpy(&vp[(dst * h.hkv + hh) * h.dv * es],
                    static_cast<const char*>(v.data) + (row * v.stride(0) + hh * v.stride(1)) * es,
                    h.dv * es);
      }
    }
  }
  const TensorView kc(kp.data(), q.dtype, Device::cpu(), {total_k, h.hkv, h.d}),
      vc(vp.data(), q.dtype, Device::cpu(), {total_k, h.hkv, h.dv});
  attention_varlen(out, lse, q, kc, vc, masks, options, stream);
  record_receipt({std::string(op), "reference", "gather pages + ref::attention_forward", ""});
}

void attention_varlen_backward(const TensorView& dq, const TensorView& dk, const TensorView& dv,
                               const TensorView& dout, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const TensorView& lse,
                               const AttentionMasks& masks, const AttentionOptions& options,
                               Stream stream) {
  constexpr std::string_view op = "attention_varlen_backward";
  const HeadDims h = check_heads(op, q, k, v, options);
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
  expect_sizes(op, "out", out, q.size(0), h.hq, h.dv);
  check_lse(op, lse, q);
  if (q.device.is_cuda()) {
    cuda::AttentionBackwardArgs a;
    a.f = device_args(op, out, lse, q, k, v, h, masks, options);
    for (const auto& [arg, t] : {std::pair{"dout", &dout}, std::pair{"dq", &dq},
                                 std::pair{"dk", &dk}, std::pair{"dv", &dv}}) {
      rows_aligned16(op, arg, *t);
    }
    a.dout = heads_of(dout);
    a.dq = heads_of(dq);
    a.dk = heads_of(dk);
    a.dv = heads_of(dv);
    a.softmax_scale = static_cast<float>(options.softmax_scale);
    run_cuda(op, q.device, [&] { return cuda::attention_backward(a, stream); });
    return;
  }
  const ref::AttentionShape s = host_shape(op, q, k, h, masks, options);
  std::vector<double> gq(q.numel()), gk(k.numel()), gv(v.numel());
  ref::attention_backward(s, to_doubles(q).data(), to_doubles(k).data(), to_doubles(v).data(),
                          to_doubles(dout).data(), gq.data(), gk.data(), gv.data());
  from_doubles(gq, dq);
  from_doubles(gk, dk);
  from_doubles(gv, dv);
  record_receipt({std::string(op), "reference", "ref::attention_backward", ""});
}

}  // namespace kiln
