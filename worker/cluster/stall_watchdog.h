// A watchdog for a training thread that stops making progress outside the places that have their
// own timeouts. Collectives fail after --collective-timeout and boundary waits after
// --boundary-timeout, but a thread stuck anywhere else (a kernel that never returns, a deadlock
// in a data loader, a wedged file system during a save) would hold its job's other ranks in
// their next collective, fail them, and then sit on the worker forever: the coordinator would
// hand the worker the next job, which could never start.
//
// The training thread calls beat() whenever it gets on (a step, an evaluation, a checkpoint);
// while `waiting()` says it waits on the coordinator (a boundary) the clock does not run. When no
// beat comes for `limit`, on_stall runs once, on the watchdog's own thread, with a description.
//
// Threading: beat() from any thread (cheap: one atomic store); the watchdog thread is started by
// the constructor and joined by the destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace relora::cluster {

class StallWatchdog {
 public:
  using Clock = std::chrono::steady_clock;
  // `limit` 0 disables the watchdog (no thread). `waiting` may be empty.
  StallWatchdog(std::chrono::milliseconds limit, std::function<bool()> waiting,
                std::function<void(const std::string& what)> on_stall);
  ~StallWatchdog();
  StallWatchdog(const StallWatchdog&) = delete;
  StallWatchdog& operator=(const StallWatchdog&) = delete;

  // The training thread got on; `where` is a string literal naming where (kept as the last sign
  // of life for the stall report).
  void beat(const char* where, int64_t step);
  bool fired() const { return fired_.load(); }

 private:
  void loop();

  const std::chrono::milliseconds limit_;
  const std::function<bool()> waiting_;
  const std::function<void(const std::string&)> on_stall_;
  std::atomic<int64_t> last_beat_ns_;
  std::atomic<const char*> last_where_{"the start of training"};
  std::atomic<int64_t> last_step_{0};
  std::atomic<bool> fired_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace relora::cluster
