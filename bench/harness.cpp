#include "harness.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "buffer.h"
#include "kiln/core/error.h"
#if KILN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace kiln::bench {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Enough input sets that one pass over all of them exceeds 2x the 50 MB L2 of an H100.
int rotation_sets(double bytes_per_set) {
  constexpr double kTwiceL2 = 2 * 50e6;
  return static_cast<int>(std::clamp(kTwiceL2 / std::max(bytes_per_set, 1.0) + 1, 1.0, 8.0));
}

}  // namespace

double time_median_ms(const Device& device, const std::function<void(int, Stream)>& fn, int sets,
                      int warmup, int reps) {
  std::vector<double> times;
  if (device.is_cpu()) {
    for (int i = 0; i < warmup; ++i) fn(i % sets, nullptr);
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn(i % sets, nullptr);
      times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(times);
  }
#if KILN_WITH_CUDA
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  for (int i = 0; i < warmup; ++i) fn(i % sets, stream);
  std::vector<cudaEvent_t> events(2 * reps);
  for (auto& e : events) cudaEventCreate(&e);
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(events[2 * i], stream);
    fn(i % sets, stream);
    cudaEventRecord(events[2 * i + 1], stream);
  }
  cudaStreamSynchronize(stream);
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, events[2 * i], events[2 * i + 1]);
    times.push_back(ms);
  }
  for (auto& e : events) cudaEventDestroy(e);
  cudaStreamDestroy(stream);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw Error(std::string("bench: ") + cudaGetErrorString(err));
#endif
  return median(times);
}

std::vector<Case> all_cases(const Options& options) {
  std::vector<Case> cases = norm_cases(options);
  for (Case& c : activation_cases(options)) cases.push_back(std::move(c));
  for (Case& c : dropout_cases(options)) cases.push_back(std::move(c));
  for (Case& c : moe_sum_cases(options)) cases.push_back(std::move(c));
  for (Case& c : mhc_cases(options)) cases.push_back(std::move(c));
  for (Case& c : mhc_mix_cases(options)) cases.push_back(std::move(c));
  for (Case& c : gather_cases(options)) cases.push_back(std::move(c));
  for (Case& c : cache_cases(options)) cases.push_back(std::move(c));
  for (Case& c : rope_cases(options)) cases.push_back(std::move(c));
  for (Case& c : tau_cases(options)) cases.push_back(std::move(c));
  for (Case& c : topk_cases(options)) cases.push_back(std::move(c));
  for (Case& c : router_cases(options)) cases.push_back(std::move(c));
  for (Case& c : moe_align_cases(options)) cases.push_back(std::move(c));
  for (Case& c : moe_cases(options)) cases.push_back(std::move(c));
  for (Case& c : quantize_cases(options)) cases.push_back(std::move(c));
  for (Case& c : attention_cases(options)) cases.push_back(std::move(c));
  return cases;
}

double measure_copy_bandwidth(const Device& device, int reps) {
  const size_t bytes = device.is_cpu() ? (size_t{256} << 20) : (size_t{1} << 30);
  Buffer a(device, bytes), b(device, bytes);
  a.fill_nan();
  b.fill_nan();
  auto copy = [&](int, Stream stream) {
#if KILN_WITH_CUDA
    if (device.is_cuda()) {
      cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream);
      return;
    }
#endif
    (void)stream;
    std::copy_n(static_cast<const char*>(a.data()), bytes, static_cast<char*>(b.data()));
  };
  const double ms = time_median_ms(device, copy, 1, 3, reps);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

std::vector<Result> run(const Options& options, Ceilings* ceilings) {
  std::vector<Case> cases = all_cases(options);
  if (!options.op_filter.empty()) {
    std::erase_if(cases, [&](const Case& c) { return c.op != options.op_filter; });
    if (cases.empty())
      throw Error("kiln bench: no benchmark cases for op '" + options.op_filter + "'");
  }
  std::fprintf(stderr, "measuring the copy ceiling on %s ...\n", options.device.str().c_str());
  ceilings->copy_gbps = measure_copy_bandwidth(options.device, options.quick ? 10 : 30);
  std::fprintf(stderr, "copy: %.0f GB/s\n", ceilings->copy_gbps);
  if (std::any_of(cases.begin(), cases.end(), [](const Case& c) { return c.flops > 0; })) {
    ceilings->gemm_tflops = measure_gemm_tflops(options.device, options.quick ? 5 : 20);
    if (ceilings->gemm_tflops > 0) {
      std::fprintf(stderr, "dense bf16 GEMM: %.0f TFLOP/s\n", ceilings->gemm_tflops);
    }
  }
  std::vector<Result> results;
  int index = 0;
  for (Case& c : cases) {
    ++index;
    std::fprintf(stderr, "[%2d/%zu] %-16s %-18s %s  checking...", index, cases.size(), c.op.c_str(),
                 c.shape.c_str(), c.direction.c_str());
    std::fflush(stderr);
    Result r{c, c.check(), "", 0, 0, 0, 0, 0};
    if (r.check_status.rfind("ok", 0) != 0) {
      std::fprintf(stderr, " CHECK FAILED: %s\n", r.check_status.c_str());
      results.push_back(r);
      continue;
    }
    std::fprintf(stderr, " ok, timing...");
    std::fflush(stderr);
    const int sets = rotation_sets(c.bytes);
    auto fn = c.prepare(sets);
    r.median_ms = time_median_ms(options.device, fn, sets, options.warmup, options.reps);
    r.variant = c.variant();
    r.gbps = c.bytes / (r.median_ms * 1e-3) / 1e9;
    r.ceiling_share = r.gbps / ceilings->copy_gbps;
    if (c.flops > 0) {
      r.tflops = c.flops / (r.median_ms * 1e-3) / 1e12;
      r.gemm_share = ceilings->gemm_tflops > 0 ? r.tflops / ceilings->gemm_tflops : 0;
      std::fprintf(stderr, " %.4f ms  %.1f TFLOP/s  %.0f%% of GEMM\n", r.median_ms, r.tflops,
                   100 * r.gemm_share);
    } else {
      std::fprintf(stderr, " %.4f ms  %.0f GB/s  %.0f%% of copy\n", r.median_ms, r.gbps,
                   100 * r.ceiling_share);
    }
    results.push_back(std::move(r));
  }
  return results;
}

void print_table(const std::vector<Result>& results, const Ceilings& ceilings,
                 const Options& options) {
  std::printf("\nkiln bench on %s: device-to-device copy %.0f GB/s", options.device.str().c_str(),
              ceilings.copy_gbps);
  if (ceilings.gemm_tflops > 0) std::printf(", dense bf16 GEMM %.0f TFLOP/s", ceilings.gemm_tflops);
  std::printf(" (the ceilings, same run)\n\n");
  std::printf(
      "| op | shape | dir | check | median ms | GB/s | %% of copy | TFLOP/s | %% of GEMM | "
      "kernel |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results) {
    char compute[64] = " | ";
    if (r.c.flops > 0) {
      std::snprintf(compute, sizeof(compute), "%.1f | %.1f%%", r.tflops, 100 * r.gemm_share);
    }
    std::printf("| %s | %s | %s | %s | %.4f | %.1f | %.1f%% | %s | %s |\n", r.c.op.c_str(),
                r.c.shape.c_str(), r.c.direction.c_str(), r.check_status.c_str(), r.median_ms,
                r.gbps, 100 * r.ceiling_share, compute, r.variant.c_str());
  }
}

namespace {

// A JSON string literal: quotes, backslashes and control characters escaped.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace

std::string to_json(const std::vector<Result>& results, const Ceilings& ceilings,
                    const Options& options) {
  std::ostringstream o;
  o << "{\"device\": " << quoted(options.device.str()) << ", \"copy_gbps\": " << ceilings.copy_gbps
    << ", \"gemm_tflops\": " << ceilings.gemm_tflops << ", \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    o << (i ? ", " : "") << "{\"op\": " << quoted(r.c.op) << ", \"shape\": " << quoted(r.c.shape)
      << ", \"direction\": " << quoted(r.c.direction) << ", \"check\": " << quoted(r.check_status)
      << ", \"median_ms\": " << r.median_ms << ", \"bytes\": " << r.c.bytes
      << ", \"gbps\": " << r.gbps << ", \"ceiling_share\": " << r.ceiling_share
      << ", \"flops\": " << r.c.flops << ", \"tflops\": " << r.tflops
      << ", \"gemm_share\": " << r.gemm_share << ", \"variant\": " << quoted(r.variant) << "}";
  }
  o << "]}\n";
  return o.str();
}

}  // namespace kiln::bench
