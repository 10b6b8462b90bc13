#pragma once
// Memory on a kiln device for the benchmark cases: host memory on the CPU, cudaMalloc on CUDA.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/core/device.h"

namespace kiln::bench {

class Buffer {
 public:
  Buffer() = default;
  Buffer(const Device& device, size_t bytes);
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  ~Buffer();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes, size_t offset = 0) const;
  void fill_nan();  // poison (0xFF bytes: NaN in every float type)

 private:
  Device device_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

void synchronize(const Device& device);

}  // namespace kiln::bench
