#include "common/crash_handler.h"

#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <initializer_list>

namespace relora {
namespace {

const char* g_program = "relora";

void write_str(const char* s) { [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, s, strlen(s)); }

// Only async-signal-safe calls, except backtrace(), whose first call may allocate: it is primed
// in install_crash_handler so that the handler finds libgcc already loaded.
extern "C" void on_fatal_signal(int sig) {
  write_str(g_program);
  write_str(": fatal signal ");
  write_str(sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
  write_str("; native stack of the crashing thread:\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  // The default action (core dump, exit status 128 + sig) with the handler reset.
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void install_crash_handler(const char* program) {
  g_program = program;
  void* prime[2];
  backtrace(prime, 2);
  struct sigaction action {};
  action.sa_handler = on_fatal_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESETHAND | SA_NODEFER;
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &action, nullptr);
}

}  // namespace relora
