#include "coordinator/ids.h"

#include <chrono>
#include <cstdio>

namespace relora::coordinator {

IdGenerator::IdGenerator() {
  // Seeded from the OS so that two coordinators (or one restarted) do not replay the same ids.
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd()};
  rng_.seed(seq);
}

std::string IdGenerator::next(const std::string& prefix) {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(rng_() & 0xffffffffu));
  return prefix + "-" + hex;
}

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace relora::coordinator
