#include "worker/metrics/process_metrics.h"

#include <fstream>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "worker/train/runtime.h"

namespace relora::metrics {
namespace {

const char* state_name(WorkerProcessMetrics::State s) {
  return s == WorkerProcessMetrics::State::kIdle ? "idle" : "training";
}

const char* outcome_name(WorkerProcessMetrics::Outcome o) {
  switch (o) {
    case WorkerProcessMetrics::Outcome::kCompleted: return "completed";
    case WorkerProcessMetrics::Outcome::kFailed: return "failed";
    case WorkerProcessMetrics::Outcome::kStopped: return "stopped";
  }
  return "failed";
}

constexpr WorkerProcessMetrics::State kStates[] = {WorkerProcessMetrics::State::kIdle,
                                                   WorkerProcessMetrics::State::kTraining};
constexpr WorkerProcessMetrics::Outcome kOutcomes[] = {WorkerProcessMetrics::Outcome::kCompleted,
                                                       WorkerProcessMetrics::Outcome::kFailed,
                                                       WorkerProcessMetrics::Outcome::kStopped};

}  // namespace

double memory_limit_bytes() {
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  std::string value;
  if (cgroup >> value && value != "max") {
    try {
      return std::stod(value);
    } catch (const std::exception&) {
    }
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (meminfo >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024.0;
    meminfo.ignore(256, '\n');
  }
  return 0;
}

WorkerProcessMetrics::WorkerProcessMetrics(std::shared_ptr<prometheus::Registry> registry, std::string device)
    : registry_(std::move(registry)), device_(std::move(device)) {
  auto& r = *registry_;
  info_ = &prometheus::BuildGauge()
               .Name("relora_worker_info")
               .Help("Constant 1, labelled with the device and version.")
               .Register(r);
  state_ = &prometheus::BuildGauge()
                .Name("relora_worker_state")
                .Help("1 for what the worker does now (idle: waiting for a job; training), 0 for the other.")
                .Register(r);
  rss_ = &prometheus::BuildGauge()
              .Name("relora_worker_resident_memory_bytes")
              .Help("Resident memory of the worker process.")
              .Register(r);
  rss_peak_ = &prometheus::BuildGauge()
                   .Name("relora_worker_resident_memory_peak_bytes")
                   .Help("Peak resident memory of the worker process.")
                   .Register(r);
  limit_ = &prometheus::BuildGauge()
                .Name("relora_worker_memory_limit_bytes")
                .Help("Memory limit: the cgroup's, else physical RAM.")
                .Register(r);
  jobs_ = &prometheus::BuildCounter()
               .Name("relora_worker_jobs_total")
               .Help("Jobs this worker process ran to their end, by outcome (completed, failed, stopped).")
               .Register(r);
  for (Outcome o : kOutcomes) jobs_done_[o] = 0;
}

WorkerProcessMetrics::~WorkerProcessMetrics() {
  std::lock_guard<std::mutex> lock(mu_);
  remove_series_locked();
}

void WorkerProcessMetrics::set_worker(const std::string& worker) {
  std::lock_guard<std::mutex> lock(mu_);
  if (worker.empty() || worker == worker_) return;
  remove_series_locked();
  worker_ = worker;
  add_series_locked();
}

void WorkerProcessMetrics::add_series_locked() {
  const prometheus::Labels w{{"worker", worker_}};
  info_child_ = &info_->Add({{"worker", worker_}, {"device", device_}, {"version", "0.1.0"}});
  info_child_->Set(1);
  for (State s : kStates) {
    state_children_[s] = &state_->Add({{"worker", worker_}, {"state", state_name(s)}});
    state_children_[s]->Set(s == state_now_ ? 1 : 0);
  }
  rss_child_ = &rss_->Add(w);
  rss_peak_child_ = &rss_peak_->Add(w);
  limit_child_ = &limit_->Add(w);
  for (Outcome o : kOutcomes) {
    jobs_children_[o] = &jobs_->Add({{"worker", worker_}, {"outcome", outcome_name(o)}});
    jobs_children_[o]->Increment(jobs_done_[o]);
  }
  rss_child_->Set(static_cast<double>(train::current_rss_bytes()));
  rss_peak_child_->Set(static_cast<double>(train::peak_rss_bytes()));
  limit_child_->Set(memory_limit_bytes());
}

void WorkerProcessMetrics::remove_series_locked() {
  if (worker_.empty()) return;
  info_->Remove(info_child_);
  for (auto& [s, g] : state_children_) state_->Remove(g);
  rss_->Remove(rss_child_);
  rss_peak_->Remove(rss_peak_child_);
  limit_->Remove(limit_child_);
  for (auto& [o, c] : jobs_children_) jobs_->Remove(c);
  state_children_.clear();
  jobs_children_.clear();
  info_child_ = rss_child_ = rss_peak_child_ = limit_child_ = nullptr;
}

void WorkerProcessMetrics::set_state(State state) {
  std::lock_guard<std::mutex> lock(mu_);
  state_now_ = state;
  for (auto& [s, g] : state_children_) g->Set(s == state ? 1 : 0);
}

void WorkerProcessMetrics::job_finished(Outcome outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  jobs_done_[outcome] += 1;
  if (auto it = jobs_children_.find(outcome); it != jobs_children_.end()) it->second->Increment();
}

void WorkerProcessMetrics::refresh() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!rss_child_) return;
  // Peak after current: a peak read first could be below a current value read a moment later.
  rss_child_->Set(static_cast<double>(train::current_rss_bytes()));
  rss_peak_child_->Set(static_cast<double>(train::peak_rss_bytes()));
  limit_child_->Set(memory_limit_bytes());
}

}  // namespace relora::metrics
