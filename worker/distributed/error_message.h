// The message of an exception as a person should read it in a job's error or a log line.
#pragma once

#include <exception>
#include <string>

#include <c10/util/Exception.h>

namespace relora::distributed {

// c10::Error's what() appends a C++ backtrace; what_without_backtrace() is the message alone.
inline std::string error_message(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

// The C++ stack LibTorch recorded with a c10::Error (on LibTorch 2.x only with
// TORCH_SHOW_CPP_STACKTRACES=1); empty for other exceptions. Logged at debug level beside the
// one-line error, so that a failure on a remote GPU machine says where it happened.
inline std::string error_stack(const std::exception& e) {
  const auto* c10e = dynamic_cast<const c10::Error*>(&e);
  if (!c10e) return "";
  const std::string all = c10e->what(), message = c10e->what_without_backtrace();
  if (all.compare(0, message.size(), message) == 0) return all.substr(message.size());
  return all;
}

}  // namespace relora::distributed
