#pragma once
// GPU test helpers: a HostTensor mirrored on the GPU (device memory through the benchmark
// harness's Buffer, so tests and benchmarks share one allocation path).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

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

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace kiln::testing
