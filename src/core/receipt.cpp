#include "kiln/core/receipt.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kiln {
namespace {

thread_local Receipt tls_last_receipt;

bool log_receipts() {
  static const bool enabled = [] {
    const char* v = std::getenv("KILN_LOG");
    return v != nullptr && std::strstr(v, "receipts") != nullptr;
  }();
  return enabled;
}

}  // namespace

std::string Receipt::str() const {
  std::string s = op + " backend=" + backend + " variant=" + variant;
  if (!note.empty()) s += " note=\"" + note + "\"";
  return s;
}

const Receipt& last_receipt() {
  return tls_last_receipt;
}

void record_receipt(Receipt receipt) {
  tls_last_receipt = std::move(receipt);
  if (log_receipts()) std::fprintf(stderr, "[kiln] %s\n", tls_last_receipt.str().c_str());
}

}  // namespace kiln
