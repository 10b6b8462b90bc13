#pragma once
// Device memory for GPU tests: RAII buffers and host<->device copies of HostTensors.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/host_tensor.h"

namespace kiln::testing {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) cuda_ok(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A HostTensor mirrored on the GPU (same row pitch). upload() copies host -> device;
// download() device -> host; poison() fills the device copy with NaN bytes.
struct Mirrored {
  HostTensor host;
  DeviceBuffer dev;
  explicit Mirrored(HostTensor h) : host(std::move(h)), dev(host.bytes.size()) {}
  void upload() {
    cuda_ok(cudaMemcpy(dev.get(), host.bytes.data(), host.bytes.size(), cudaMemcpyHostToDevice),
            "upload");
  }
  void download() {
    cuda_ok(cudaMemcpy(host.bytes.data(), dev.get(), host.bytes.size(), cudaMemcpyDeviceToHost),
            "download");
  }
  void poison() { cuda_ok(cudaMemset(dev.get(), 0xFF, dev.bytes()), "poison"); }
  TensorView view() { return host.view(dev.get(), Device::cuda(0)); }
};

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace kiln::testing
