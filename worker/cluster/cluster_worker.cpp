#include "worker/cluster/cluster_worker.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "common/job_spec.h"
#include "worker/cluster/job_reporter.h"
#include "worker/cluster/remote_cycle_controller.h"
#include "worker/cluster/stall_watchdog.h"
#include "worker/distributed/error_message.h"
#include "worker/distributed/group_data_parallel.h"
#include "worker/distributed/process_group.h"
#include "worker/metrics/process_metrics.h"
#include "worker/metrics/prometheus_train_metrics.h"
#include "worker/train/checkpoint.h"
#include "worker/train/trainer.h"

namespace relora::cluster {

using distributed::Backend;
using distributed::CollectiveKind;
using distributed::DataParallelGroup;
using distributed::GroupOptions;
using distributed::collective_kind_name;

namespace {

using relora::v1::CoordinatorMessage;

constexpr size_t kRememberedCancels = 64;

// Fails the job unless every rank would resume from the same checkpoint. The trainer resumes
// from the newest complete checkpoint in checkpoint.dir; only rank 0 writes there, so ranks on
// other machines see it only through a shared file system.
void check_same_resume_point(DataParallelGroup& group, const relora::v1::JobSpec& spec,
                             std::chrono::milliseconds timeout) {
  const train::CheckpointStore store(spec.checkpoint().dir(), spec.checkpoint().keep());
  const auto complete = store.list_complete();
  const std::string mine =
      complete.empty() ? "none" : std::filesystem::path(complete.back()).filename().string();
  const auto all = group.all_gather_string("resume-point", mine, timeout);
  if (std::all_of(all.begin(), all.end(), [&](const std::string& v) { return v == all[0]; })) return;
  std::string seen;
  for (size_t r = 0; r < all.size(); ++r) seen += (r ? ", rank " : "rank ") + std::to_string(r) + ": " + all[r];
  throw std::runtime_error("the ranks would resume from different checkpoints (" + seen + "): checkpoint.dir '" +
                           spec.checkpoint().dir() +
                           "' must be one directory every rank sees (a shared file system), or empty on all");
}

}  // namespace

ClusterWorker::ClusterWorker(ClusterWorkerOptions options) : options_(std::move(options)) {
  CoordinatorClientOptions client = options_.client;
  client.describe_running_run = [this](relora::v1::RegisterRequest& req) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!active_) return;
    req.set_running_job_id(active_->job_id());
    req.set_running_rank(active_assignment_.rank());
    req.set_running_world_size(active_assignment_.world_size());
    req.set_running_run(active_assignment_.run());
    req.set_running_resumed_step(active_->resumed_step());
  };
  client_ = std::make_unique<CoordinatorClient>(
      std::move(client), [this](const CoordinatorMessage& msg) { on_message(msg); }, [this] { on_connected(); });
}

ClusterWorker::~ClusterWorker() {
  stop();
  client_->stop(std::chrono::milliseconds(0));
}

void ClusterWorker::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  if (active_) active_->request_stop("the worker is shutting down");
  cv_.notify_all();
}

void ClusterWorker::run() {
  client_->start();
  spdlog::info("worker on {} waiting for assignments from {}", options_.client.host, options_.client.address);
  while (true) {
    relora::v1::Assignment assignment;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
      if (stopping_) break;
      assignment = std::move(pending_.front());
      pending_.pop_front();
    }
    run_assignment(assignment);
  }
  client_->stop();
}

void ClusterWorker::on_message(const CoordinatorMessage& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string job;
  switch (msg.body_case()) {
    case CoordinatorMessage::kAssignment: {
      const auto& a = msg.assignment();
      const bool known = (active_ && active_->job_id() == a.job_id()) ||
                         std::any_of(pending_.begin(), pending_.end(),
                                     [&](const relora::v1::Assignment& p) { return p.job_id() == a.job_id(); });
      if (known) {
        spdlog::warn("ignoring a repeated assignment of job {}", a.job_id());
        return;
      }
      // A restarted job comes back to workers that saw its earlier run cancelled.
      cancelled_.erase(std::remove(cancelled_.begin(), cancelled_.end(), a.job_id()), cancelled_.end());
      pending_.push_back(a);
      cv_.notify_all();
      return;
    }
    case CoordinatorMessage::kCommand:
      job = msg.command().job_id();
      break;
    case CoordinatorMessage::kResume:
      job = msg.resume().job_id();
      break;
    case CoordinatorMessage::kCancel:
      job = msg.cancel().job_id();
      pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                    [&](const relora::v1::Assignment& p) { return p.job_id() == job; }),
                     pending_.end());
      // An assignment being started right now has no controller yet: it checks this list.
      cancelled_.push_back(job);
      if (cancelled_.size() > kRememberedCancels) cancelled_.pop_front();
      break;
    default:
      spdlog::warn("ignoring a coordinator message of unknown kind {}", static_cast<int>(msg.body_case()));
      return;
  }
  if (active_ && active_->job_id() == job)
    active_->deliver(msg);
  else
    spdlog::debug("ignoring a message for job {}, which is not running here", job);
}

void ClusterWorker::on_connected() {
  // The id is known from the first registration on (the process series appear then) and changes
  // when the coordinator forgot this worker.
  if (options_.process_metrics) options_.process_metrics->set_worker(client_->worker_id());
  std::lock_guard<std::mutex> lock(mu_);
  if (active_)
    active_->resend_pending();
  else if (last_finished_)
    client_->send(*last_finished_);
}

void ClusterWorker::run_assignment(const relora::v1::Assignment& a) {
  const std::string& job = a.job_id();
  const int rank = a.rank();
  const int world = a.world_size();
  RemoteCycleController controller(*client_, job, rank, options_.boundary_timeout);
  JobReporter reporter(*client_, job, rank, options_.progress_interval);
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = &controller;
    active_assignment_ = a;
    active_assignment_.clear_spec();  // only the run's identity is needed
    if (std::find(cancelled_.begin(), cancelled_.end(), job) != cancelled_.end())
      controller.request_stop("cancelled by the coordinator");
    if (stopping_) controller.request_stop("the worker is shutting down");
  }
  spdlog::info("job {} ({}): rank {} of {}", job, a.spec().name(), rank, world);

  if (options_.process_metrics) options_.process_metrics->set_state(metrics::WorkerProcessMetrics::State::kTraining);
  bool ok = false;
  // Whether a failure is the run's (a lost peer, a collective, a device error: a restart from the
  // checkpoint may succeed) rather than the input's (spec, data files: it would fail again).
  bool retryable = false;
  std::string error, summary_json;
  try {
    if (controller.stopping()) throw std::runtime_error(controller.stop_reason());
    if (world < 1 || rank < 0 || rank >= world)
      throw std::invalid_argument("assignment: rank " + std::to_string(rank) + " is not in a world of " +
                                  std::to_string(world));
    validate_job_spec(a.spec());
    check_job_paths(a.spec(), options_.roots);

    train::TrainerOptions topts;
    topts.rank = rank;
    topts.world = world;
    topts.controller = &controller;
    topts.device = torch::Device(options_.device);
    reporter.install(topts);
    // Every sign of life of the training thread feeds the stall watchdog once training runs.
    std::atomic<StallWatchdog*> watchdog{nullptr};
    auto beat = [&watchdog](const char* where, int64_t step) {
      if (StallWatchdog* w = watchdog.load()) w->beat(where, step);
    };
    topts.on_step = [report = topts.on_step, beat](const train::StepReport& r) {
      beat("a finished step", r.step);
      report(r);
    };
    topts.on_eval = [report = topts.on_eval, beat](const train::EvalReport& r) {
      beat("an evaluation", r.step);
      report(r);
    };
    topts.on_event = [report = topts.on_event, beat](int64_t step, const std::string& text) {
      beat("a training event", step);
      report(step, text);
    };
    topts.on_checkpoint = [report = topts.on_checkpoint, beat](int64_t step, const std::string& path) {
      beat("a checkpoint", step);
      report(step, path);
    };
    // The previous job's series go first: a restarted job comes back with the same labels, and
    // its counters start again from 0 (Prometheus counts that as a counter reset).
    last_job_metrics_.reset();
    if (options_.metrics_registry) {
      last_job_metrics_ =
          std::make_unique<metrics::PrometheusTrainMetrics>(*options_.metrics_registry, job, rank, worker_id());
      topts.metrics = last_job_metrics_.get();
    }
    metrics::PrometheusTrainMetrics* job_metrics = last_job_metrics_.get();
    // Declared before the trainer, which uses them: destroyed after it.
    std::unique_ptr<DataParallelGroup> group;
    std::unique_ptr<distributed::GroupDataParallel> parallel;
    if (world > 1) {
      retryable = true;  // the rendezvous fails when a peer is gone
      GroupOptions g;
      g.store_host = a.rendezvous_host();
      g.store_port = a.rendezvous_port();
      g.rank = rank;
      g.world = world;
      g.local_host = options_.client.host;
      g.backend = topts.device.is_cuda() ? Backend::kNccl : Backend::kGloo;
      g.rendezvous_timeout = options_.rendezvous_timeout;
      g.collective_timeout = options_.collective_timeout;
      group = std::make_unique<DataParallelGroup>(g);
      if (job_metrics) {
        group->set_traffic_observer([m = job_metrics](CollectiveKind kind, int64_t bytes, int64_t sent) {
          m->collective_sent(collective_kind_name(kind), bytes, sent);
        });
      }
      parallel = std::make_unique<distributed::GroupDataParallel>(*group, options_.bucket_bytes);
      parallel->stop_vote().set_local([&controller] { return controller.stopping(); });
      controller.set_group_stop([p = parallel.get()] { return p->stop_vote().agreed(); });
      topts.parallel = parallel.get();
    }
    std::unique_ptr<train::Trainer> trainer;
    auto build = [&] { trainer = std::make_unique<train::Trainer>(a.spec(), topts); };
    retryable = false;  // data, tokenizer, checkpoint: the input
    if (group) {
      group->run_rank0_first("prepare", build, options_.data_timeout);
      check_same_resume_point(*group, a.spec(), options_.rendezvous_timeout);
    } else {
      build();
    }
    retryable = true;
    StallWatchdog stall_watchdog(
        options_.stall_timeout, [&controller] { return controller.waiting_on_coordinator(); },
        [this, &a](const std::string& what) { report_stall_and_exit(a, what); });
    watchdog = &stall_watchdog;
    const train::TrainSummary summary = trainer->run();
    watchdog = nullptr;
    ok = summary.completed;
    if (!ok) error = controller.stopping() ? controller.stop_reason() : "stopped before the last step";
    if (rank == 0) summary_json = summary.to_json().dump();
  } catch (const std::exception& e) {
    // A stop at a boundary surfaces as the trainer's "stopped by the controller"; say why.
    error = controller.stopping() ? controller.stop_reason() : distributed::error_message(e);
    if (!controller.stopping()) {
      spdlog::error("job {}: rank {} failed: {}", job, rank, error);
      const std::string stack = distributed::error_stack(e);
      if (!stack.empty()) spdlog::debug("job {}: rank {}: C++ stack of the failure:{}", job, rank, stack);
    }
  }
  {
    // Before JobFinished goes out: the coordinator may answer it with this job again (a restart),
    // which must not look like a repeat of the run still active here.
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
  }
  if (auto* p = options_.process_metrics) {
    using Outcome = metrics::WorkerProcessMetrics::Outcome;
    p->job_finished(ok ? Outcome::kCompleted : controller.stopping() ? Outcome::kStopped : Outcome::kFailed);
    p->set_state(metrics::WorkerProcessMetrics::State::kIdle);
  }
  auto finished = reporter.finished(ok, error, summary_json, retryable && !ok);
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_finished_ = std::move(finished);
  }
  spdlog::info("job {}: rank {} {}; waiting for the next assignment", job, rank,
               ok ? "completed" : "ended: " + error);
}

void ClusterWorker::report_stall_and_exit(const relora::v1::Assignment& a, const std::string& what) {
  spdlog::critical("job {}: rank {}: {}; reporting this rank failed and exiting with status {} so that the "
                   "worker's supervisor restarts it",
                   a.job_id(), a.rank(), what, kStalledExitCode);
  relora::v1::WorkerMessage msg;
  auto* f = msg.mutable_finished();
  f->set_job_id(a.job_id());
  f->set_rank(a.rank());
  f->set_ok(false);
  f->set_error("stalled: " + what);
  f->set_retryable(true);  // the run's failure, not the input's: restart as for a lost worker
  f->set_worker_exiting(true);
  client_->send(msg);
  client_->stop(std::chrono::seconds(5));  // delivers it, then closes the stream
  spdlog::shutdown();
  std::_Exit(kStalledExitCode);
}

}  // namespace relora::cluster
