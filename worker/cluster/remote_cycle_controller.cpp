#include "worker/cluster/remote_cycle_controller.h"

#include <stdexcept>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

namespace relora::cluster {

using train::Boundary;
using train::CycleCommand;

RemoteCycleController::RemoteCycleController(MessageSink& sink, std::string job_id, int rank,
                                             std::chrono::milliseconds timeout)
    : sink_(sink), job_id_(std::move(job_id)), rank_(rank), timeout_(timeout) {}

std::string RemoteCycleController::where(const Boundary& b) const {
  return "job " + job_id_ + ", rank " + std::to_string(rank_) + ", boundary '" + train::boundary_kind_name(b.kind) +
         "' at step " + std::to_string(b.step);
}

relora::v1::WorkerMessage RemoteCycleController::boundary_message(const Boundary& b) const {
  relora::v1::WorkerMessage msg;
  auto* reached = msg.mutable_boundary();
  reached->set_job_id(job_id_);
  reached->set_rank(rank_);
  reached->set_step(b.step);
  reached->set_boundary(train::boundary_kind_name(b.kind));
  return msg;
}

CycleCommand RemoteCycleController::at_boundary(const Boundary& b) {
  const auto msg = boundary_message(b);
  std::unique_lock<std::mutex> lock(mu_);
  // Commands for earlier steps are duplicates (an answer repeated after a reconnect).
  commands_.erase(commands_.begin(), commands_.lower_bound(b.step));
  pending_ = msg;
  lock.unlock();
  sink_.send(msg);
  lock.lock();
  cv_.wait_for(lock, timeout_, [&] { return commands_.lower_bound(b.step) != commands_.end() || stop_; });
  pending_.reset();
  // A command for this step wins over a Cancel that came after it: the other ranks apply it too.
  auto it = commands_.lower_bound(b.step);
  if (it != commands_.end()) {
    if (it->first != b.step)
      throw std::runtime_error(where(b) + ": the coordinator sent the command for step " + std::to_string(it->first) +
                               " (out of lockstep)");
    const relora::v1::CycleCommand cmd = it->second;
    commands_.erase(commands_.begin(), std::next(it));
    if (cmd.boundary() != train::boundary_kind_name(b.kind))
      throw std::runtime_error(where(b) + ": the coordinator's command for this step is for boundary '" +
                               cmd.boundary() + "'");
    CycleCommand command;
    try {
      command = train::command_from_proto(cmd);
    } catch (const std::exception& e) {
      throw std::runtime_error(where(b) + ": bad command from the coordinator: " + e.what());
    }
    if (command.stop && !stop_) {
      // The coordinator ends this run here: stop as for a Cancel (no acknowledgement awaited).
      stop_ = true;
      stop_reason_ = cmd.reason().empty() ? "stopped by the coordinator at step " + std::to_string(b.step)
                                          : "stopped by the coordinator: " + cmd.reason();
    }
    return command;
  }
  if (stop_) {
    CycleCommand stop;
    stop.stop = true;
    stop.checkpoint = true;  // rank 0 saves, so that the job can resume from here
    return stop;
  }
  throw std::runtime_error(where(b) + fmt::format(": no command from the coordinator within {:g} s",
                                                  std::chrono::duration<double>(timeout_).count()));
}

void RemoteCycleController::acknowledge(const Boundary& b, const std::string& param_checksum) {
  relora::v1::WorkerMessage msg;
  auto* ack = msg.mutable_ack();
  ack->set_job_id(job_id_);
  ack->set_rank(rank_);
  ack->set_step(b.step);
  ack->set_param_checksum(param_checksum);
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_) return;  // the command was a stop: nothing to resume
  pending_ = msg;
  lock.unlock();
  sink_.send(msg);
  lock.lock();
  const bool resumed = cv_.wait_for(lock, timeout_, [&] { return resumed_step_ >= b.step || stop_; });
  pending_.reset();
  if (resumed_step_ > b.step)
    throw std::runtime_error(where(b) + ": the coordinator resumed step " + std::to_string(resumed_step_) +
                             " (out of lockstep)");
  // On a Cancel, return: stop_requested() ends the job between steps, on all ranks together.
  if (!resumed)
    throw std::runtime_error(where(b) + fmt::format(": no Resume from the coordinator within {:g} s of the "
                                                    "acknowledgement",
                                                    std::chrono::duration<double>(timeout_).count()));
}

bool RemoteCycleController::stop_requested() {
  if (group_stop_) return group_stop_();
  return stopping();
}

void RemoteCycleController::deliver(const relora::v1::CoordinatorMessage& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  switch (msg.body_case()) {
    case relora::v1::CoordinatorMessage::kCommand:
      if (msg.command().job_id() != job_id_) return;
      commands_[msg.command().step()] = msg.command();
      break;
    case relora::v1::CoordinatorMessage::kResume:
      if (msg.resume().job_id() != job_id_) return;
      if (msg.resume().step() > resumed_step_) resumed_step_ = msg.resume().step();
      break;
    case relora::v1::CoordinatorMessage::kCancel:
      if (msg.cancel().job_id() != job_id_) return;
      if (!stop_) stop_reason_ = "cancelled by the coordinator";
      stop_ = true;
      break;
    default:
      return;
  }
  cv_.notify_all();
}

void RemoteCycleController::request_stop(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!stop_) stop_reason_ = reason;
  stop_ = true;
  cv_.notify_all();
}

bool RemoteCycleController::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

std::string RemoteCycleController::stop_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_reason_;
}

int64_t RemoteCycleController::resumed_step() const {
  std::lock_guard<std::mutex> lock(mu_);
  return resumed_step_;
}

bool RemoteCycleController::waiting_on_coordinator() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.has_value();
}

void RemoteCycleController::resend_pending() {
  std::optional<relora::v1::WorkerMessage> msg;
  {
    std::lock_guard<std::mutex> lock(mu_);
    msg = pending_;
  }
  if (msg) {
    spdlog::info("job {}: sending the pending {} for step {} again after reconnecting", job_id_,
                 msg->has_boundary() ? "boundary" : "acknowledgement",
                 msg->has_boundary() ? msg->boundary().step() : msg->ack().step());
    sink_.send(*msg);
  }
}

}  // namespace relora::cluster
