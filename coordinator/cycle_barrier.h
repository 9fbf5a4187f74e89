// The per-job barrier at phase boundaries: every rank reports BoundaryReached at the same step;
// then one CycleCommand goes to all ranks; every rank acknowledges; then all ranks resume.
//
//   collecting --(all ranks reported step S)--> awaiting acks --(all ranks acked S)--> collecting
//
// Pure state machine: it decides, the caller (ClusterState) records events and sends messages.
// Threading contract: not thread-safe; each instance is owned by one job record and used only
// under ClusterState's mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/cycle_plan.h"
#include "relora/v1/service.pb.h"

namespace relora::coordinator {

enum class BarrierResult {
  kWaiting,    // recorded; other ranks still to come
  kDuplicate,  // this rank already reported this (a resend after a reconnect): ignore
  kComplete,   // the last rank arrived: boundary -> send command(); ack -> send Resume{step()}
  kError,      // protocol error: fail the job with `error`
};

struct BarrierOutcome {
  BarrierResult result = BarrierResult::kWaiting;
  std::string error;
  // Recovery only: an acknowledgement proved that the previous coordinator had sent command()
  // already; send it to every rank (those that have it ignore the repeat).
  bool send_command = false;
};

class CycleBarrier {
 public:
  // `spec` is the job's resolved spec: world size and the planned boundaries come from it.
  CycleBarrier(std::string job_id, const relora::v1::JobSpec& spec);

  BarrierOutcome boundary(int rank, int64_t step, const std::string& kind);
  BarrierOutcome ack(int rank, int64_t step, const std::string& param_checksum);

  // Recovery after a coordinator restart: this barrier takes over a run that the previous
  // coordinator drove, knowing nothing of where its ranks stand. From now on an acknowledgement
  // without an outstanding command is taken as proof that the previous coordinator collected
  // that boundary and sent its (deterministic) command, rather than as a protocol error.
  void begin_recovery() { recovering_ = true; }
  bool recovering() const { return recovering_; }
  // Recovery: a rank reports that it got the Resume of the boundary at `step` from the previous
  // coordinator, so every rank acknowledged that command. kComplete: the round at `step` is
  // closed now; send Resume{step} to every rank. Otherwise nothing to send.
  BarrierOutcome resumed_before(int64_t step);

  bool awaiting_acks() const { return awaiting_acks_; }
  int64_t step() const { return step_; }  // the boundary being collected or acknowledged
  // The command of the current boundary (valid once boundary() returned kComplete);
  // exactly the plan's command (common/cycle_plan.h) with job_id set.
  const relora::v1::CycleCommand& command() const { return command_; }
  // What `rank` may have missed if its stream broke: the outstanding command it has not
  // acknowledged, or the latest Resume. Workers ignore messages for steps they have handled.
  std::optional<relora::v1::CoordinatorMessage> message_to_resend(int rank) const;

 private:
  std::string next_planned_after(int64_t step) const;

  const std::string job_id_;
  const int world_size_;
  const ReloraPlan plan_;
  int64_t step_ = -1;  // the latest boundary collected (in progress while any rank reported it)
  std::string kind_;
  bool awaiting_acks_ = false;
  std::vector<bool> reported_;
  std::vector<bool> acked_;
  std::vector<std::string> checksums_;
  relora::v1::CycleCommand command_;
  int64_t last_resume_step_ = -1;
  bool recovering_ = false;
};

}  // namespace relora::coordinator
