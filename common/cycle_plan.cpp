#include "common/cycle_plan.h"

#include "common/job_spec.h"

namespace relora {

uint64_t boundary_seed(uint64_t job_seed, int64_t step) {
  uint64_t z = job_seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(step + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<PlannedBoundary> plan_boundaries(const relora::v1::JobSpec& spec) {
  std::vector<PlannedBoundary> out;
  const int64_t total = spec.training().steps();
  const int64_t low_steps = low_rank_phase_steps(spec);
  if (low_steps > 0) {
    const int64_t start = total - low_steps;
    out.push_back({start, kBoundaryLowRankStart, 0});
    if (spec.relora().mode() == "relora") {
      const int64_t cycle = spec.relora().cycle_steps();
      for (int64_t step = start + cycle, n = 1; step < total; step += cycle, ++n)
        out.push_back({step, kBoundaryCycleEnd, n});
    }
  }
  out.push_back({total, kBoundaryJobEnd, 0});
  return out;
}

relora::v1::CycleCommand plan_command(const relora::v1::JobSpec& spec, const std::string& kind, int64_t step) {
  relora::v1::CycleCommand cmd;
  cmd.set_step(step);
  cmd.set_boundary(kind);
  cmd.set_seed(boundary_seed(spec.training().seed(), step));
  cmd.set_optimizer_reset("none");
  if (kind == kBoundaryLowRankStart) {
    cmd.set_enable_low_rank(true);
  } else if (kind == kBoundaryCycleEnd) {
    cmd.set_merge(true);
    cmd.set_optimizer_reset(spec.relora().optimizer_reset().empty() ? "none" : spec.relora().optimizer_reset());
    cmd.set_prune_ratio(spec.relora().prune_ratio());
    cmd.set_rewarm(spec.relora().restart_warmup_steps() > 0);  // 0: jagged schedule off
  }
  return cmd;
}

}  // namespace relora
