#include "common/failpoint.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace relora {

namespace {

bool failpoint_set(const char* name, int64_t step) {
  const char* spec = std::getenv("RELORA_FAILPOINT");
  if (spec == nullptr || *spec == '\0') return false;
  return std::string(spec) == std::string(name) + "@" + std::to_string(step);
}

}  // namespace

void hang_at_failpoint(const char* name, int64_t step) {
  if (!failpoint_set(name, step)) return;
  std::fprintf(stderr, "failpoint %s@%lld: hanging this thread\n", name, static_cast<long long>(step));
  std::fflush(stderr);
  while (true) std::this_thread::sleep_for(std::chrono::hours(1));
}

void crash_at_failpoint(const char* name, int64_t step) {
  if (!failpoint_set(name, step)) return;
  std::fprintf(stderr, "failpoint %s@%lld: crashing now\n", name, static_cast<long long>(step));
  std::fflush(stderr);
  ::_exit(kFailpointExitCode);
}

}  // namespace relora
