#pragma once
// Asserts that `call` throws kiln::Error whose message contains `fragment` (the op, the argument,
// what was expected and what was given).
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "kiln/core/error.h"

namespace kiln::testing {

inline void expect_error(const std::function<void()>& call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "no kiln::Error; wanted one containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

}  // namespace kiln::testing
