#include "coordinator/coordinator_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <set>
#include <vector>

namespace relora::coordinator {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;

Histogram::BucketBoundaries exponential(double start, double factor, int count) {
  Histogram::BucketBoundaries b;
  for (double v = start; count-- > 0; v *= factor) b.push_back(v);
  return b;
}

// Command round trip: 10 ms .. ~11 min (a slow rank may take minutes to reach a boundary).
const Histogram::BucketBoundaries& round_trip_buckets() {
  static const auto b = exponential(0.01, 2.0, 17);  // 0.01 .. 655.36
  return b;
}

// RPCs: 0.5 ms .. ~16 s.
const Histogram::BucketBoundaries& rpc_buckets() {
  static const auto b = exponential(0.0005, 2.0, 16);  // 0.0005 .. 16.384
  return b;
}

double unix_seconds_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry) { init(registry); }

CoordinatorMetrics::CoordinatorMetrics() : own_registry_(std::make_shared<prometheus::Registry>()) {
  init(*own_registry_);
}

CoordinatorMetrics::~CoordinatorMetrics() = default;

void CoordinatorMetrics::init(prometheus::Registry& registry) {
  auto& jobs = prometheus::BuildGauge()
                   .Name("relora_coordinator_jobs")
                   .Help("Jobs by state: queued, running, completed, failed, cancelled.")
                   .Register(registry);
  const char* job_states[5] = {"queued", "running", "completed", "failed", "cancelled"};
  for (int i = 0; i < 5; ++i) jobs_[i] = &jobs.Add({{"state", job_states[i]}});

  auto& workers = prometheus::BuildGauge()
                      .Name("relora_coordinator_workers")
                      .Help("Registered workers by state: idle, busy, lost.")
                      .Register(registry);
  const char* worker_states[3] = {"idle", "busy", "lost"};
  for (int i = 0; i < 3; ++i) workers_[i] = &workers.Add({{"state", worker_states[i]}});

  commands_ = &prometheus::BuildCounter()
                   .Name("relora_coordinator_commands_total")
                   .Help("Cycle commands sent to the ranks of a job (one per boundary, not per rank).")
                   .Register(registry);
  for (const char* kind : {"low_rank_start", "cycle_end", "job_end"})
    commands_by_kind_[kind] = &commands_->Add({{"kind", kind}});

  round_trip_ = &prometheus::BuildHistogram()
                     .Name("relora_coordinator_command_round_trip_seconds")
                     .Help("From sending a cycle command until the last rank acknowledged it.")
                     .Register(registry)
                     .Add({}, round_trip_buckets());

  heartbeat_misses_ = &prometheus::BuildCounter()
                           .Name("relora_coordinator_heartbeat_misses_total")
                           .Help("Workers marked lost because their heartbeats stopped arriving.")
                           .Register(registry)
                           .Add({});

  rpcs_ = &prometheus::BuildCounter()
               .Name("relora_coordinator_rpcs_total")
               .Help("RPCs handled, by method name and final gRPC status.")
               .Register(registry);
  // Every (method, code) series exists from the start at 0 (as go-grpc-prometheus does), so the
  // error panels and ratios have a series to show, and rate() sees the first error as an increase.
  static const char* const kMethods[] = {"SubmitJob", "GetJob",   "ListJobs", "CancelJob",  "WatchJob",
                                         "GetJobEvents", "ListWorkers", "Register", "Heartbeat", "Connect"};
  for (const char* method : kMethods) {
    for (int code = grpc::StatusCode::OK; code <= grpc::StatusCode::UNAUTHENTICATED; ++code) {
      rpcs_by_method_code_[{method, code}] =
          &rpcs_->Add({{"method", method}, {"code", status_code_name(static_cast<grpc::StatusCode>(code))}});
    }
  }

  rpc_duration_ = &prometheus::BuildHistogram()
                       .Name("relora_coordinator_rpc_duration_seconds")
                       .Help("Server-side RPC duration (per message for the worker session stream).")
                       .Register(registry);

  job_restarts_ = &prometheus::BuildCounter()
                       .Name("relora_coordinator_job_restarts_total")
                       .Help("Jobs queued again to restart from their last checkpoint.")
                       .Register(registry)
                       .Add({});
  runs_reattached_ = &prometheus::BuildCounter()
                          .Name("relora_coordinator_runs_reattached_total")
                          .Help("Running runs a restarted coordinator adopted when all their ranks reported back.")
                          .Register(registry)
                          .Add({});
  job_regroups_ = &prometheus::BuildCounter()
                       .Name("relora_coordinator_job_regroups_total")
                       .Help("Jobs below their size that stopped at a cycle boundary to continue on more workers.")
                       .Register(registry)
                       .Add({});

  progress_ = &prometheus::BuildGauge()
                   .Name("relora_coordinator_job_last_progress_timestamp_seconds")
                   .Help("Unix time of the last progress (start, step report, boundary or acknowledgement) "
                         "the coordinator saw from a job; kept after it ends for the recent finished jobs.")
                   .Register(registry);

  job_state_ = &prometheus::BuildGauge()
                    .Name("relora_coordinator_job_state")
                    .Help("1 for each job with its current state (queued, running, completed, failed, "
                          "cancelled); finished jobs only for the most recent ones.")
                    .Register(registry);
}

void CoordinatorMetrics::set_jobs(const JobStateCounts& c) {
  const int64_t values[5] = {c.queued, c.running, c.completed, c.failed, c.cancelled};
  for (int i = 0; i < 5; ++i) jobs_[i]->Set(static_cast<double>(values[i]));
}

void CoordinatorMetrics::set_workers(const WorkerStateCounts& c) {
  const int64_t values[3] = {c.idle, c.busy, c.lost};
  for (int i = 0; i < 3; ++i) workers_[i]->Set(static_cast<double>(values[i]));
}

void CoordinatorMetrics::command_sent(const std::string& kind) {
  std::lock_guard<std::mutex> lk(mu_);
  Counter*& c = commands_by_kind_[kind];
  if (c == nullptr) c = &commands_->Add({{"kind", kind}});
  c->Increment();
}

void CoordinatorMetrics::command_acknowledged(double seconds) { round_trip_->Observe(seconds); }

void CoordinatorMetrics::heartbeat_missed() { heartbeat_misses_->Increment(); }

void CoordinatorMetrics::job_restarted() { job_restarts_->Increment(); }
void CoordinatorMetrics::run_reattached() { runs_reattached_->Increment(); }
void CoordinatorMetrics::job_regrouped() { job_regroups_->Increment(); }

void CoordinatorMetrics::job_progress(const std::string& job_id) {
  std::lock_guard<std::mutex> lk(mu_);
  Gauge*& g = progress_by_job_[job_id];
  if (g == nullptr) g = &progress_->Add({{"job_id", job_id}});
  g->Set(unix_seconds_now());
}

void CoordinatorMetrics::set_job_states(std::vector<JobStateEntry> jobs) {
  // Unfinished jobs first, then the finished ones newest first; ties (same millisecond, or 0 for
  // jobs loaded from an old store) by id, so that the kept set does not flicker between calls.
  std::sort(jobs.begin(), jobs.end(), [](const JobStateEntry& a, const JobStateEntry& b) {
    if (a.finished != b.finished) return !a.finished;
    if (a.finished_unix_ms != b.finished_unix_ms) return a.finished_unix_ms > b.finished_unix_ms;
    return a.id > b.id;
  });
  std::set<std::string> kept;
  size_t finished_kept = 0;
  std::lock_guard<std::mutex> lk(mu_);
  for (const JobStateEntry& j : jobs) {
    if (j.finished && finished_kept++ >= kFinishedJobsKept) break;
    kept.insert(j.id);
    auto& [state, gauge] = state_by_job_[j.id];
    if (gauge != nullptr && state == j.state) continue;
    if (gauge != nullptr) job_state_->Remove(gauge);
    state = j.state;
    gauge = &job_state_->Add({{"job_id", j.id}, {"state", j.state}});
    gauge->Set(1);
  }
  for (auto it = state_by_job_.begin(); it != state_by_job_.end();) {
    if (kept.count(it->first)) {
      ++it;
      continue;
    }
    job_state_->Remove(it->second.second);
    it = state_by_job_.erase(it);
  }
  for (auto it = progress_by_job_.begin(); it != progress_by_job_.end();) {
    if (kept.count(it->first)) {
      ++it;
      continue;
    }
    progress_->Remove(it->second);
    it = progress_by_job_.erase(it);
  }
}

void CoordinatorMetrics::observe_rpc_duration(const std::string& method, double seconds) {
  Histogram* h;
  {
    std::lock_guard<std::mutex> lk(mu_);
    Histogram*& slot = rpc_duration_by_method_[method];
    if (slot == nullptr) slot = &rpc_duration_->Add({{"method", method}}, rpc_buckets());
    h = slot;
  }
  h->Observe(seconds);
}

void CoordinatorMetrics::count_rpc(const std::string& method, grpc::StatusCode code) {
  Counter* c;
  {
    std::lock_guard<std::mutex> lk(mu_);
    Counter*& slot = rpcs_by_method_code_[{method, static_cast<int>(code)}];
    if (slot == nullptr) slot = &rpcs_->Add({{"method", method}, {"code", status_code_name(code)}});
    c = slot;
  }
  c->Increment();
}

}  // namespace relora::coordinator
