// The cluster's CycleController: the coordinator answers every phase boundary, so that all ranks
// of a job apply the same command at the same step.
//
// Protocol, per boundary at step s (see proto/relora/v1/service.proto):
//   worker -> BoundaryReached{job, rank, s, name}   coordinator -> CycleCommand{step = s}
//   (the trainer applies the command)
//   worker -> CommandAck{job, rank, s, checksum}     coordinator -> Resume{step = s}
// The job-end boundary gets a command but no acknowledgement (the trainer only evaluates then).
// A command for another step or boundary is an error (the ranks left lockstep); a command for an
// earlier step (a duplicate after a reconnect) is ignored. Each wait is bounded by `timeout`.
//
// Cancel: waiting at a boundary, it returns a stop command (rank 0 checkpoints first), since all
// ranks wait there for the same coordinator and none is inside a collective. The coordinator may
// also send a stop command itself (to regroup the job onto more workers): the controller then
// stops as for a Cancel, with the command's reason, and the stop is not acknowledged. Between steps,
// stop_requested() turns true: on every rank at the same step when set_group_stop() connects it to
// the ranks' agreed vote (distributed::StopVote), else (a single rank) at once.
//
// Threading: at_boundary / acknowledge / stop_requested run on the training thread; deliver() on
// the stream's reader thread; request_stop() on any thread; resend_pending() on the connection
// thread after a reconnect. State below mu_ is guarded by it; none of these block on the network.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "relora/v1/service.pb.h"
#include "worker/cluster/message_sink.h"
#include "worker/train/cycle_controller.h"

namespace relora::cluster {

class RemoteCycleController final : public train::CycleController {
 public:
  RemoteCycleController(MessageSink& sink, std::string job_id, int rank, std::chrono::milliseconds timeout);
  RemoteCycleController(const RemoteCycleController&) = delete;
  RemoteCycleController& operator=(const RemoteCycleController&) = delete;

  // train::CycleController. Both waits throw std::runtime_error on a timeout or out-of-lockstep
  // message, naming the job, rank, step and boundary.
  train::CycleCommand at_boundary(const train::Boundary& boundary) override;
  void acknowledge(const train::Boundary& boundary, const std::string& param_checksum) override;
  bool wants_parameter_checksum() const override { return true; }
  bool stop_requested() override;

  // A CycleCommand, Resume or Cancel for this job (others are ignored).
  void deliver(const relora::v1::CoordinatorMessage& msg);
  // Stops the job as a Cancel does (the worker is shutting down, say).
  void request_stop(const std::string& reason);
  bool stopping() const;
  std::string stop_reason() const;
  // The newest boundary step the coordinator resumed this rank from (-1: none yet).
  int64_t resumed_step() const;
  // True while the training thread waits for a command or Resume (the boundary timeout bounds it).
  bool waiting_on_coordinator() const;
  // With world > 1: stop_requested() reports the ranks' agreed vote instead of the local flag.
  void set_group_stop(std::function<bool()> agreed) { group_stop_ = std::move(agreed); }
  // Sends again the boundary or acknowledgement being waited on (its answer may have been lost
  // with the previous connection; the coordinator answers repeats idempotently).
  void resend_pending();

  const std::string& job_id() const { return job_id_; }

 private:
  relora::v1::WorkerMessage boundary_message(const train::Boundary& b) const;
  std::string where(const train::Boundary& b) const;

  // Constant after construction.
  MessageSink& sink_;
  const std::string job_id_;
  const int rank_;
  const std::chrono::milliseconds timeout_;
  std::function<bool()> group_stop_;  // set before training starts

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // State below is protected by mu_.
  std::map<int64_t, relora::v1::CycleCommand> commands_;  // by step, not yet consumed
  int64_t resumed_step_ = -1;                              // highest Resume step received
  bool stop_ = false;
  std::string stop_reason_;
  std::optional<relora::v1::WorkerMessage> pending_;  // the boundary or ack being waited on
};

}  // namespace relora::cluster
