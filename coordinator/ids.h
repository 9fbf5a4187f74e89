// Identifiers and wall-clock time for records the coordinator hands out.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace relora::coordinator {

// Random "<prefix>-" + 8 lowercase hex digits ("job-1f3a9c07"). Not thread-safe: each caller
// owns its generator (ClusterState keeps one under its mutex). Uniqueness is the caller's job
// (check against known ids and draw again): 32 random bits make collisions rare, not impossible.
class IdGenerator {
 public:
  IdGenerator();
  std::string next(const std::string& prefix);

 private:
  std::mt19937_64 rng_;
};

// Milliseconds since the Unix epoch, for timestamps users read (never for timeouts: those use
// std::chrono::steady_clock, which does not jump when the wall clock is adjusted).
int64_t unix_ms_now();

}  // namespace relora::coordinator
