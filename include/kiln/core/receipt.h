#pragma once
// Receipts: what ran. Every op call records one; `last_receipt()` returns this thread's latest,
// and KILN_LOG=receipts prints one line per call to stderr.
#include <string>

namespace kiln {

struct Receipt {
  std::string op;       // "rms_norm"
  std::string backend;  // "reference" | "cuda"
  std::string variant;  // the kernel that ran, e.g. "row_block<bf16,vec8x4,tpr256>"
  std::string note;     // what was requested when it differs from what ran (a refused fast path)
  std::string str() const;
};

const Receipt& last_receipt();
void record_receipt(Receipt receipt);

}  // namespace kiln
