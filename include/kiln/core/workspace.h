#pragma once
#include <cstddef>

namespace kiln {

// Scratch memory on the op's device, allocated by the caller. An op that needs scratch reports
// the bytes through `<op>_workspace_size(...)`; ops never allocate device memory themselves, so
// they stay safe inside CUDA-graph capture. Alignment: at least 256 bytes.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

}  // namespace kiln
