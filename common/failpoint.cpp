#include "common/failpoint.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace relora {

void crash_at_failpoint(const char* name, int64_t step) {
  const char* spec = std::getenv("RELORA_FAILPOINT");
  if (spec == nullptr || *spec == '\0') return;
  if (std::string(spec) != std::string(name) + "@" + std::to_string(step)) return;
  std::fprintf(stderr, "failpoint %s@%lld: crashing now\n", name, static_cast<long long>(step));
  std::fflush(stderr);
  ::_exit(kFailpointExitCode);
}

}  // namespace relora
