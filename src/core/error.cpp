#include "kiln/core/error.h"

namespace kiln {

void throw_arg_error(std::string_view op, std::string_view arg, std::string_view expected,
                     std::string_view given) {
  std::string msg;
  msg.append(op).append(": argument '").append(arg).append("': expected ");
  msg.append(expected).append(", got ").append(given);
  throw Error(msg);
}

}  // namespace kiln
