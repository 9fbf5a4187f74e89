// The message of an exception as a person should read it in a job's error or a log line.
#pragma once

#include <exception>
#include <string>

#include <c10/util/Exception.h>

namespace relora::cluster {

// c10::Error's what() appends a C++ backtrace; what_without_backtrace() is the message alone.
inline std::string error_message(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

}  // namespace relora::cluster
