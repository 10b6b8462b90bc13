#pragma once
#include <cuda_runtime.h>

namespace kiln::cuda {

// Runs work on a second stream beside `main` between construction and join(), for two kernels that
// do not depend on each other: the second fills the SMs the first leaves idle in its last wave.
// Both streams' work is ordered after what `main` held at construction, and `main` waits for the
// second stream at join(). Fork and join are events, so this is legal inside CUDA graph capture
// (the graph gets two branches). The second stream is the calling thread's own, per device, and
// non-blocking, so it never waits on the legacy default stream by accident.
class StreamFork {
 public:
  explicit StreamFork(cudaStream_t main);
  StreamFork(const StreamFork&) = delete;
  StreamFork& operator=(const StreamFork&) = delete;
  ~StreamFork();  // joins if join() was not called (an exception between fork and join)

  cudaStream_t side() const { return side_; }
  void join();

 private:
  cudaStream_t main_;
  cudaStream_t side_;
  cudaEvent_t joined_;
  bool open_ = true;
};

}  // namespace kiln::cuda
