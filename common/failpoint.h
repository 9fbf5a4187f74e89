// Fault injection for tests that crash real processes at exact points (the reliability tests):
// RELORA_FAILPOINT=name@step makes crash_at_failpoint(name, step) end the process at once, as a
// kill would, without unwinding, flushing or running destructors, and hang_at_failpoint(name,
// step) block the calling thread for good, as a kernel that never returns would. Unset (always, outside tests),
// it is one getenv per call at the few places that have one.
#pragma once

#include <cstdint>

namespace relora {

// Exit code of a process ended by a failpoint.
constexpr int kFailpointExitCode = 86;

void crash_at_failpoint(const char* name, int64_t step);
void hang_at_failpoint(const char* name, int64_t step);

}  // namespace relora
