#pragma once
// The one benchmark harness: cases from every op family, timed with CUDA events (median of
// many repetitions, warm-up apart, inputs rotated beyond L2), each checked against the
// reference first, reported against the ceiling measured in the same run.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/device.h"
#include "kiln/core/stream.h"

namespace kiln::bench {

struct Options {
  Device device = Device::cpu();
  bool quick = false;     // one shape per op, fewer repetitions
  std::string op_filter;  // run only cases whose op equals this ("" = all)
  int reps = 100;
  int warmup = 10;
};

// One timed configuration. `prepare(sets)` allocates and fills `sets` copies of the inputs
// (rotating among them keeps repeated runs out of L2) and returns the call to time for a set;
// `check()` runs the op once and compares with the reference ("" = passed, else the reason).
struct Case {
  std::string op;         // "rms_norm"
  std::string shape;      // "bf16 16384x8192"
  std::string direction;  // "fwd" | "bwd"
  double bytes = 0;       // each input read once + each output written once
  double flops = 0;
  std::function<std::function<void(int set, Stream)>(int sets)> prepare;
  std::function<std::string()> check;
  std::function<std::string()> variant;  // the receipt's variant after a run
};

struct Result {
  Case c;
  std::string check_status;  // "ok" or the failure
  std::string variant;
  double median_ms = 0;
  double gbps = 0;
  double ceiling_share = 0;  // of the copy bandwidth measured in the same run
  double tflops = 0;         // cases that count FLOPs
  double gemm_share = 0;     // of the dense GEMM rate measured in the same run
};

// The ceilings measured in the run: copy bandwidth for every case, the dense bf16 GEMM rate for
// the cases that count FLOPs (0 when none does or on the CPU).
struct Ceilings {
  double copy_gbps = 0;
  double gemm_tflops = 0;
};

// Device-to-device copy bandwidth in GB/s (bytes read + written), median of repetitions.
double measure_copy_bandwidth(const Device& device, int reps);

// Dense bf16 GEMM (8192^3, cuBLAS, fp32 accumulation) in TFLOP/s, median of repetitions; 0 on
// the CPU.
double measure_gemm_tflops(const Device& device, int reps);

// Median milliseconds of fn(set, stream) over `reps` runs after `warmup`, rotating sets.
double time_median_ms(const Device& device, const std::function<void(int, Stream)>& fn, int sets,
                      int warmup, int reps);

// A Case::prepare over `sets` states made by make() (a std::unique_ptr to the state, so states
// need not move), the timed call being run(state, stream).
template <typename Make, typename Run>
auto rotating_sets(Make make, Run run) {
  return [make, run](int sets) {
    using State = typename decltype(make())::element_type;
    auto states = std::make_shared<std::vector<std::unique_ptr<State>>>();
    for (int i = 0; i < sets; ++i) states->push_back(make());
    return std::function<void(int, Stream)>(
        [states, run](int set, Stream stream) { run(*(*states)[set], stream); });
  };
}

// Registered case lists, one per op family, and all of them in order.
std::vector<Case> norm_cases(const Options& options);
std::vector<Case> activation_cases(const Options& options);
std::vector<Case> dropout_cases(const Options& options);
std::vector<Case> moe_sum_cases(const Options& options);
std::vector<Case> mhc_cases(const Options& options);
std::vector<Case> mhc_mix_cases(const Options& options);
std::vector<Case> gather_cases(const Options& options);
std::vector<Case> cache_cases(const Options& options);
std::vector<Case> rope_cases(const Options& options);
std::vector<Case> tau_cases(const Options& options);
std::vector<Case> topk_cases(const Options& options);
std::vector<Case> router_cases(const Options& options);
std::vector<Case> moe_align_cases(const Options& options);
std::vector<Case> moe_cases(const Options& options);
std::vector<Case> quantize_cases(const Options& options);
std::vector<Case> attention_cases(const Options& options);
std::vector<Case> all_cases(const Options& options);

// Runs every case, printing progress to stderr and the table to stdout.
std::vector<Result> run(const Options& options, Ceilings* ceilings);
void print_table(const std::vector<Result>& results, const Ceilings& ceilings,
                 const Options& options);
std::string to_json(const std::vector<Result>& results, const Ceilings& ceilings,
                    const Options& options);

}  // namespace kiln::bench
