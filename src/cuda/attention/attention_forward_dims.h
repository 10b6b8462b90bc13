#pragma once
// The forward kernel's head-dim configurations, one translation unit each (compile time).
#include <string>

#include "cuda/attention/attention_launch.h"

namespace kiln::cuda {

std::string attention_forward_d64(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_d128(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_d256(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_d192_dv128(const AttentionForwardArgs& a, Stream stream);

// The wgmma + TMA kernels: they launch and return their variant name when they can take a (a
// Hopper device, no page table, views TMA can describe), and return "" having launched nothing
// otherwise.
std::string attention_forward_sm90_d64(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_sm90_d128(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_sm90_d192_dv128(const AttentionForwardArgs& a, Stream stream);
std::string attention_forward_sm90_d256(const AttentionForwardArgs& a, Stream stream);

}  // namespace kiln::cuda
