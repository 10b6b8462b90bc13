#pragma once
// The backward kernels' head-dim configurations, one translation unit each (compile time).
#include <string>

#include "cuda/attention/attention_launch.h"

namespace kiln::cuda {

std::string attention_backward_d64(const AttentionBackwardArgs& a, Stream stream);
std::string attention_backward_d128(const AttentionBackwardArgs& a, Stream stream);
std::string attention_backward_d256(const AttentionBackwardArgs& a, Stream stream);
std::string attention_backward_d192_dv128(const AttentionBackwardArgs& a, Stream stream);

// The wgmma + TMA backward (D = Dv = 64 or 128): launches and returns its variant name when it
// can take a (a Hopper device, TMA-describable views), returns "" having launched nothing
// otherwise.
std::string attention_backward_sm90_d64(const AttentionBackwardArgs& a, Stream stream);
std::string attention_backward_sm90_d128(const AttentionBackwardArgs& a, Stream stream);

}  // namespace kiln::cuda
