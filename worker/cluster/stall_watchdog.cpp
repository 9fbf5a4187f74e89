#include "worker/cluster/stall_watchdog.h"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

namespace relora::cluster {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(StallWatchdog::Clock::now().time_since_epoch()).count();
}

}  // namespace

StallWatchdog::StallWatchdog(std::chrono::milliseconds limit, std::function<bool()> waiting,
                             std::function<void(const std::string&)> on_stall)
    : limit_(limit), waiting_(std::move(waiting)), on_stall_(std::move(on_stall)), last_beat_ns_(now_ns()) {
  if (limit_.count() > 0) thread_ = std::thread([this] { loop(); });
}

StallWatchdog::~StallWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StallWatchdog::beat(const char* where, int64_t step) {
  last_where_.store(where);
  last_step_.store(step);
  last_beat_ns_.store(now_ns());
}

void StallWatchdog::loop() {
  // Checked ten times per limit (at most once a second): a stall is reported within 1.1 limits.
  const auto period = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), std::max<std::chrono::milliseconds>(
                                                                                        std::chrono::milliseconds(10), limit_ / 10));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [&] { return stopping_; })) {
    // Waiting on the coordinator is not a stall (the boundary timeout covers it): the clock
    // starts again when the wait ends.
    if (waiting_ && waiting_()) {
      last_beat_ns_.store(now_ns());
      continue;
    }
    const auto stalled = std::chrono::nanoseconds(now_ns() - last_beat_ns_.load());
    if (stalled < limit_) continue;
    fired_ = true;
    const std::string what =
        fmt::format("the training thread made no progress for {:.3g} s (limit {:.3g} s); its last sign of life was {} "
                    "at step {}",
                    std::chrono::duration<double>(stalled).count(), std::chrono::duration<double>(limit_).count(),
                    last_where_.load(), last_step_.load());
    lock.unlock();
    on_stall_(what);
    return;
  }
}

}  // namespace relora::cluster
