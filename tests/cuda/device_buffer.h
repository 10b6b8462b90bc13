#pragma once
// GPU test helpers: a HostTensor mirrored on the GPU (device memory through the benchmark
// harness's Buffer, so tests and benchmarks share one allocation path).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffer.h"
#include "common/host_tensor.h"

namespace kiln::testing {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

using DeviceBuffer = bench::Buffer;

// upload() copies host -> device; download() device -> host; poison() fills the device copy
// with NaN bytes. Both copies have the host tensor's row pitch.
struct Mirrored {
  HostTensor host;
  DeviceBuffer dev;
  explicit Mirrored(HostTensor h) : host(std::move(h)), dev(Device::cuda(0), host.bytes.size()) {}
  void upload() { dev.upload(host.bytes.data(), host.bytes.size()); }
  void download() { dev.download(host.bytes.data(), host.bytes.size()); }
  void poison() { dev.fill_nan(); }
  TensorView view() { return host.view(dev.data(), Device::cuda(0)); }
};

// KILN_TEST_QUICK=1 (the compute-sanitizer pass): the sweeps keep every edge shape but only
// small row counts, so memcheck over every family stays within a device call.
inline bool quick_sweep() {
  return std::getenv("KILN_TEST_QUICK") != nullptr;
}

// The row counts of a sweep: {1, 3, 1000}, without 1000 in a quick sweep.
inline std::vector<int64_t> sweep_rows() {
  if (quick_sweep()) return {1, 3};
  return {1, 3, 1000};
}

// Every element of `got` within tol * (1 + |want|) of `want` (NaN never is); the first five
// misses are reported with their (row, column).
inline void expect_close(const HostTensor& got, const HostTensor& want, double tol,
                         const std::string& what = "") {
  int misses = 0;
  for (int64_t r = 0; r < want.rows() && misses < 5; ++r) {
    for (int64_t c = 0; c < want.cols() && misses < 5; ++c) {
      const double g = got.at(r, c), w = want.at(r, c);
      if (!(std::abs(g - w) <= tol * (1 + std::abs(w)))) {
        ADD_FAILURE() << what << "(" << r << ", " << c << "): got " << g << ", want " << w;
        ++misses;
      }
    }
  }
}

// For outputs downstream of a quantization both sides perform (w8a8): an input a rounding step
// apart (fp32 tensor-core sums against float64) can land on the other side of a quantization
// boundary or move a group's scale, and one such flip moves a whole output row by up to a
// quantization step; how many rows it hits is data-dependent. So: every element within
// wide_tol * (1 + |want|), and the whole within rel_l2 of want in the L2 norm (a wrong scale,
// row or expert moves it by far more).
inline void expect_close_in_l2(const HostTensor& got, const HostTensor& want, double rel_l2,
                               double wide_tol, const std::string& what = "") {
  double diff2 = 0, want2 = 0;
  int misses = 0;
  for (int64_t r = 0; r < want.rows(); ++r) {
    for (int64_t c = 0; c < want.cols(); ++c) {
      const double g = got.at(r, c), w = want.at(r, c), err = std::abs(g - w);
      diff2 += err * err;
      want2 += w * w;
      if (!(err <= wide_tol * (1 + std::abs(w))) && misses++ < 5) {
        ADD_FAILURE() << what << "(" << r << ", " << c << "): got " << g << ", want " << w
                      << " (past the wide tolerance)";
      }
    }
  }
  EXPECT_LE(std::sqrt(diff2), rel_l2 * std::sqrt(want2)) << what << ": relative L2 error";
}

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Compute capability major of device 0 (9 on Hopper), 0 without a device.
inline int gpu_major() {
  int major = 0;
  if (!have_gpu() || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0)) return 0;
  return major;
}

// Sets an environment variable for one scope (a null value leaves it unset), e.g. to force a
// kernel variant through its A/B switch; unset again on the way out, failures included.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (value != nullptr) setenv(name, value, 1);
  }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

}  // namespace kiln::testing
