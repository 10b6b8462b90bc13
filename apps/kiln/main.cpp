// The kiln command-line tool:
//   kiln list                         ops, dtypes and the backends available here
//   kiln check [op]                   each op on the best device against the reference
//   kiln bench [op] [--json FILE] [--quick] [--cpu]
//                                     every op at model shapes: checked, then timed against
//                                     the copy ceiling measured in the same run
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "harness.h"
#include "kiln/kiln.h"
#if KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace {

struct OpInfo {
  const char* name;
  const char* family;
  const char* dtypes;
  const char* summary;
};

constexpr OpInfo kOps[] = {
    {"rms_norm", "norm", "f32 bf16 f16 (weight: x's or f32)", "y = x / rms(x) * w; fwd + bwd"},
    {"add_rms_norm", "norm", "f32 bf16 f16 (weight: x's or f32)",
     "residual_out = x + r; y = rms_norm(residual_out); fwd + bwd"},
    {"layer_norm", "norm", "f32 bf16 f16 (weight/bias: x's or f32)",
     "y = (x - mean) / std * w + b; fwd + bwd"},
    {"add_layer_norm", "norm", "f32 bf16 f16 (weight/bias: x's or f32)",
     "residual_out = x + r; y = layer_norm(residual_out); fwd + bwd"},
    {"relu2", "activation", "f32 bf16 f16", "y = relu(x)^2; fwd + bwd"},
    {"swiglu", "activation", "f32 bf16 f16", "y = silu(gate) * up (or packed gate|up); fwd + bwd"},
    {"gelu_residual", "activation", "f32 bf16 f16",
     "y = GELU(h) * (g + 1), erf or tanh (or packed h|g); fwd + bwd"},
    {"bias_dropout_add", "dropout", "f32 bf16 f16",
     "out = residual + dropout(x + bias), Philox mask; fwd + bwd (dx, dbias)"},
    {"moe_sum", "moe", "f32 bf16 f16 (weights: x's or f32)",
     "out[t] = sum_j w[t, j] x[t, j], k <= 16; fwd + bwd (dx, dweights)"},
    {"sinkhorn_knopp", "mhc", "f32 bf16 f16",
     "doubly stochastic exp(logits) [B, n, n], n <= 64, fixed iterations; fwd + bwd"},
    {"mhc_pre_mix", "mhc", "f32 bf16 f16 (H: f32)",
     "h[t] = sum_i H_pre[t, i] x[t, i], n <= 8 streams; fwd + bwd (dx, dH_pre)"},
    {"mhc_post_mix", "mhc", "f32 bf16 f16 (H: f32)",
     "x'[t, j] = sum_i H_res[t, j, i] x[t, i] + H_post[t, j] y[t]; fwd + bwd in one pass"},
    {"gather_rows", "gather", "any (index i32/i64)",
     "out = src[index] by rows; out-of-range rows zero and counted"},
    {"gather_rows_pair", "gather", "any (index i32/i64)", "k[index], v[index] in one launch"},
    {"tau_tail", "attention", "f32 bf16 f16 (params: x's or f32)",
     "in place: q, v *= tanh(tok) + tau[pos, h]; bad positions counted"},
    {"kv_cache_write", "kv cache", "bf16 f16 -> same or f8e4m3 (+scale)",
     "k, v into paged caches by slot; padding skipped, bad slots counted"},
    {"rope", "rope", "f32 bf16 f16 (cache f32, positions i64)",
     "q, k rotated by cos|sin[pos], neox or gptj, partial; fwd + bwd; bad positions counted"},
    {"quantize_fp8", "quant", "f32 bf16 f16 -> f8e4m3/f8e5m2 + f32",
     "per tensor (dynamic or static), row, 1x128 group, 128x128 block; saturating"},
    {"dequantize_fp8", "quant", "f8e4m3/f8e5m2 + f32 -> f32 bf16 f16",
     "values * scale of each element's tile, any granularity"},
    {"topk", "moe", "f32 bf16 f16 -> f32 (or scores') + i32",
     "k <= 32 of E <= 1024 a row, sorted, ties to the lower index, NaN first; optional softmax"},
    {"moe_align_block_size", "moe", "i32 topk ids (+ i32 expert map), host",
     "entries grouped by local expert, padded to block_size; non-local dropped, bad ids counted"},
    {"router", "moe", "f32 bf16 f16 logits (+ f32 bias) -> f32 + i32",
     "softmax / deepseek_v3 (grouped, biased selection) / activation top-k routers"},
    {"fused_moe", "moe", "bf16 f16 (+ f32 routing weights)",
     "experts' up (activation fused), down x weight, sum over k; GEMV kernels below 512 picks, "
     "grouped wgmma GEMMs from there (Hopper); bad ids counted"},
    {"dense_router", "moe", "f32 bf16 f16 x and gate -> f32 + i32 (+ f32 logits)",
     "logits = x gate^T in fp32, then a router; T <= 16 one fused kernel, else cuBLAS + router"},
    {"hash_router", "moe", "i64 token ids, i32 table -> f32 + i32",
     "ids from a [vocab, k] table, weights 1/k; bad token ids counted"},
    {"attention_varlen", "attention", "bf16 f16 (lse f32)",
     "varlen softmax(q k^T) v, GQA, causal/window/documents/valid prefixes, soft-cap, paged KV; "
     "fwd + bwd (wgmma + TMA on Hopper)"},
    {"attention_validity", "attention mask", "i32 (+ bool/u8 slot mask), host",
     "token-prefix / slot-prefix validity -> per-sequence valid lengths, checked"},
    {"doc_window_mask", "attention mask", "i32 metadata -> bool [total_q, total_k], host",
     "dense mask of causality (bottom-right), windows, documents, valid prefixes"},
};

// The best device present: cuda:0 when this build has CUDA and a GPU is visible.
kiln::Device best_device(std::string* why) {
#if KILN_WITH_CUDA
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess && count > 0) {
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    *why = std::string(prop.name) + ", " + std::to_string(prop.multiProcessorCount) + " SMs";
    return kiln::Device::cuda(0);
  }
  *why = std::string("no CUDA device (") + cudaGetErrorString(e) + "): reference backend";
#else
  *why = "built without CUDA: reference backend";
#endif
  return kiln::Device::cpu();
}

int list() {
  std::string why;
  const kiln::Device d = best_device(&why);
  std::printf("backends: reference (cpu)%s\n", KILN_WITH_CUDA ? ", cuda (built)" : "");
  std::printf("best device here: %s — %s\n\n", d.str().c_str(), why.c_str());
  std::printf("%-16s %-10s %-40s %s\n", "op", "family", "dtypes", "what");
  for (const OpInfo& op : kOps) {
    std::printf("%-16s %-10s %-40s %s\n", op.name, op.family, op.dtypes, op.summary);
  }
  return 0;
}

bool known_op(const std::string& name) {
  for (const OpInfo& op : kOps) {
    if (name == op.name) return true;
  }
  return false;
}

int bench_or_check(bool timing, const std::vector<std::string>& args) {
  kiln::bench::Options options;
  std::string json_path, why;
  bool force_cpu = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json" && i + 1 < args.size()) {
      json_path = args[++i];
    } else if (args[i] == "--quick") {
      options.quick = true;
    } else if (args[i] == "--cpu") {
      force_cpu = true;
    } else if (known_op(args[i])) {
      options.op_filter = args[i];
    } else {
      std::fprintf(stderr, "kiln: unknown op or option '%s' (see kiln list)\n", args[i].c_str());
      return 2;
    }
  }
  options.device = force_cpu ? kiln::Device::cpu() : best_device(&why);
  if (force_cpu) why = "forced with --cpu";
  std::fprintf(stderr, "device: %s (%s)\n", options.device.str().c_str(), why.c_str());
  if (options.quick || options.device.is_cpu()) {
    options.reps = 20;
    options.warmup = 3;
  }
  if (!timing) {
    // check: the same cases, correctness only.
    int failed = 0;
    for (const auto& c : kiln::bench::all_cases(options)) {
      if (!options.op_filter.empty() && c.op != options.op_filter) continue;
      const std::string status = c.check();
      const bool ok = status.rfind("ok", 0) == 0;
      failed += !ok;
      std::printf("%-16s %-18s %s  %s\n", c.op.c_str(), c.shape.c_str(), c.direction.c_str(),
                  status.c_str());
    }
    std::printf("%s\n", failed ? "FAILED" : "all ok");
    return failed ? 1 : 0;
  }
  kiln::bench::Ceilings ceilings;
  const auto results = kiln::bench::run(options, &ceilings);
  kiln::bench::print_table(results, ceilings, options);
  if (!json_path.empty()) {
    std::ofstream(json_path) << kiln::bench::to_json(results, ceilings, options);
  }
  for (const auto& r : results) {
    if (r.check_status.rfind("ok", 0) != 0) return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string cmd = args.empty() ? "help" : args[0];
  const std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
  try {
    if (cmd == "list") return list();
    if (cmd == "check") return bench_or_check(false, rest);
    if (cmd == "bench") return bench_or_check(true, rest);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
    return 1;
  }
  std::printf(
      "usage: kiln list | kiln check [op] | kiln bench [op] [--json FILE] [--quick] [--cpu]\n");
  return cmd == "help" || cmd == "--help" ? 0 : 2;
}
