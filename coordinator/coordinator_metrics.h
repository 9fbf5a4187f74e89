// The coordinator's Prometheus metrics (docs/observability.md, "Coordinator"): job and worker
// counts by state, cycle commands and their round trip, heartbeat misses, RPCs, job restarts, and
// each job's state and last progress (kept for the most recent finished jobs too).
//
// One object per coordinator. With --metrics-port -1 it is built on a private registry that
// nothing scrapes, so callers never branch on "metrics enabled".
//
// Threading contract: every method may be called from any thread, also under ClusterState's
// mutex (prometheus-cpp metrics are atomics; the few maps here have their own short-lived mutex
// and never call out).
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace relora::coordinator {

struct JobStateCounts {
  int64_t queued = 0, running = 0, completed = 0, failed = 0, cancelled = 0;
};

// One job as relora_coordinator_job_state sees it.
struct JobStateEntry {
  std::string id;
  std::string state;             // queued, running, completed, failed, cancelled
  bool finished = false;         // completed, failed or cancelled
  int64_t finished_unix_ms = 0;  // orders the finished jobs: the newest are kept
};

struct WorkerStateCounts {
  int64_t idle = 0, busy = 0, lost = 0;
};

// "UNAVAILABLE" for grpc::StatusCode::UNAVAILABLE: the `code` label.
std::string status_code_name(grpc::StatusCode code);

class CoordinatorMetrics {
 public:
  // Finished jobs whose state and last-progress series stay after they end, so that a scrape (or
  // a dashboard) still sees how and when the recent ones ended. Bounded because a coordinator
  // keeps every job it ever ran in its store: one series per job forever would grow without
  // limit in Prometheus' index and in every scrape. 20 covers a day of typical use; older jobs
  // are in `relora list`.
  static constexpr size_t kFinishedJobsKept = 20;

  // Registers every family on `registry`, which must outlive this object. The state gauges start
  // at 0 and the three command kinds at 0, so every documented series exists from the start.
  explicit CoordinatorMetrics(prometheus::Registry& registry);
  // The same metrics on a private registry nobody scrapes (metrics disabled).
  CoordinatorMetrics();
  ~CoordinatorMetrics();
  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  // relora_coordinator_jobs / relora_coordinator_workers: the whole picture, set at each change.
  void set_jobs(const JobStateCounts& counts);
  void set_workers(const WorkerStateCounts& counts);

  // A cycle command went to every rank of a job (kind: low_rank_start, cycle_end, job_end; any
  // other string is counted as it is).
  void command_sent(const std::string& kind);
  // The last rank acknowledged a command `seconds` after it was sent.
  void command_acknowledged(double seconds);

  // A worker was marked lost because its heartbeats stopped.
  void heartbeat_missed();
  // A job that was running was queued again to resume from its checkpoint.
  void job_restarted();
  // A restarted coordinator adopted a running run (no step trained again).
  void run_reattached();
  // A job below its size stopped at a boundary to continue on more workers.
  void job_regrouped();

  // relora_coordinator_job_last_progress_timestamp_seconds{job_id}: now. Creates the series.
  void job_progress(const std::string& job_id);
  // relora_coordinator_job_state{job_id, state}: 1 for every job not finished and for the
  // kFinishedJobsKept most recently finished ones (by finished_unix_ms), with its current state.
  // Every other job loses its state and progress series. Called with all jobs at each change.
  void set_job_states(std::vector<JobStateEntry> jobs);

  // A unary RPC (or one message of a stream: `seconds` >= 0) ended; observe its duration.
  void observe_rpc_duration(const std::string& method, double seconds);
  // An RPC ended with `code` (unary calls and whole streams).
  void count_rpc(const std::string& method, grpc::StatusCode code);
  // Both of the above, for a unary call.
  void unary_rpc_done(const std::string& method, grpc::StatusCode code, double seconds) {
    observe_rpc_duration(method, seconds);
    count_rpc(method, code);
  }

 private:
  void init(prometheus::Registry& registry);

  std::shared_ptr<prometheus::Registry> own_registry_;  // only when nothing scrapes
  prometheus::Gauge* jobs_[5] = {};                      // JobStateCounts order
  prometheus::Gauge* workers_[3] = {};                   // WorkerStateCounts order
  prometheus::Family<prometheus::Counter>* commands_ = nullptr;
  prometheus::Histogram* round_trip_ = nullptr;
  prometheus::Counter* heartbeat_misses_ = nullptr;
  prometheus::Counter* job_restarts_ = nullptr;
  prometheus::Counter* runs_reattached_ = nullptr;
  prometheus::Counter* job_regroups_ = nullptr;
  prometheus::Family<prometheus::Gauge>* progress_ = nullptr;
  prometheus::Family<prometheus::Gauge>* job_state_ = nullptr;
  prometheus::Family<prometheus::Counter>* rpcs_ = nullptr;
  prometheus::Family<prometheus::Histogram>* rpc_duration_ = nullptr;

  // Children looked up by label values (Family::Add would build a throw-away Histogram per call).
  std::mutex mu_;
  std::map<std::string, prometheus::Gauge*> progress_by_job_;                        // GUARDED_BY(mu_)
  // job id -> (state, its series)
  std::map<std::string, std::pair<std::string, prometheus::Gauge*>> state_by_job_;  // GUARDED_BY(mu_)
  std::map<std::string, prometheus::Counter*> commands_by_kind_;                     // GUARDED_BY(mu_)
  std::map<std::pair<std::string, int>, prometheus::Counter*> rpcs_by_method_code_;  // GUARDED_BY(mu_)
  std::map<std::string, prometheus::Histogram*> rpc_duration_by_method_;            // GUARDED_BY(mu_)
};

// Seconds since `start` on the steady clock, for durations.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace relora::coordinator
