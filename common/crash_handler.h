// Fatal signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT) print the native stack of the thread
// that received them to stderr before the process dies with the default action, so that a crash
// on a machine without a debugger (the GPU check machine) still says where it happened.
#pragma once

namespace relora {

// Installs the handlers once per process; `program` prefixes the report ("relora-worker").
void install_crash_handler(const char* program);

}  // namespace relora
