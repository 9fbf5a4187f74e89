// The worker process's own Prometheus series (docs/observability.md, "Worker process"): info,
// state, memory and the jobs it ran. They carry the `worker` label only and exist from the moment
// the worker knows its id until the process exits, so an idle worker's /metrics is never empty
// (a job's series, with job_id and rank, are PrometheusTrainMetrics').
//
// Threading: every method may be called from any thread (one mutex; prometheus-cpp metrics are
// atomics). refresh() runs on the metrics server's thread before each scrape.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace prometheus {
class Counter;
class Gauge;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace relora::metrics {

class WorkerProcessMetrics {
 public:
  // What the worker is doing: `relora_worker_state{state}` is 1 for it and 0 for the other.
  enum class State { kIdle, kTraining };
  // How a job ended on this worker: `relora_worker_jobs_total{outcome}`.
  enum class Outcome { kCompleted, kFailed, kStopped };

  // Registers the families on `registry`; the series appear at set_worker(). `device`: "cpu" or
  // "cuda:N" (the info series' label).
  WorkerProcessMetrics(std::shared_ptr<prometheus::Registry> registry, std::string device);
  ~WorkerProcessMetrics();
  WorkerProcessMetrics(const WorkerProcessMetrics&) = delete;
  WorkerProcessMetrics& operator=(const WorkerProcessMetrics&) = delete;

  // The worker's id (the `worker` label). A cluster worker learns it when it registers; a new id
  // (the coordinator forgot the old one) moves every series to it, keeping the counts.
  void set_worker(const std::string& worker);
  void set_state(State state);
  void job_finished(Outcome outcome);
  // Reads the resident memory (current and peak) and the memory limit again.
  void refresh();

 private:
  void add_series_locked();
  void remove_series_locked();

  std::shared_ptr<prometheus::Registry> registry_;
  const std::string device_;
  prometheus::Family<prometheus::Gauge>* info_ = nullptr;
  prometheus::Family<prometheus::Gauge>* state_ = nullptr;
  prometheus::Family<prometheus::Gauge>* rss_ = nullptr;
  prometheus::Family<prometheus::Gauge>* rss_peak_ = nullptr;
  prometheus::Family<prometheus::Gauge>* limit_ = nullptr;
  prometheus::Family<prometheus::Counter>* jobs_ = nullptr;

  std::mutex mu_;
  // Below: GUARDED_BY(mu_). The children exist only once the worker is known.
  std::string worker_;
  State state_now_ = State::kIdle;
  std::map<Outcome, double> jobs_done_;  // kept here too, to carry the counts over to a new id
  prometheus::Gauge* info_child_ = nullptr;
  std::map<State, prometheus::Gauge*> state_children_;
  prometheus::Gauge *rss_child_ = nullptr, *rss_peak_child_ = nullptr, *limit_child_ = nullptr;
  std::map<Outcome, prometheus::Counter*> jobs_children_;
};

// The memory a worker may use: its cgroup's limit when it has one (containers), else physical RAM.
double memory_limit_bytes();

}  // namespace relora::metrics
