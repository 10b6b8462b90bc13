#pragma once
// Host-side reading and checking of the packed-sequence metadata the attention ops share
// (cu_seqlens, valid prefixes, document ids): every bad value a kiln::Error naming the op, the
// argument, the sequence and what was expected.
#include <cstdint>
#include <string_view>
#include <vector>

#include "kiln/core/tensor_view.h"

namespace kiln::attention_metadata {

// A CPU tensor, or a kiln::Error saying the argument must be on the host.
void on_cpu(std::string_view op, std::string_view arg, const TensorView& t);

// An int32 vector of n elements on the CPU, copied out (any stride).
std::vector<int32_t> int32_vector(std::string_view op, std::string_view arg, const TensorView& t,
                                  int64_t n);

// cu_seqlens: int32 [B + 1], 0 first, non-decreasing.
std::vector<int32_t> seqlens(std::string_view op, std::string_view arg, const TensorView& t);

// Per-sequence valid lengths, each within its sequence (absent: the sequences' lengths).
std::vector<int32_t> valid_lengths(std::string_view op, std::string_view arg, const TensorView& t,
                                   const std::vector<int32_t>& cu);

}  // namespace kiln::attention_metadata
