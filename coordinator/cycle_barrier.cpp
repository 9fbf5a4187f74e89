#include "coordinator/cycle_barrier.h"

#include <algorithm>

#include "common/cycle_plan.h"

namespace relora::coordinator {
namespace {

BarrierOutcome error(std::string why) { return {BarrierResult::kError, std::move(why)}; }

int count(const std::vector<bool>& v) { return static_cast<int>(std::count(v.begin(), v.end(), true)); }

}  // namespace

CycleBarrier::CycleBarrier(std::string job_id, const relora::v1::JobSpec& spec)
    : job_id_(std::move(job_id)),
      world_size_(std::max(1, spec.cluster().workers())),
      plan_(spec),
      reported_(world_size_, false),
      acked_(world_size_, false),
      checksums_(world_size_) {}

std::string CycleBarrier::next_planned_after(int64_t step) const {
  for (const auto& b : plan_.boundaries())
    if (b.step >= step) return std::string(boundary_kind_name(b.kind)) + " at step " + std::to_string(b.step);
  return "none";
}

BarrierOutcome CycleBarrier::boundary(int rank, int64_t step, const std::string& kind) {
  const std::string who = "rank " + std::to_string(rank);
  if (rank < 0 || rank >= world_size_)
    return error(who + " is outside the job's world size " + std::to_string(world_size_));
  if (awaiting_acks_) {
    if (step == step_ && kind == kind_) return {BarrierResult::kDuplicate, {}};
    return error("protocol error: " + who + " reported boundary " + kind + " at step " + std::to_string(step) +
                 " while the command for step " + std::to_string(step_) + " awaits acknowledgements");
  }
  // The trainer reads the same plan; a boundary outside it means the worker and coordinator
  // disagree about the job (different versions or a corrupted spec).
  const auto planned = plan_.boundary_at(step);
  if (!planned || boundary_kind_name(planned->kind) != kind) {
    return error("protocol error: " + who + " reported boundary " + kind + " at step " + std::to_string(step) +
                 ", which is not in the job's plan (next planned: " + next_planned_after(step) + ")");
  }
  if (step < last_resume_step_) {
    return error("protocol error: " + who + " reported boundary " + kind + " at step " + std::to_string(step) +
                 " after the ranks already resumed at step " + std::to_string(last_resume_step_));
  }
  if (step == last_resume_step_) return {BarrierResult::kDuplicate, {}};  // that barrier is done
  if (count(reported_) > 0 && (step != step_ || kind != kind_)) {
    // Report the rank that arrived first, so the message says who disagrees with whom.
    int first = 0;
    while (first < world_size_ && !reported_[first]) ++first;
    return error("protocol error: rank " + std::to_string(rank) + " reported boundary " + kind + " at step " +
                 std::to_string(step) + " but rank " + std::to_string(first) + " reported " + kind_ + " at step " +
                 std::to_string(step_) + ": the ranks are out of lockstep");
  }
  if (reported_[rank]) return {BarrierResult::kDuplicate, {}};
  step_ = step;
  kind_ = kind;
  reported_[rank] = true;
  if (count(reported_) < world_size_) return {BarrierResult::kWaiting, {}};

  command_ = plan_.command(planned->kind, step);
  command_.set_job_id(job_id_);
  awaiting_acks_ = true;
  std::fill(acked_.begin(), acked_.end(), false);
  std::fill(checksums_.begin(), checksums_.end(), std::string());
  return {BarrierResult::kComplete, {}};
}

BarrierOutcome CycleBarrier::ack(int rank, int64_t step, const std::string& param_checksum) {
  const std::string who = "rank " + std::to_string(rank);
  if (rank < 0 || rank >= world_size_)
    return error(who + " is outside the job's world size " + std::to_string(world_size_));
  bool recovered_command = false;
  if (!awaiting_acks_) {
    if (step == last_resume_step_) return {BarrierResult::kDuplicate, {}};
    const auto planned = plan_.boundary_at(step);
    const bool same_round = count(reported_) == 0 || step == step_;
    if (!recovering_ || step < last_resume_step_ || !planned || !same_round)
      return error("protocol error: " + who + " acknowledged a command at step " + std::to_string(step) +
                   " but no command is outstanding");
    // Every rank had reported this boundary to the previous coordinator (it sends a command only
    // then), and the command is the plan's: take the round up where it was.
    step_ = step;
    kind_ = boundary_kind_name(planned->kind);
    command_ = plan_.command(planned->kind, step);
    command_.set_job_id(job_id_);
    awaiting_acks_ = true;
    std::fill(reported_.begin(), reported_.end(), true);
    std::fill(acked_.begin(), acked_.end(), false);
    std::fill(checksums_.begin(), checksums_.end(), std::string());
    recovered_command = true;
  }
  if (step != step_) {
    return error("protocol error: " + who + " acknowledged step " + std::to_string(step) +
                 " but the outstanding command is for step " + std::to_string(step_));
  }
  if (acked_[rank]) return {BarrierResult::kDuplicate, {}};
  acked_[rank] = true;
  checksums_[rank] = param_checksum;
  if (count(acked_) < world_size_) return {BarrierResult::kWaiting, {}, recovered_command};

  // Ranks in lockstep hold bit-identical parameters after a command; a difference means a merge
  // or re-init diverged and every later step would silently train different models.
  for (int r = 1; r < world_size_; ++r) {
    if (!checksums_[0].empty() && !checksums_[r].empty() && checksums_[r] != checksums_[0]) {
      return error("ranks diverged after the " + kind_ + " command at step " + std::to_string(step_) +
                   ": rank 0 parameter checksum " + checksums_[0] + ", rank " + std::to_string(r) + " " +
                   checksums_[r]);
    }
  }
  awaiting_acks_ = false;
  last_resume_step_ = step_;
  std::fill(reported_.begin(), reported_.end(), false);
  return {BarrierResult::kComplete, {}};
}

BarrierOutcome CycleBarrier::resumed_before(int64_t step) {
  if (step <= last_resume_step_) return {BarrierResult::kDuplicate, {}};
  // A rank got Resume{step}: every rank acknowledged that command (some of those acks may not
  // have reached this barrier). Ranks are never more than one round apart, so a round collected
  // or acknowledged here at `step` is that one.
  const bool open_round = (awaiting_acks_ || count(reported_) > 0) && step_ == step;
  last_resume_step_ = step;
  if (awaiting_acks_ && step_ < step) awaiting_acks_ = false;  // an older round, closed as well
  if (!open_round) return {BarrierResult::kWaiting, {}};
  awaiting_acks_ = false;
  std::fill(reported_.begin(), reported_.end(), false);
  return {BarrierResult::kComplete, {}};
}

std::optional<relora::v1::CoordinatorMessage> CycleBarrier::message_to_resend(int rank) const {
  if (rank < 0 || rank >= world_size_) return std::nullopt;
  relora::v1::CoordinatorMessage msg;
  if (awaiting_acks_ && !acked_[rank]) {
    *msg.mutable_command() = command_;
    return msg;
  }
  if (!awaiting_acks_ && last_resume_step_ >= 0 && !reported_[rank]) {
    msg.mutable_resume()->set_job_id(job_id_);
    msg.mutable_resume()->set_step(last_resume_step_);
    return msg;
  }
  return std::nullopt;
}

}  // namespace relora::coordinator
