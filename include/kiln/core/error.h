#pragma once
#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln {

// Every failure kiln reports: bad input (naming the op, the argument, what was expected and what
// was given), a backend that is not built, or a CUDA error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws "<op>: argument '<arg>': expected <expected>, got <given>".
[[noreturn]] void throw_arg_error(std::string_view op, std::string_view arg,
                                  std::string_view expected, std::string_view given);

}  // namespace kiln
