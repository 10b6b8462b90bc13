#pragma once
// Generic dispatch from a run-time value to a compile-time one: calls
// f(std::integral_constant<decltype(V), V>{}) for the V in the list that equals `value`, and
// throws kiln::Error naming `what` when none does.
#include <string>
#include <string_view>
#include <type_traits>

#include "kiln/core/dtype.h"
#include "kiln/core/error.h"

namespace kiln {

template <typename T>
std::string dispatch_value_str(T value) {
  if constexpr (std::is_same_v<T, DType>) {
    return std::string(dtype_name(value));
  } else if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_enum_v<T>) {
    return std::to_string(static_cast<int>(value));
  } else {
    return std::to_string(value);
  }
}

template <auto... Values, typename T, typename F>
void dispatch_value(T value, std::string_view what, F&& f) {
  const bool matched =
      ((value == Values ? (f(std::integral_constant<decltype(Values), Values>{}), true) : false) ||
       ...);
  if (!matched) {
    throw Error(std::string(what) + ": no kernel instantiated for " + dispatch_value_str(value));
  }
}

template <typename F>
void dispatch_bool(bool value, F&& f) {
  dispatch_value<false, true>(value, "bool", std::forward<F>(f));
}

}  // namespace kiln
