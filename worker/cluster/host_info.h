// Facts about this machine that a worker reports when it registers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace relora::cluster {

// MemTotal from /proc/meminfo, in bytes; 0 when it cannot be read.
int64_t total_memory_bytes();

// gethostname(); "localhost" when it fails.
std::string local_hostname();

// A TCP port that is free now: `preferred` when it can be bound (so a worker keeps its port
// across re-registrations), else one the kernel picks (bind to port 0). Throws
// std::runtime_error when no socket can be bound. Between this probe and the moment the port is
// used (a c10d store when this worker is rank 0) another process could take it; the store then
// fails with an error naming the port.
int find_free_port(int preferred = 0);

// Capped exponential backoff: initial, 2x, 4x, ... up to max; reset() after a success.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max) : initial_(initial), max_(max) {}
  std::chrono::milliseconds next() {
    const auto d = next_ < initial_ ? initial_ : next_;
    next_ = d * 2 > max_ ? max_ : d * 2;
    return d > max_ ? max_ : d;
  }
  void reset() { next_ = std::chrono::milliseconds(0); }

 private:
  std::chrono::milliseconds initial_, max_;
  std::chrono::milliseconds next_{0};
};

}  // namespace relora::cluster
