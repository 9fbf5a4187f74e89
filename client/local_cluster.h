// Child processes of `relora local` (a coordinator and N workers) and of `relora export`.
//
// No orphans: each child runs in its own process group (so Ctrl-C in the terminal reaches only
// the CLI, which then cancels the job and stops the children in order), and asks the kernel to
// SIGKILL it if the CLI dies first (PR_SET_PDEATHSIG), which covers `kill -9` of the CLI too.
// stop() sends SIGTERM to each child's group, waits, and SIGKILLs what is left.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace relora::client {

struct ChildSpec {
  std::string name;               // "coordinator", "worker-0": for messages
  std::string binary;             // absolute path
  std::vector<std::string> args;  // without argv[0]
  std::string log_path;           // stdout and stderr are appended here
};

struct ChildExit {
  std::string name;
  std::string log_path;
  std::string how;  // "exited with status 1", "was killed by signal 9"
};

// "exited with status N" / "was killed by signal N (Killed)" for a waitpid() status.
std::string describe_wait_status(int status);

class LocalCluster {
 public:
  LocalCluster() = default;
  ~LocalCluster();  // stop() with a short grace period
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Starts a child; throws std::runtime_error if the binary cannot be run (exec failure
  // included: it is reported through a close-on-exec pipe, not discovered later).
  pid_t spawn(const ChildSpec& spec);

  // Reaps children that exited, without blocking, and returns the first not reported before.
  std::optional<ChildExit> poll_exited();

  // SIGTERM to every running child (newest first), wait up to `grace`, then SIGKILL.
  void stop(std::chrono::milliseconds grace);

 private:
  struct Child {
    ChildSpec spec;
    pid_t pid = -1;
    bool running = true;
    bool reported = false;
    int status = 0;
  };
  bool reap(Child& c, bool block);  // requires mu_

  std::mutex mu_;
  std::vector<Child> children_;  // protected by mu_
};

// The last `lines` lines of a text file ("" if unreadable). Reads at most the last 64 KiB.
std::string tail_file(const std::string& path, int lines);

// Waits for the coordinator's port file: a decimal port written by the coordinator once it
// listens. Returns the port; nullopt on timeout or when `keep_waiting` returns false (the
// coordinator exited, the user pressed Ctrl-C).
std::optional<int> wait_for_port_file(const std::string& path, std::chrono::milliseconds timeout,
                                      const std::function<bool()>& keep_waiting);

// Runs `binary args...` with this process's stdin/stdout/stderr and waits; returns its exit
// status (128 + signal if killed). Throws std::runtime_error if it cannot be started.
int run_and_wait(const std::string& binary, const std::vector<std::string>& args);

}  // namespace relora::client
