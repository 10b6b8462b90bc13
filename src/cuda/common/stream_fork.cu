#include <unordered_map>

#include "cuda/common/cuda_check.h"
#include "cuda/common/stream_fork.h"

namespace kiln::cuda {
namespace {

struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t forked = nullptr;
  cudaEvent_t joined = nullptr;
};

// One per (thread, device): events are re-recorded by each fork, and two threads sharing them
// could make a stream wait on the other thread's record. Never destroyed: a thread may outlive
// the CUDA context at process exit, and destroying then would fail.
SideStream& side_stream_of_this_thread() {
  thread_local std::unordered_map<int, SideStream> per_device;
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  SideStream& s = per_device[device];
  if (s.stream == nullptr) {
    KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&s.forked, cudaEventDisableTiming));
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&s.joined, cudaEventDisableTiming));
  }
  return s;
}

}  // namespace

StreamFork::StreamFork(cudaStream_t main) : main_(main) {
  SideStream& s = side_stream_of_this_thread();
  side_ = s.stream;
  joined_ = s.joined;
  KILN_CUDA_CHECK(cudaEventRecord(s.forked, main_));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(side_, s.forked, 0));
}

void StreamFork::join() {
  open_ = false;
  KILN_CUDA_CHECK(cudaEventRecord(joined_, side_));
  KILN_CUDA_CHECK(cudaStreamWaitEvent(main_, joined_, 0));
}

StreamFork::~StreamFork() {
  if (!open_) return;
  // Best effort: a destructor must not throw, and the error that brought us here is the one to
  // report.
  if (cudaEventRecord(joined_, side_) == cudaSuccess) cudaStreamWaitEvent(main_, joined_, 0);
}

}  // namespace kiln::cuda
