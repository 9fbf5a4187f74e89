// ClusterState, worker side: registration, heartbeats, the Connect stream, the messages workers
// send during a job (boundaries, acknowledgements, progress, logs, results) and lost workers.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/cycle_plan.h"
#include "coordinator/cluster_state.h"
#include "coordinator/duration.h"

namespace relora::coordinator {

using relora::v1::CoordinatorMessage;

namespace {

grpc::Status worker_not_found(const std::string& worker_id) {
  return {grpc::StatusCode::NOT_FOUND, "worker '" + worker_id + "' not found: call Register first"};
}

// NOT_FOUND rather than FAILED_PRECONDITION: to the worker a lost worker is one the coordinator
// forgot, and the remedy is the same (Register again, with its id); workers re-register on
// NOT_FOUND at once.
grpc::Status worker_was_lost(const std::string& worker_id) {
  return {grpc::StatusCode::NOT_FOUND,
          "worker '" + worker_id + "' was marked lost; call Register with worker_id='" + worker_id + "' to rejoin"};
}

}  // namespace

ClusterState::WorkerRecord* ClusterState::find_worker_locked(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? nullptr : &it->second;
}

grpc::Status ClusterState::register_worker(const relora::v1::RegisterRequest& req, relora::v1::RegisterResponse* out) {
  if (req.host().empty())
    return {grpc::StatusCode::INVALID_ARGUMENT, "host: required (how other ranks reach this worker)"};
  if (req.rendezvous_port() < 1 || req.rendezvous_port() > 65535) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "rendezvous_port: " + std::to_string(req.rendezvous_port()) +
                " must be a port in 1..65535 (a free port this worker can host the c10d store on)"};
  }
  if (req.memory_bytes() < 0) return {grpc::StatusCode::INVALID_ARGUMENT, "memory_bytes: must be >= 0"};
  if (req.worker_id().size() > 128)
    return {grpc::StatusCode::INVALID_ARGUMENT, "worker_id: longer than 128 characters"};

  PumpList pumps;  // Resumes to the other ranks of an adopted run
  std::unique_lock<std::mutex> lk(mu_);
  std::string id = req.worker_id();
  WorkerRecord* w = id.empty() ? nullptr : find_worker_locked(id);
  if (w == nullptr) {
    // A given but unknown id is accepted as is: its worker was registered with a coordinator
    // that has since restarted (workers are not persisted), and keeping the id keeps logs
    // readable across the restart.
    if (id.empty()) {
      do id = ids_.next("worker");
      while (workers_.count(id) > 0);
    }
    w = &workers_[id];
    w->order = next_worker_order_++;
    w->info.set_id(id);
    w->info.set_state("idle");
    w->info.set_rank(-1);
    spdlog::info("worker {} registered: host {}, device {}", id, req.host(), req.device());
  } else if (w->lost()) {
    // Its job (if any) was restarted or failed when it was lost; it comes back empty-handed.
    w->info.set_state("idle");
    w->draining_job.clear();
    spdlog::info("worker {} rejoined after being lost", id);
  } else {
    spdlog::info("worker {} re-registered", id);
  }
  JobRecord* running = req.running_job_id().empty() ? nullptr : find_job_locked(req.running_job_id());
  const bool adopted = running != nullptr && running->adopting && req.running_job_id() != w->info.job_id() &&
                       adopt_rank_locked(*running, *w, req.running_rank(), req.running_world_size(),
                                         req.running_run(), req.running_resumed_step(), pumps);
  if (!adopted && !req.running_job_id().empty() && req.running_job_id() != w->info.job_id() &&
      req.running_job_id() != w->draining_job) {
    // A run this coordinator did not start and cannot adopt (it gave the job up, or the run is
    // not the one it knows): stop it, and keep the worker out of scheduling until it has (the
    // Cancel goes out when its stream opens).
    spdlog::info("worker {} is still running job {} from before; stopping that run", id, req.running_job_id());
    w->draining_job = req.running_job_id();
    w->draining_since = SteadyClock::now();
  }
  w->exiting = false;  // a process that registers is not on its way out
  w->info.set_host(req.host());
  w->info.set_device(req.device());
  w->info.set_memory_bytes(req.memory_bytes());
  w->rendezvous_port = req.rendezvous_port();
  w->last_seen = SteadyClock::now();
  // A full timeout from now to open (or reopen) its stream.
  if (!w->link) w->disconnected_since = w->last_seen;
  w->info.set_last_heartbeat_unix_ms(unix_ms_now());
  out->set_worker_id(id);
  // Three heartbeats per timeout: one lost or late RPC does not make a worker lost.
  out->set_heartbeat_interval_ms(std::max<int64_t>(1, options_.heartbeat_timeout.count() / 3));
  publish_counts_locked();
  wake_locked();  // its deadline may be the earliest now
  lk.unlock();
  pumps.run();
  return grpc::Status::OK;
}

grpc::Status ClusterState::heartbeat(const std::string& worker_id) {
  if (worker_id.empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "worker_id: required"};
  std::lock_guard<std::mutex> lk(mu_);
  WorkerRecord* w = find_worker_locked(worker_id);
  if (w == nullptr) return worker_not_found(worker_id);
  if (w->lost()) return worker_was_lost(worker_id);
  w->last_seen = SteadyClock::now();
  w->info.set_last_heartbeat_unix_ms(unix_ms_now());
  return grpc::Status::OK;
}

grpc::Status ClusterState::attach_stream(const std::string& worker_id, std::shared_ptr<WorkerLink> link) {
  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    WorkerRecord* w = find_worker_locked(worker_id);
    if (w == nullptr) return worker_not_found(worker_id);
    if (w->lost()) return worker_was_lost(worker_id);
    if (w->link && w->link != link) {
      w->link->close({grpc::StatusCode::ABORTED, "replaced by a newer stream from the same worker"});
      pumps.add(w->link);
    }
    w->link = std::move(link);
    w->last_seen = SteadyClock::now();
    spdlog::info("worker {} connected", worker_id);
    if (!w->draining_job.empty()) {
      // Its stopped run may have missed the Cancel with the old stream: send it (again).
      relora::v1::CoordinatorMessage cancel;
      cancel.mutable_cancel()->set_job_id(w->draining_job);
      send_locked(*w, cancel, pumps);
    }
    if (!w->info.job_id().empty()) {
      // Reconnected mid-job: whatever the barrier sent while the old stream was dying may be
      // lost; resend it (workers ignore a command or resume for a step they already handled).
      JobRecord* job = find_job_locked(w->info.job_id());
      if (job != nullptr && job->barrier) {
        if (auto msg = job->barrier->message_to_resend(w->info.rank())) send_locked(*w, *msg, pumps);
      }
    }
    schedule_locked(pumps);
  }
  pumps.run();
  return grpc::Status::OK;
}

void ClusterState::detach_stream(const std::string& worker_id, const WorkerLink* link) {
  std::lock_guard<std::mutex> lk(mu_);
  WorkerRecord* w = find_worker_locked(worker_id);
  if (w == nullptr || w->link.get() != link) return;  // already replaced by a newer stream
  w->link.reset();
  w->disconnected_since = SteadyClock::now();
  spdlog::info("worker {} disconnected", worker_id);
  wake_locked();
}

grpc::Status ClusterState::on_worker_message(const std::string& worker_id, const relora::v1::WorkerMessage& msg) {
  if (!msg.worker_id().empty() && msg.worker_id() != worker_id) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "worker_id: this stream belongs to '" + worker_id + "', got '" + msg.worker_id() + "'"};
  }
  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    WorkerRecord* w = find_worker_locked(worker_id);
    if (w == nullptr) return worker_not_found(worker_id);
    if (w->lost()) return worker_was_lost(worker_id);
    w->last_seen = SteadyClock::now();  // any stream message counts as a heartbeat
    w->info.set_last_heartbeat_unix_ms(unix_ms_now());
    switch (msg.body_case()) {
      case relora::v1::WorkerMessage::kBoundary:
        on_boundary_locked(*w, msg.boundary(), pumps);
        break;
      case relora::v1::WorkerMessage::kAck:
        on_ack_locked(*w, msg.ack(), pumps);
        break;
      case relora::v1::WorkerMessage::kProgress:
        on_progress_locked(*w, msg.progress(), pumps);
        break;
      case relora::v1::WorkerMessage::kFinished:
        on_finished_locked(*w, msg.finished(), pumps);
        break;
      case relora::v1::WorkerMessage::kLog:
        on_log_locked(*w, msg.log(), pumps);
        break;
      default:
        break;  // a repeated hello or an empty keep-alive
    }
  }
  pumps.run();
  return grpc::Status::OK;
}

ClusterState::JobRecord* ClusterState::job_of_message_locked(WorkerRecord& w, const std::string& job_id, int32_t rank,
                                                             PumpList& pumps) {
  JobRecord* job = job_id.empty() ? nullptr : find_job_locked(job_id);
  // A rank of a run being adopted that reports before it registered as running it (say, the
  // JobFinished of a rank that finished while the coordinator was away): adopt it first.
  const bool adopted = job != nullptr && job->adopting && job_id != w.info.job_id() &&
                       adopt_rank_locked(*job, w, rank, job->job.world_size(), job->job.run(), -1, pumps);
  if (!adopted && (job_id.empty() || job_id != w.info.job_id())) {
    // Typically a report still in flight when the job was cancelled or failed.
    spdlog::debug("worker {}: ignoring a message for job '{}' (its job: '{}')", w.info.id(), job_id, w.info.job_id());
    return nullptr;
  }
  if (job == nullptr || job->job.state() != relora::v1::JOB_STATE_RUNNING) return nullptr;
  if (rank != w.info.rank()) {
    finish_job_locked(*job, relora::v1::JOB_STATE_FAILED,
                      "protocol error: worker " + w.info.id() + " has rank " + std::to_string(w.info.rank()) +
                          " but sent a message as rank " + std::to_string(rank),
                      /*cancel_ranks=*/true, pumps);
    return nullptr;
  }
  return job;
}

void ClusterState::note_started_locked(JobRecord& job) {
  if (job.started_event) return;
  job.started_event = true;
  add_event_locked(job, job.job.progress().step(), -1, "started", "the workers started training");
}

void ClusterState::on_boundary_locked(WorkerRecord& w, const relora::v1::BoundaryReached& m, PumpList& pumps) {
  JobRecord* job = job_of_message_locked(w, m.job_id(), m.rank(), pumps);
  if (job == nullptr) return;
  note_started_locked(*job);
  const BarrierOutcome outcome = job->barrier->boundary(m.rank(), m.step(), m.boundary());
  if (outcome.result == BarrierResult::kError) {
    finish_job_locked(*job, relora::v1::JOB_STATE_FAILED, outcome.error, /*cancel_ranks=*/true, pumps);
    return;
  }
  if (outcome.result == BarrierResult::kDuplicate) {
    // A boundary sent again (after a reconnect or a coordinator restart): whatever answers it may
    // have been lost with the stream.
    if (auto msg = job->barrier->message_to_resend(m.rank())) send_locked(w, *msg, pumps);
    return;
  }
  metrics_.job_progress(job->job.id());
  add_event_locked(*job, m.step(), m.rank(), "boundary",
                   "rank " + std::to_string(m.rank()) + " reached " + m.boundary());
  if (outcome.result != BarrierResult::kComplete) return;

  // Every rank stands at the same boundary: one command, identical for all.
  const relora::v1::CycleCommand& cmd = job->barrier->command();
  std::string what = cmd.boundary() + ":";
  if (cmd.enable_low_rank()) what += " enable low-rank";
  if (cmd.merge()) what += " merge";
  if (cmd.optimizer_reset() != "none")
    what += " reset " + cmd.optimizer_reset() + " p=" + std::to_string(cmd.prune_ratio());
  if (cmd.rewarm()) what += " rewarm";
  if (!cmd.enable_low_rank() && !cmd.merge()) what += " no change";
  what += " (seed " + std::to_string(cmd.seed()) + ")";
  add_event_locked(*job, m.step(), -1, "command", what);
  job->command_sent = SteadyClock::now();
  metrics_.command_sent(cmd.boundary());
  // The boundary where every rank already waits is where a job below its size takes free
  // workers back (not the job's end: nothing is left to train).
  if (cmd.boundary() != relora::boundary_kind_name(relora::BoundaryKind::kJobEnd)) {
    if (const int32_t world = regroup_world_locked(*job); world > 0) {
      start_regroup_locked(*job, world, cmd, pumps);
      return;
    }
  }
  CoordinatorMessage msg;
  *msg.mutable_command() = cmd;
  send_to_ranks_locked(*job, msg, pumps);
}

void ClusterState::on_ack_locked(WorkerRecord& w, const relora::v1::CommandAck& m, PumpList& pumps) {
  JobRecord* job = job_of_message_locked(w, m.job_id(), m.rank(), pumps);
  if (job == nullptr) return;
  const BarrierOutcome outcome = job->barrier->ack(m.rank(), m.step(), m.param_checksum());
  if (outcome.result == BarrierResult::kDuplicate) {
    if (auto msg = job->barrier->message_to_resend(m.rank())) send_locked(w, *msg, pumps);
    return;
  }
  if (outcome.result == BarrierResult::kError) {
    finish_job_locked(*job, relora::v1::JOB_STATE_FAILED, outcome.error, /*cancel_ranks=*/true, pumps);
    return;
  }
  if (outcome.send_command) {
    // Recovery: the previous coordinator sent this command; ranks that missed it get it now.
    CoordinatorMessage cmd;
    *cmd.mutable_command() = job->barrier->command();
    send_to_ranks_locked(*job, cmd, pumps);
  }
  metrics_.job_progress(job->job.id());
  add_event_locked(*job, m.step(), m.rank(), "ack", "rank " + std::to_string(m.rank()) + " applied the command",
                   m.param_checksum());
  if (outcome.result != BarrierResult::kComplete) return;
  // The job-end command is never acknowledged; every other one is timed to its last ack.
  if (job->barrier->command().boundary() != relora::boundary_kind_name(relora::BoundaryKind::kJobEnd))
    metrics_.command_acknowledged(seconds_since(job->command_sent));
  add_event_locked(*job, m.step(), -1, "resumed", "every rank applied the command; resuming");
  CoordinatorMessage msg;
  msg.mutable_resume()->set_job_id(job->job.id());
  msg.mutable_resume()->set_step(m.step());
  send_to_ranks_locked(*job, msg, pumps);
}

void ClusterState::on_progress_locked(WorkerRecord& w, const relora::v1::ProgressReport& m, PumpList& pumps) {
  JobRecord* job = job_of_message_locked(w, m.job_id(), m.rank(), pumps);
  if (job == nullptr) return;
  note_started_locked(*job);
  metrics_.job_progress(job->job.id());
  if (m.rank() != 0) return;  // rank 0 speaks for the job (it sees the global loss)
  *job->job.mutable_progress() = m.progress();
  if (!m.checkpoint().empty()) job->job.set_checkpoint(m.checkpoint());
  persist_locked(*job);
}

void ClusterState::on_log_locked(WorkerRecord& w, const relora::v1::WorkerLog& m, PumpList& pumps) {
  JobRecord* job = job_of_message_locked(w, m.job_id(), m.rank(), pumps);
  if (job == nullptr) return;
  // Only the worker's own kinds: a worker must not be able to forge coordinator events such as
  // "completed" that clients act on.
  const bool known = m.kind() == "checkpoint" || m.kind() == "eval" || m.kind() == "log";
  add_event_locked(*job, m.step(), m.rank(), known ? m.kind() : "log",
                   known || m.kind().empty() ? m.message() : "[" + m.kind() + "] " + m.message());
}

void ClusterState::on_finished_locked(WorkerRecord& w, const relora::v1::JobFinished& m, PumpList& pumps) {
  if (!w.draining_job.empty() && w.draining_job == m.job_id()) {
    // The stopped run has wound down on this worker: it is free for the next one (which may be
    // the same job, restarted).
    w.draining_job.clear();
    schedule_locked(pumps);
    publish_counts_locked();
    return;
  }
  JobRecord* job = job_of_message_locked(w, m.job_id(), m.rank(), pumps);
  if (job == nullptr) return;
  if (job->regroup_world > 0) {
    // The stop of a regroup (or a failure on its way there: the next run starts from the
    // checkpoint all the same).
    regroup_locked(*job, w.info.id(), pumps);
    return;
  }
  const bool recovering = job->barrier && job->barrier->recovering();
  // Before the restart below schedules the job again: not onto a worker that is going away.
  if (m.worker_exiting()) w.exiting = true;
  if (!m.ok()) {
    const std::string error = "rank " + std::to_string(m.rank()) + " (worker " + w.info.id() +
                              ") failed: " + (m.error().empty() ? "no error message" : m.error());
    restart_or_fail_locked(*job, error, m.retryable(), w.info.id(), pumps);
    return;
  }
  if (m.rank() != 0) {
    // The job is done when rank 0 (which writes the summary) is done. In an adopted run a rank
    // that finished is let go at once: rank 0's end cancels the ranks still bound (below), which
    // must not include one whose end has already been reported.
    if (recovering) {
      w.info.clear_job_id();
      w.info.set_rank(-1);
      w.info.set_state("idle");
      publish_counts_locked();
    }
    return;
  }
  job->job.set_summary_json(m.summary_json());
  spdlog::info("job {} completed", job->job.id());
  // An adopted run may have a rank still waiting at the job end for a command that the previous
  // coordinator sent only to the others: cancel it (a stop at the job end only evaluates).
  finish_job_locked(*job, relora::v1::JOB_STATE_COMPLETED, "", /*cancel_ranks=*/recovering, pumps);
}

void ClusterState::check_workers_locked(SteadyClock::time_point now, PumpList& pumps) {
  const std::string timeout = format_duration(options_.heartbeat_timeout);
  for (auto& [id, w] : workers_) {
    if (w.lost()) continue;
    // A cancelled run that never reports its end (a hung collective that outlives its own
    // timeout): stop waiting for it rather than keep the worker out of scheduling forever.
    const auto drain_limit = std::max<std::chrono::milliseconds>(std::chrono::minutes(5), 12 * options_.heartbeat_timeout);
    if (!w.draining_job.empty() && now - w.draining_since > drain_limit) {
      spdlog::warn("worker {}: job {} did not report its end within {} of its cancel; treating the worker as free",
                   id, w.draining_job, format_duration(drain_limit));
      w.draining_job.clear();
      schedule_locked(pumps);
    }
    if (now - w.last_seen > options_.heartbeat_timeout) {
      metrics_.heartbeat_missed();
      mark_lost_locked(w, "no heartbeat for " + timeout, pumps);
    } else if (!w.link && now - w.disconnected_since > options_.heartbeat_timeout) {
      mark_lost_locked(w, "stream disconnected for " + timeout, pumps);
    }
  }
}

void ClusterState::mark_lost_locked(WorkerRecord& w, const std::string& why, PumpList& pumps) {
  const std::string id = w.info.id();
  const std::string job_id = w.info.job_id();
  const int32_t rank = w.info.rank();
  spdlog::warn("worker {} lost: {}", id, why);
  // Lost first: failing the job reschedules, and the freed gang must not include this worker.
  w.info.set_state("lost");
  w.draining_job.clear();
  if (JobRecord* job = job_id.empty() ? nullptr : find_job_locked(job_id)) {
    const std::string reason = "worker " + id + " (rank " + std::to_string(rank) + ") lost: " + why;
    add_event_locked(*job, job->job.progress().step(), rank, "worker_lost", reason);
    // Cancel goes to every rank, the lost one too: if it is merely slow it must stop as well.
    restart_or_fail_locked(*job, reason, /*retryable=*/true, "", pumps);
  }
  w.info.clear_job_id();
  w.info.set_rank(-1);
  if (w.link) {
    w.link->close({grpc::StatusCode::UNAVAILABLE, "worker marked lost (" + why + "); register again"});
    pumps.add(w.link);
    w.link.reset();
  }
  publish_counts_locked();
}

}  // namespace relora::coordinator
