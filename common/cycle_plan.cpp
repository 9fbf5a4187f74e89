#include "common/cycle_plan.h"

#include <algorithm>


namespace relora {

const char* boundary_kind_name(BoundaryKind kind) {
  switch (kind) {
    case BoundaryKind::kLowRankStart: return "low_rank_start";
    case BoundaryKind::kCycleEnd: return "cycle_end";
    case BoundaryKind::kJobEnd: return "job_end";
  }
  return "?";
}

std::optional<BoundaryKind> parse_boundary_kind(const std::string& name) {
  for (BoundaryKind k : {BoundaryKind::kLowRankStart, BoundaryKind::kCycleEnd, BoundaryKind::kJobEnd})
    if (name == boundary_kind_name(k)) return k;
  return std::nullopt;
}

uint64_t boundary_seed(uint64_t job_seed, int64_t step) {
  uint64_t z = job_seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(step + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

ReloraPlan::ReloraPlan(const relora::v1::JobSpec& spec) : spec_(spec), mode_(train_mode(spec)) {
  const int64_t total = spec.training().steps();
  const int64_t low_steps = low_rank_phase_steps(spec);
  if (mode_ != TrainMode::kFull && low_steps > 0) {
    low_rank_start_ = total - low_steps;
    boundaries_.push_back({low_rank_start_, BoundaryKind::kLowRankStart, 0});
    if (mode_ == TrainMode::kRelora) {
      const int64_t cycle = spec.relora().cycle_steps();
      for (int64_t step = low_rank_start_ + cycle, n = 1; step < total; step += cycle, ++n)
        boundaries_.push_back({step, BoundaryKind::kCycleEnd, n});
    }
  }
  // The job end carries the cycle the job ends in (for reports).
  const int64_t cycles = static_cast<int64_t>(
      std::count_if(boundaries_.begin(), boundaries_.end(), [](const auto& b) { return b.kind == BoundaryKind::kCycleEnd; }));
  boundaries_.push_back({total, BoundaryKind::kJobEnd, cycles});
}

std::optional<PlannedBoundary> ReloraPlan::boundary_at(int64_t step) const {
  const auto it = std::lower_bound(boundaries_.begin(), boundaries_.end(), step,
                                   [](const PlannedBoundary& b, int64_t s) { return b.step < s; });
  if (it == boundaries_.end() || it->step != step) return std::nullopt;
  return *it;
}

ReloraPlan::Phase ReloraPlan::phase_at(int64_t step) const {
  return low_rank_start_ >= 0 && step >= low_rank_start_ ? Phase::kLowRank : Phase::kFullRank;
}

relora::v1::CycleCommand ReloraPlan::command(BoundaryKind kind, int64_t step) const {
  relora::v1::CycleCommand cmd;
  cmd.set_step(step);
  cmd.set_boundary(boundary_kind_name(kind));
  cmd.set_seed(boundary_seed(spec_.training().seed(), step));
  cmd.set_optimizer_reset("none");
  if (kind == BoundaryKind::kLowRankStart) {
    cmd.set_enable_low_rank(true);
  } else if (kind == BoundaryKind::kCycleEnd) {
    cmd.set_merge(true);
    cmd.set_optimizer_reset(spec_.relora().optimizer_reset().empty() ? "none" : spec_.relora().optimizer_reset());
    cmd.set_prune_ratio(spec_.relora().prune_ratio());
    cmd.set_rewarm(spec_.relora().restart_warmup_steps() > 0);  // 0: jagged schedule off
  }
  return cmd;
}

std::vector<PlannedBoundary> plan_boundaries(const relora::v1::JobSpec& spec) { return ReloraPlan(spec).boundaries(); }

relora::v1::CycleCommand plan_command(const relora::v1::JobSpec& spec, BoundaryKind kind, int64_t step) {
  return ReloraPlan(spec).command(kind, step);
}

}  // namespace relora
