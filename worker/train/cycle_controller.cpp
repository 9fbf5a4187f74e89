#include "worker/train/cycle_controller.h"

namespace relora::train {

const char* boundary_kind_name(BoundaryKind kind) {
  switch (kind) {
    case BoundaryKind::kLowRankStart: return "low_rank_start";
    case BoundaryKind::kCycleEnd: return "cycle_end";
    case BoundaryKind::kJobEnd: return "job_end";
  }
  return "?";
}

uint64_t boundary_seed(uint64_t job_seed, int64_t step) {
  // splitmix64 finaliser over (seed, step): well mixed, portable, identical on every rank.
  uint64_t z = job_seed + 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(step + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

CycleCommand LocalCycleController::at_boundary(const Boundary& boundary) {
  CycleCommand cmd;
  cmd.seed = boundary_seed(spec_.training().seed(), boundary.step);
  switch (boundary.kind) {
    case BoundaryKind::kLowRankStart:
      cmd.enable_low_rank = true;
      break;
    case BoundaryKind::kCycleEnd:
      cmd.merge = true;
      cmd.reset = parse_reset_mode(spec_.relora().optimizer_reset());
      cmd.prune_ratio = spec_.relora().prune_ratio();
      cmd.rewarm = true;
      break;
    case BoundaryKind::kJobEnd:
      break;
  }
  return cmd;
}

}  // namespace relora::train
