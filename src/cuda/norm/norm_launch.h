#pragma once
// Host launchers of the normalization kernels. No CUDA headers here: the entry points in
// src/ops include this in builds with and without nvcc.
#include <string>

#include "ops/norm_problem.h"

namespace kiln::cuda {

// Each returns the name of the kernel variant that ran, for the receipt.
std::string norm_forward(const NormForwardProblem& p, Stream stream);
size_t norm_backward_workspace_size(int64_t rows, int64_t cols, Device device);
std::string norm_backward(const NormBackwardProblem& p, const Workspace& workspace, Stream stream);

}  // namespace kiln::cuda
