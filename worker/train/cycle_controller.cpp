#include "worker/train/cycle_controller.h"

namespace relora::train {

CycleCommand command_from_proto(const relora::v1::CycleCommand& p) {
  CycleCommand cmd;
  cmd.enable_low_rank = p.enable_low_rank();
  cmd.merge = p.merge();
  cmd.seed = p.seed();
  cmd.reset = parse_reset_mode(p.optimizer_reset());
  cmd.prune_ratio = p.prune_ratio();
  cmd.rewarm = p.rewarm();
  cmd.checkpoint = p.checkpoint();
  cmd.evaluate = p.evaluate();
  cmd.stop = p.stop();
  return cmd;
}

CycleCommand LocalCycleController::at_boundary(const Boundary& boundary) {
  return command_from_proto(plan_.command(boundary.kind, boundary.step));
}

}  // namespace relora::train
