#pragma once
// The CUDA stream an op runs on, without pulling CUDA headers into the public API.
// kiln::Stream is the same type as cudaStream_t; nullptr is the legacy default stream.
struct CUstream_st;

namespace kiln {
using Stream = ::CUstream_st*;
}
