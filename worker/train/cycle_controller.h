// The one narrow interface through which the training loop asks what to do at a cycle boundary.
//
// The trainer calls at_boundary() before the first step of every new phase: the end of the
// full-rank warm start (enable the low-rank branches) and every ReLoRA cycle boundary (merge,
// re-init, optimizer reset, re-warm), and once at the end of the job. It applies the answer
// exactly at that step. In standalone mode LocalCycleController answers from the job spec; in a
// cluster the coordinator answers (the same command to every rank), behind this same interface.
#pragma once

#include <cstdint>
#include <string>

#include "common/cycle_plan.h"
#include "relora/v1/job.pb.h"
#include "relora/v1/service.pb.h"
#include "worker/train/adamw.h"

namespace relora::train {

// The plan's boundary kinds (common/cycle_plan.h), by their short names here.
using relora::BoundaryKind;
using relora::boundary_kind_name;

struct Boundary {
  BoundaryKind kind = BoundaryKind::kCycleEnd;
  int64_t step = 0;   // the step about to run (steps completed so far)
  int64_t cycle = 0;  // index of the cycle that starts at `step` (kCycleEnd: >= 1)
};

struct CycleCommand {
  bool enable_low_rank = false;  // kLowRankStart: add the branches, A drawn from `seed`
  bool merge = false;            // merge every branch into W and re-draw A from `seed`
  uint64_t seed = 0;
  ResetMode reset = ResetMode::kNone;
  double prune_ratio = 0.0;
  bool rewarm = false;      // the learning rate restarts its warm-up here (jagged schedule)
  bool checkpoint = false;  // save a checkpoint right after applying the command
  bool evaluate = false;    // run an evaluation right after applying the command
  bool stop = false;        // stop the job here (cancelled)
};

class CycleController {
 public:
  virtual ~CycleController() = default;
  virtual CycleCommand at_boundary(const Boundary& boundary) = 0;
  // Called once the command of `boundary` has been applied, with a checksum of the parameters
  // when wants_parameter_checksum() (ranks in lockstep report equal checksums). A cluster
  // controller reports the acknowledgement and returns when every rank has acknowledged.
  virtual void acknowledge(const Boundary& /*boundary*/, const std::string& /*param_checksum*/) {}
  virtual bool wants_parameter_checksum() const { return false; }
  // Polled between steps: true when the job was cancelled from outside.
  virtual bool stop_requested() { return false; }
};

// Answers from the job's ReloraPlan (standalone mode): exactly the commands the coordinator sends
// in a cluster.
class LocalCycleController : public CycleController {
 public:
  explicit LocalCycleController(const relora::v1::JobSpec& spec) : plan_(spec) {}
  CycleCommand at_boundary(const Boundary& boundary) override;

 private:
  ReloraPlan plan_;
};

// The wire form of a command (from the coordinator or plan_command) as the trainer applies it.
// Throws std::invalid_argument on an unknown optimizer reset mode.
CycleCommand command_from_proto(const relora::v1::CycleCommand& cmd);

}  // namespace relora::train
