#pragma once
// Memory on a kiln device for the benchmark cases: host memory on the CPU, cudaMalloc on CUDA.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/device.h"
#include "kiln/core/dtype.h"

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
  void upload(const void* host, size_t bytes, size_t offset = 0);
  void download(void* host, size_t bytes, size_t offset = 0) const;
  void fill_nan();  // poison (0xFF bytes: NaN in every float type)

 private:
  Device device_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

void synchronize(const Device& device);

// How a case's output compares with the reference's (two buffers of `dtype` and one size, on any
// devices): "" when the relative L2 error is within `tol`, else "<what> has NaN" or
// "<what> rel. error <e>".
std::string compare(const Buffer& got, const Buffer& want, DType dtype, double tol,
                    const std::string& what);

// "" when the two buffers hold the same bytes (integer outputs: indices, ids), else
// "<what> differ from the reference".
std::string compare_exact(const Buffer& got, const Buffer& want, const std::string& what);

}  // namespace kiln::bench
