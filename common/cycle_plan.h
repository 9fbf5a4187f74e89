// The phase boundaries of a job and the command each one gets, from the job spec alone.
// Torch-free and shared: the standalone trainer's LocalCycleController and the coordinator
// (which sends these commands to every rank of a job) compute them the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "relora/v1/job.pb.h"
#include "relora/v1/service.pb.h"

namespace relora {

// Boundary names as they appear in commands and events.
inline constexpr const char* kBoundaryLowRankStart = "low_rank_start";
inline constexpr const char* kBoundaryCycleEnd = "cycle_end";
inline constexpr const char* kBoundaryJobEnd = "job_end";

struct PlannedBoundary {
  int64_t step = 0;  // the step about to run when the boundary is applied
  std::string kind;  // one of the names above
  int64_t cycle = 0;
};

// Every boundary of a resolved spec in step order, the job end included.
std::vector<PlannedBoundary> plan_boundaries(const relora::v1::JobSpec& spec);

// The command for the boundary `kind` at `step`: enable the low-rank branches at the low-rank
// start; merge, re-init (A from a seed derived from training.seed and the step, so every rank and
// every rerun draws the same factors), optimizer reset and re-warm at a cycle end; nothing at the
// job end.
relora::v1::CycleCommand plan_command(const relora::v1::JobSpec& spec, const std::string& kind, int64_t step);

// splitmix64 mix of (job seed, step): well spread, portable, identical on every rank.
uint64_t boundary_seed(uint64_t job_seed, int64_t step);

}  // namespace relora
