// ClusterState: construction and restart recovery, the JobService operations, events and
// persistence, the FIFO gang scheduler and the background loop. Worker-facing operations are in
// cluster_workers.cpp, watchers in cluster_watch.cpp.
#include "coordinator/cluster_state.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>

#include "common/elastic.h"
#include "common/job_spec.h"

namespace relora::coordinator {

using relora::v1::Job;
using relora::v1::JobState;

bool is_terminal(JobState state) {
  return state == relora::v1::JOB_STATE_COMPLETED || state == relora::v1::JOB_STATE_FAILED ||
         state == relora::v1::JOB_STATE_CANCELLED;
}

namespace {

grpc::Status job_not_found(const std::string& job_id) {
  return {grpc::StatusCode::NOT_FOUND, "job '" + job_id + "' not found"};
}

// "COMPLETED" from JOB_STATE_COMPLETED, for messages.
std::string state_word(JobState state) {
  std::string name = relora::v1::JobState_Name(state);
  const std::string prefix = "JOB_STATE_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

}  // namespace

ClusterState::ClusterState(JobStore& store, ClusterOptions options, CoordinatorMetrics& metrics)
    : store_(store), options_(options), metrics_(metrics) {
  std::lock_guard<std::mutex> lk(mu_);
  for (Job& job : store_.load_jobs()) {
    const std::string id = job.id();
    JobRecord& rec = jobs_[id];
    rec.job = std::move(job);
    rec.last_seq = store_.last_event_seq(id);
    job_order_.push_back(id);
    const Job& j = rec.job;
    const bool adoptable = j.run() > 0 && j.world_size() > 0 && j.worker_ids_size() == j.world_size() &&
                           options_.reattach_timeout.count() > 0;
    if (j.state() == relora::v1::JOB_STATE_RUNNING && adoptable) {
      // Its ranks train on without us; they tell us so when they register again.
      begin_adoption_locked(rec);
    } else if (j.state() == relora::v1::JOB_STATE_RUNNING) {
      // A store without run numbers (written before schema 2): its ranks cannot be matched to
      // new registrations. The trainer resumes from checkpoint.dir by itself, so queue it again
      // rather than failing work that can continue.
      rec.job.set_state(relora::v1::JOB_STATE_QUEUED);
      rec.job.clear_worker_ids();
      add_event_locked(rec, rec.job.progress().step(), -1, "requeued",
                       "the coordinator restarted while this job was running; queued again to resume from its "
                       "checkpoint" +
                           (rec.job.checkpoint().empty() ? std::string() : " " + rec.job.checkpoint()));
      persist_locked(rec);
      metrics_.job_restarted();
    }
    if (rec.job.state() == relora::v1::JOB_STATE_QUEUED) queue_.push_back(id);
  }
  publish_counts_locked();
  spdlog::info("job store {}: {} jobs, {} queued", store_.path(), jobs_.size(), queue_.size());
  wake_locked();  // adoption deadlines
}

ClusterState::~ClusterState() = default;

// ---- JobService ----------------------------------------------------------------------------

grpc::Status ClusterState::submit_job(const relora::v1::SubmitJobRequest& request, Job* out) {
  if (request.spec_yaml().empty())
    return {grpc::StatusCode::INVALID_ARGUMENT, "spec_yaml: required (the job file's text)"};
  const std::string source = request.source_name().empty() ? "<job>" : request.source_name();
  relora::v1::JobSpec spec;
  try {
    // Parsing happens outside mu_: it is pure and may take a while for a big spec.
    spec = parse_job_spec_yaml(request.spec_yaml(), source);
    resolve_job_spec(spec);
    try {
      validate_job_spec(spec);
    } catch (const JobSpecError& e) {
      throw JobSpecError(source + ": " + e.what());  // name the file, as parse errors do
    }
  } catch (const JobSpecError& e) {
    return {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
  }
  // Data paths are deliberately not checked here: workers may see other filesystems; a worker
  // reports a missing file as a failed job with the path in the error.

  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    std::string id;
    do id = ids_.next("job");
    while (jobs_.count(id) > 0);
    Job job;
    job.set_id(id);
    job.set_name(spec.name());
    job.set_state(relora::v1::JOB_STATE_QUEUED);
    *job.mutable_spec() = std::move(spec);
    job.mutable_progress()->set_total_steps(job.spec().training().steps());
    job.set_submitted_unix_ms(unix_ms_now());
    try {
      store_.insert_job(job);
    } catch (const std::exception& e) {
      spdlog::error("cannot save submitted job: {}", e.what());
      return {grpc::StatusCode::UNAVAILABLE, std::string("cannot save the job: ") + e.what()};
    }
    JobRecord& rec = jobs_[id];
    rec.job = std::move(job);
    job_order_.push_back(id);
    queue_.push_back(id);
    add_event_locked(
        rec, 0, -1, "submitted",
        "submitted from " + source + "; needs " + std::to_string(rec.job.spec().cluster().workers()) + " worker(s)");
    spdlog::info("job {} ({}) submitted: {} worker(s), {} steps", id, rec.job.name(),
                 rec.job.spec().cluster().workers(), rec.job.spec().training().steps());
    schedule_locked(pumps);
    publish_counts_locked();  // queued, or running if it started at once
    *out = rec.job;
  }
  pumps.run();
  return grpc::Status::OK;
}

grpc::Status ClusterState::get_job(const std::string& job_id, Job* out) {
  std::lock_guard<std::mutex> lk(mu_);
  JobRecord* rec = find_job_locked(job_id);
  if (rec == nullptr) return job_not_found(job_id);
  *out = rec->job;
  return grpc::Status::OK;
}

std::vector<Job> ClusterState::list_jobs() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<Job> out;
  out.reserve(job_order_.size());
  for (const auto& id : job_order_) out.push_back(jobs_.at(id).job);
  return out;
}

grpc::Status ClusterState::cancel_job(const std::string& job_id, Job* out) {
  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    JobRecord* rec = find_job_locked(job_id);
    if (rec == nullptr) return job_not_found(job_id);
    if (is_terminal(rec->job.state())) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "job '" + job_id + "' already finished (" + state_word(rec->job.state()) + ")"};
    }
    spdlog::info("job {} cancelled by request", job_id);
    finish_job_locked(*rec, relora::v1::JOB_STATE_CANCELLED, "", /*cancel_ranks=*/true, pumps);
    *out = rec->job;
  }
  pumps.run();
  return grpc::Status::OK;
}

grpc::Status ClusterState::job_events(const std::string& job_id, int64_t after_seq, int limit,
                                      std::vector<relora::v1::JobEvent>* out) {
  std::lock_guard<std::mutex> lk(mu_);
  if (find_job_locked(job_id) == nullptr) return job_not_found(job_id);
  try {
    *out = store_.events(job_id, after_seq, limit);
  } catch (const std::exception& e) {
    return {grpc::StatusCode::UNAVAILABLE, std::string("cannot read events: ") + e.what()};
  }
  return grpc::Status::OK;
}

std::vector<relora::v1::WorkerInfo> ClusterState::list_workers() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<const WorkerRecord*> sorted;
  for (const auto& [id, w] : workers_) sorted.push_back(&w);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->order < b->order; });
  std::vector<relora::v1::WorkerInfo> out;
  for (const auto* w : sorted) out.push_back(w->info);
  return out;
}

// ---- events, persistence, scheduling -------------------------------------------------------

ClusterState::JobRecord* ClusterState::find_job_locked(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void ClusterState::add_event_locked(JobRecord& job, int64_t step, int32_t rank, const std::string& kind,
                                    const std::string& message, const std::string& param_checksum) {
  relora::v1::JobEvent ev;
  ev.set_seq(++job.last_seq);
  ev.set_job_id(job.job.id());
  ev.set_unix_ms(unix_ms_now());
  ev.set_step(step);
  ev.set_rank(rank);
  ev.set_kind(kind);
  ev.set_message(message);
  ev.set_param_checksum(param_checksum);
  try {
    store_.append_event(ev);
  } catch (const std::exception& e) {
    // The coordinator keeps serving from memory; the job's history has a gap on disk.
    spdlog::error("job {}: cannot save event {} ({}): {}", job.job.id(), ev.seq(), kind, e.what());
  }
  job_changed_locked(job.job.id());
}

void ClusterState::persist_locked(JobRecord& job) {
  try {
    store_.update_job(job.job);
  } catch (const std::exception& e) {
    spdlog::error("job {}: cannot save its state: {}", job.job.id(), e.what());
  }
  job_changed_locked(job.job.id());
}

void ClusterState::wake_locked() {
  wake_ = true;
  cv_.notify_one();
}

void ClusterState::publish_counts_locked() {
  JobStateCounts jobs;
  std::vector<JobStateEntry> states;
  states.reserve(jobs_.size());
  for (const auto& [id, rec] : jobs_) {
    const JobState state = rec.job.state();
    const bool finished = is_terminal(state);
    std::string word = state_word(state);
    std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
    states.push_back({id, std::move(word), finished, rec.job.finished_unix_ms()});
    switch (state) {
      case relora::v1::JOB_STATE_QUEUED: ++jobs.queued; break;
      case relora::v1::JOB_STATE_RUNNING: ++jobs.running; break;
      case relora::v1::JOB_STATE_COMPLETED: ++jobs.completed; break;
      case relora::v1::JOB_STATE_FAILED: ++jobs.failed; break;
      case relora::v1::JOB_STATE_CANCELLED: ++jobs.cancelled; break;
      default: break;
    }
  }
  metrics_.set_jobs(jobs);
  metrics_.set_job_states(std::move(states));
  WorkerStateCounts workers;
  for (const auto& [id, w] : workers_) {
    if (w.lost()) ++workers.lost;
    else if (w.info.state() == "busy") ++workers.busy;
    else ++workers.idle;
  }
  metrics_.set_workers(workers);
}

void ClusterState::send_locked(WorkerRecord& worker, const relora::v1::CoordinatorMessage& msg, PumpList& pumps) {
  if (!worker.link) return;  // disconnected: it is lost soon, or gets resends when it reconnects
  worker.link->enqueue(msg);
  pumps.add(worker.link);
}

void ClusterState::send_to_ranks_locked(JobRecord& job, const relora::v1::CoordinatorMessage& msg, PumpList& pumps) {
  for (const auto& wid : job.job.worker_ids()) {
    WorkerRecord* w = find_worker_locked(wid);
    if (w != nullptr && w->info.job_id() == job.job.id()) send_locked(*w, msg, pumps);
  }
}

void ClusterState::schedule_locked(PumpList& pumps) {
  while (!queue_.empty()) {
    JobRecord& job = jobs_.at(queue_.front());
    std::vector<WorkerRecord*> free;
    for (auto& [id, w] : workers_)
      if (w.free()) free.push_back(&w);
    if (job.regroup_world > 0) {
      // Regrouping: wait for the previous run's ranks to wind down (rank 0 is writing the
      // checkpoint the next run starts from) unless they are lost meanwhile.
      int coming = 0;
      for (const auto& [id, w] : workers_)
        if (!w.lost() && w.draining_job == job.job.id()) ++coming;
      const int needed = std::min<int>(job.regroup_world, static_cast<int>(free.size()) + coming);
      if (static_cast<int>(free.size()) < needed) return;
      job.regroup_world = 0;
    }
    // Strict FIFO: when the head job cannot start on the free workers (cluster.workers of them,
    // or at least cluster.min_workers for a restart of an elastic job), every job behind it waits
    // too, even one that would fit. Simple and starvation-free for big gangs; the cost is idle workers
    // while a big job waits (no backfilling).
    // A job's first run waits for its full gang; a restart takes what there is, down to
    // cluster.min_workers (a lost machine may not come back).
    const int available = static_cast<int>(free.size());
    const int world = job.job.restarts() == 0 ? (available >= job.job.spec().cluster().workers()
                                                      ? job.job.spec().cluster().workers()
                                                      : 0)
                                              : elastic_world_size(job.job.spec(), available);
    if (world == 0) return;
    std::sort(free.begin(), free.end(), [](auto* a, auto* b) { return a->order < b->order; });
    free.resize(static_cast<size_t>(world));
    queue_.pop_front();
    start_job_locked(job, free, pumps);
  }
}

void ClusterState::start_job_locked(JobRecord& job, const std::vector<WorkerRecord*>& gang, PumpList& pumps) {
  Job& j = job.job;
  const auto world = static_cast<int32_t>(gang.size());
  const WorkerRecord& root = *gang.front();  // rank 0 hosts the c10d store
  // What the ranks run: the job's spec, with the accumulation of a smaller (elastic) world.
  const relora::v1::JobSpec run_spec = spec_for_world(j.spec(), world);
  j.set_state(relora::v1::JOB_STATE_RUNNING);
  if (j.started_unix_ms() == 0) j.set_started_unix_ms(unix_ms_now());
  j.clear_worker_ids();
  j.set_world_size(world);
  j.set_run(j.run() + 1);
  job.barrier = std::make_unique<CycleBarrier>(j.id(), run_spec);
  job.started_event = false;
  job.adopting = false;
  std::string ranks;
  for (int32_t r = 0; r < world; ++r) {
    WorkerRecord& w = *gang[r];
    j.add_worker_ids(w.info.id());
    w.info.set_state("busy");
    w.info.set_job_id(j.id());
    w.info.set_rank(r);
    ranks += (r ? ", " : "") + std::to_string(r) + "=" + w.info.id();
  }
  const std::string rendezvous = root.info.host() + ":" + std::to_string(root.rendezvous_port);
  std::string elastic;
  if (world < j.spec().cluster().workers())
    elastic = "; " + std::to_string(world) + " of " + std::to_string(j.spec().cluster().workers()) +
              " workers (elastic), grad_accum_steps " + std::to_string(run_spec.training().grad_accum_steps()) +
              " per rank keeps the global batch";
  add_event_locked(job, j.progress().step(), -1, "scheduled",
                   "run " + std::to_string(j.run()) + ": ranks " + ranks + "; rendezvous at " + rendezvous + elastic);
  persist_locked(job);
  metrics_.job_progress(j.id());  // the no-progress clock starts now
  publish_counts_locked();
  spdlog::info("job {} scheduled on {} worker(s): {}; rendezvous {}", j.id(), world, ranks, rendezvous);
  for (int32_t r = 0; r < world; ++r) {
    relora::v1::CoordinatorMessage msg;
    auto* a = msg.mutable_assignment();
    a->set_job_id(j.id());
    *a->mutable_spec() = run_spec;
    a->set_rank(r);
    a->set_world_size(world);
    a->set_rendezvous_host(root.info.host());
    a->set_rendezvous_port(root.rendezvous_port);
    a->set_run(j.run());
    send_locked(*gang[r], msg, pumps);
  }
}

void ClusterState::stop_ranks_locked(JobRecord& job, bool cancel_ranks, const std::string& reporter, PumpList& pumps) {
  Job& j = job.job;
  job.barrier.reset();
  job.adopting = false;
  // Free the gang. worker_ids stays on the record as history of where the job ran.
  for (const auto& wid : j.worker_ids()) {
    WorkerRecord* w = find_worker_locked(wid);
    if (w == nullptr || w->info.job_id() != j.id()) continue;
    // The reporter's run has already ended: nothing to cancel, nothing to wait for.
    if (cancel_ranks && wid != reporter) {
      relora::v1::CoordinatorMessage msg;
      msg.mutable_cancel()->set_job_id(j.id());
      send_locked(*w, msg, pumps);
      // Its trainer stops at the next step or collective; until it says so, it is not free.
      if (!w->lost()) {
        w->draining_job = j.id();
        w->draining_since = SteadyClock::now();
      }
    }
    w->info.clear_job_id();
    w->info.set_rank(-1);
    if (!w->lost()) w->info.set_state("idle");
  }
}

void ClusterState::restart_or_fail_locked(JobRecord& job, const std::string& reason, bool retryable,
                                          const std::string& reporter, PumpList& pumps) {
  Job& j = job.job;
  const int32_t max_restarts = j.spec().cluster().max_restarts();
  if (!retryable) {
    finish_job_locked(job, relora::v1::JOB_STATE_FAILED, reason, /*cancel_ranks=*/true, pumps, reporter);
    return;
  }
  if (j.restarts() >= max_restarts) {
    finish_job_locked(job, relora::v1::JOB_STATE_FAILED,
                      reason + " (restarted " + std::to_string(j.restarts()) + " time(s): cluster.max_restarts is " +
                          std::to_string(max_restarts) + ")",
                      /*cancel_ranks=*/true, pumps, reporter);
    return;
  }
  stop_ranks_locked(job, /*cancel_ranks=*/true, reporter, pumps);
  j.set_restarts(j.restarts() + 1);
  j.set_state(relora::v1::JOB_STATE_QUEUED);
  j.clear_worker_ids();
  const std::string from = j.checkpoint().empty() ? "the beginning (no checkpoint yet)" : "checkpoint " + j.checkpoint();
  add_event_locked(job, j.progress().step(), -1, "restarting",
                   reason + "; restart " + std::to_string(j.restarts()) + " of " + std::to_string(max_restarts) +
                       ", resuming from " + from);
  persist_locked(job);
  metrics_.job_restarted();
  spdlog::warn("job {}: {}; restart {} of {}", j.id(), reason, j.restarts(), max_restarts);
  // First in line: it was running, and its checkpoint is the work to continue.
  queue_.push_front(j.id());
  schedule_locked(pumps);
  publish_counts_locked();
}

void ClusterState::finish_job_locked(JobRecord& job, JobState state, const std::string& error, bool cancel_ranks,
                                     PumpList& pumps, const std::string& reporter) {
  Job& j = job.job;
  const bool was_queued = j.state() == relora::v1::JOB_STATE_QUEUED;
  if (was_queued) queue_.erase(std::remove(queue_.begin(), queue_.end(), j.id()), queue_.end());
  stop_ranks_locked(job, cancel_ranks, reporter, pumps);
  j.set_state(state);
  j.set_error(error);
  j.set_finished_unix_ms(unix_ms_now());
  const std::string kind = state == relora::v1::JOB_STATE_COMPLETED ? "completed"
                           : state == relora::v1::JOB_STATE_FAILED  ? "failed"
                                                                    : "cancelled";
  std::string message = error;
  if (message.empty())
    message = state == relora::v1::JOB_STATE_CANCELLED
                  ? (was_queued ? "cancelled while queued" : "cancelled by request")
                  : "completed";
  add_event_locked(job, j.progress().step(), -1, kind, message);
  persist_locked(job);
  if (state == relora::v1::JOB_STATE_FAILED) spdlog::warn("job {} failed: {}", j.id(), error);
  schedule_locked(pumps);  // the freed workers may start the next job
  publish_counts_locked();
}

// ---- background loop -----------------------------------------------------------------------

void ClusterState::run_background() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    const auto now = SteadyClock::now();
    PumpList pumps;
    check_workers_locked(now, pumps);
    auto next = flush_due_watches_locked(now, pumps);
    next = std::min(next, check_adoptions_locked(now, pumps));
    // Wake up at the earliest heartbeat deadline (and at least every second, as a safety net).
    next = std::min(next, now + std::chrono::seconds(1));
    for (const auto& [id, w] : workers_) {
      if (w.lost()) continue;
      next = std::min(next, w.last_seen + options_.heartbeat_timeout);
      if (!w.link) next = std::min(next, w.disconnected_since + options_.heartbeat_timeout);
    }
    lk.unlock();
    pumps.run();
    lk.lock();
    // +1ms so that a deadline is strictly past when we look again.
    cv_.wait_until(lk, next + std::chrono::milliseconds(1), [this] { return stopping_ || wake_; });
    wake_ = false;
  }
}

void ClusterState::stop_background() {
  std::lock_guard<std::mutex> lk(mu_);
  stopping_ = true;
  cv_.notify_all();
}

void ClusterState::close_all_streams(const grpc::Status& status) {
  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [id, w] : workers_) {
      if (!w.link) continue;
      w.link->close(status);
      pumps.add(w.link);
    }
    for (auto& watch : watches_) {
      watch.sink->close(status);
      pumps.add(watch.sink);
    }
    watches_.clear();
  }
  pumps.run();
}

}  // namespace relora::coordinator
