// A job's ReLoRA plan, from the job spec alone: for every step, the phase it trains in and the
// boundary (if any) applied before it, with the command each boundary gets. Torch-free and shared:
// the worker's training loop (through LocalCycleController, or the coordinator's commands) and the
// coordinator (which checks what workers report against it and sends the commands to every rank)
// read the same plan, so they cannot disagree about where a merge happens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/job_spec.h"
#include "relora/v1/job.pb.h"
#include "relora/v1/service.pb.h"

namespace relora {

enum class BoundaryKind {
  kLowRankStart,  // the end of the full-rank warm start: the low-rank branches are added
  kCycleEnd,      // a ReLoRA cycle ends: merge, re-init, optimizer reset, re-warm
  kJobEnd,        // after the last step
};
// Names on the wire and in events: "low_rank_start", "cycle_end", "job_end".
const char* boundary_kind_name(BoundaryKind kind);
std::optional<BoundaryKind> parse_boundary_kind(const std::string& name);

struct PlannedBoundary {
  int64_t step = 0;  // the step about to run when the boundary is applied
  BoundaryKind kind = BoundaryKind::kJobEnd;
  int64_t cycle = 0;  // the cycle that starts here (kCycleEnd: >= 1); 0 otherwise
};

class ReloraPlan {
 public:
  enum class Phase { kFullRank, kLowRank };

  explicit ReloraPlan(const relora::v1::JobSpec& spec);

  // Every boundary in step order, the job end included.
  const std::vector<PlannedBoundary>& boundaries() const { return boundaries_; }
  // The boundary applied before step `step` runs; nullopt for a plain step.
  std::optional<PlannedBoundary> boundary_at(int64_t step) const;
  // The phase step `step` trains in: full rank before the low-rank start (and always in mode full).
  Phase phase_at(int64_t step) const;
  // The first low-rank step; -1 in mode full.
  int64_t low_rank_start() const { return low_rank_start_; }
  TrainMode mode() const { return mode_; }

  // The command for the boundary `kind` at `step`: enable the low-rank branches at the low-rank
  // start; merge, re-init (A from a seed derived from training.seed and the step, so every rank and
  // every rerun draws the same factors), optimizer reset and re-warm at a cycle end; nothing at
  // the job end.
  relora::v1::CycleCommand command(BoundaryKind kind, int64_t step) const;

 private:
  relora::v1::JobSpec spec_;
  TrainMode mode_;
  int64_t low_rank_start_ = -1;
  std::vector<PlannedBoundary> boundaries_;
};

// Shorthands for one-off uses of the plan.
std::vector<PlannedBoundary> plan_boundaries(const relora::v1::JobSpec& spec);
relora::v1::CycleCommand plan_command(const relora::v1::JobSpec& spec, BoundaryKind kind, int64_t step);

// splitmix64 mix of (job seed, step): well spread, portable, identical on every rank.
uint64_t boundary_seed(uint64_t job_seed, int64_t step);

}  // namespace relora
