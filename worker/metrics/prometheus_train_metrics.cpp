#include "worker/metrics/prometheus_train_metrics.h"

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace relora::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Histogram::BucketBoundaries exponential(double start, double factor, int count) {
  Histogram::BucketBoundaries b;
  for (double v = start; count-- > 0; v *= factor) b.push_back(v);
  return b;
}

}  // namespace

// Each family is registered once per registry (prometheus-cpp returns the existing family for a
// repeated name); the children below carry this job's labels and are removed in the destructor,
// which the owner calls when the next job starts (so the finished job's values stay scrapeable).
struct PrometheusTrainMetrics::Series {
  prometheus::Registry& registry;
  Labels labels;
  std::vector<std::function<void()>> removers;

  template <typename T, typename Builder>
  T& add(Builder builder, const std::string& name, const std::string& help, const Labels& extra = {}) {
    auto& family = builder.Name(name).Help(help).Register(registry);
    Labels all = labels;
    all.insert(extra.begin(), extra.end());
    T& metric = family.Add(all);
    removers.push_back([&family, &metric] { family.Remove(&metric); });
    return metric;
  }
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& extra = {}) {
    return add<Gauge>(prometheus::BuildGauge(), name, help, extra);
  }
  Counter& counter(const std::string& name, const std::string& help, const Labels& extra = {}) {
    return add<Counter>(prometheus::BuildCounter(), name, help, extra);
  }
  // The child of a labelled family for `value`, made by `make` at its first use.
  template <typename T, typename Make>
  T& child(std::map<std::string, T*>& cache, const std::string& value, Make make) {
    auto it = cache.find(value);
    if (it == cache.end()) it = cache.emplace(value, &make()).first;
    return *it->second;
  }
  Histogram& histogram(const std::string& name, const std::string& help, Histogram::BucketBoundaries buckets) {
    auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
    Histogram& metric = family.Add(labels, std::move(buckets));
    removers.push_back([&family, &metric] { family.Remove(&metric); });
    return metric;
  }

  explicit Series(prometheus::Registry& r, Labels l) : registry(r), labels(std::move(l)) {}

  Counter* tokens = nullptr;
  Histogram* step_duration = nullptr;
  Gauge *step = nullptr, *total_steps = nullptr, *last_step = nullptr, *train_loss = nullptr, *lr = nullptr,
        *cycle = nullptr, *trainable = nullptr, *parameters = nullptr, *mfu = nullptr;
  Gauge *eval_loss = nullptr, *eval_perplexity = nullptr;  // created at the first evaluation
  Gauge *device_allocated = nullptr, *device_reserved = nullptr, *device_peak = nullptr;  // GPU workers only
  Counter *merges = nullptr, *resets = nullptr, *checkpoints = nullptr, *data_wait = nullptr;
  std::map<std::string, Counter*> collective_bytes;       // by kind
  std::map<std::string, Counter*> collective_sent_bytes;  // by kind
  Histogram *allreduce_duration = nullptr, *checkpoint_duration = nullptr;
  std::map<std::string, Gauge*> effective_rank;  // by layer
  std::map<std::string, Gauge*> source_tokens;   // by data source
};

PrometheusTrainMetrics::PrometheusTrainMetrics(prometheus::Registry& registry, const std::string& job_id, int rank,
                                               const std::string& worker)
    : s_(std::make_unique<Series>(registry, Labels{{"job_id", job_id}, {"rank", std::to_string(rank)},
                                                   {"worker", worker}})) {
  auto& s = *s_;
  s.tokens = &s.counter("relora_worker_tokens_total", "Tokens trained by this rank.");
  s.step_duration = &s.histogram("relora_worker_step_duration_seconds", "Wall time of one optimizer step.",
                                 exponential(0.01, 2, 16));
  s.step = &s.gauge("relora_worker_step", "Optimizer steps completed.");
  s.total_steps = &s.gauge("relora_worker_total_steps", "Optimizer steps of the whole job.");
  s.last_step = &s.gauge("relora_worker_last_step_timestamp_seconds", "Unix time of the last completed step.");
  s.train_loss = &s.gauge("relora_worker_train_loss", "Training loss of the last step (mean over ranks).");
  s.lr = &s.gauge("relora_worker_learning_rate", "Learning rate of the last step.");
  s.cycle = &s.gauge("relora_worker_cycle", "Current ReLoRA cycle (0 before the first merge).");
  s.merges = &s.counter("relora_worker_merges_total", "ReLoRA merges applied.");
  s.resets = &s.counter("relora_worker_optimizer_resets_total", "Optimizer state resets applied.");
  s.trainable = &s.gauge("relora_worker_trainable_parameters", "Parameters that receive gradients now.");
  s.parameters = &s.gauge("relora_worker_parameters", "Parameters of the model as exported (W, not A and B).");
  s.mfu = &s.gauge("relora_worker_model_flops_utilization",
                   "Model FLOPs utilisation (0-1): tokens/s x full-rank FLOPs per token / measured peak.");
  s.allreduce_duration = &s.histogram("relora_worker_allreduce_duration_seconds",
                                      "Wall time of one step's collectives: the gradient all-reduce (or, with a sharded optimizer, reduce-scatter and all-gather).", exponential(0.0005, 2, 16));
  // Every kind the process group has, from the start (a rate over a series born mid-job misses its first bytes).
  for (const char* kind : {"all_reduce", "reduce_scatter", "all_gather"}) collective_sent(kind, 0, 0);
  s.checkpoint_duration = &s.histogram("relora_worker_checkpoint_save_duration_seconds",
                                       "Wall time to commit one checkpoint.", exponential(0.05, 2, 14));
  s.checkpoints = &s.counter("relora_worker_checkpoints_total", "Checkpoints committed.");
  s.data_wait = &s.counter("relora_worker_data_wait_seconds_total", "Time steps waited for their batches.");
  // Never 0: a stalled-job alert compares it with the current time.
  s.last_step->Set(unix_seconds());
}

PrometheusTrainMetrics::~PrometheusTrainMetrics() {
  for (auto& remove : s_->removers) remove();
}

void PrometheusTrainMetrics::job_started(const train::TrainStaticInfo& info) {
  info_ = info;
  s_->total_steps->Set(static_cast<double>(info.total_steps));
  s_->trainable->Set(static_cast<double>(info.trainable_parameters));
  s_->parameters->Set(static_cast<double>(info.total_parameters));
  s_->last_step->Set(unix_seconds());
}

void PrometheusTrainMetrics::step_done(const train::StepReport& r, double data_wait_seconds) {
  auto& s = *s_;
  s.tokens->Increment(static_cast<double>(info_.tokens_per_step_per_rank));
  s.step_duration->Observe(r.step_seconds);
  s.step->Set(static_cast<double>(r.step));
  s.last_step->Set(unix_seconds());
  s.train_loss->Set(r.loss);
  for (const auto& [source, tokens] : r.source_tokens) {
    s.child(s.source_tokens, source, [&]() -> Gauge& {
       return s.gauge("relora_worker_data_source_tokens",
                      "Tokens trained so far from each data source (data.train entry), all ranks together.",
                      {{"source", source}});
     }).Set(static_cast<double>(tokens));
  }
  s.lr->Set(r.lr);
  s.cycle->Set(static_cast<double>(r.cycle));
  s.data_wait->Increment(data_wait_seconds);
  if (r.device_allocated_bytes >= 0) {
    if (!s.device_allocated) {
      s.device_allocated = &s.gauge("relora_worker_device_memory_allocated_bytes",
                                    "GPU memory held by tensors (CUDA caching allocator), after the last step.");
      s.device_reserved = &s.gauge("relora_worker_device_memory_reserved_bytes",
                                   "GPU memory the caching allocator reserved from the driver, after the last step.");
      s.device_peak = &s.gauge("relora_worker_device_memory_peak_bytes",
                               "Peak GPU memory held by tensors since the worker started.");
    }
    s.device_allocated->Set(static_cast<double>(r.device_allocated_bytes));
    s.device_reserved->Set(static_cast<double>(r.device_reserved_bytes));
    s.device_peak->Set(static_cast<double>(r.device_peak_bytes));
  }
  // This rank's own throughput against this rank's own peak (report.tokens_per_second counts
  // every rank).
  if (info_.peak_flops > 0 && r.step_seconds > 0)
    s.mfu->Set(static_cast<double>(info_.tokens_per_step_per_rank) / r.step_seconds * info_.model_flops_per_token /
               info_.peak_flops);
}

void PrometheusTrainMetrics::eval_done(const train::EvalReport& r) {
  if (!s_->eval_loss) {
    s_->eval_loss = &s_->gauge("relora_worker_eval_loss", "Validation loss of the latest evaluation.");
    s_->eval_perplexity = &s_->gauge("relora_worker_eval_perplexity", "Validation perplexity (exp of the loss).");
  }
  s_->eval_loss->Set(r.loss);
  s_->eval_perplexity->Set(r.perplexity);
}

void PrometheusTrainMetrics::merged(bool optimizer_reset) {
  s_->merges->Increment();
  if (optimizer_reset) s_->resets->Increment();
}

void PrometheusTrainMetrics::trainable_changed(int64_t trainable_parameters) {
  s_->trainable->Set(static_cast<double>(trainable_parameters));
}

void PrometheusTrainMetrics::checkpoint_saved(double seconds) {
  s_->checkpoint_duration->Observe(seconds);
  s_->checkpoints->Increment();
}

void PrometheusTrainMetrics::update_rank(const std::string& layer, int64_t rank) {
  s_->child(s_->effective_rank, layer, [&]() -> Gauge& {
      return s_->gauge("relora_worker_update_effective_rank",
                       "Singular values of (W_now - W_start) above 0.01 x the largest, for a sampled layer.",
                       {{"layer", layer}});
    }).Set(static_cast<double>(rank));
}

void PrometheusTrainMetrics::gradient_sync_done(double seconds) { s_->allreduce_duration->Observe(seconds); }

void PrometheusTrainMetrics::collective_sent(const char* kind, int64_t bytes, int64_t sent_bytes) {
  s_->child(s_->collective_bytes, kind, [&]() -> Counter& {
      return s_->counter("relora_worker_collective_bytes_total",
                         "Payload bytes of this rank's collectives, by kind (counted in the process group).",
                         {{"kind", kind}});
    }).Increment(static_cast<double>(bytes));
  s_->child(s_->collective_sent_bytes, kind, [&]() -> Counter& {
      return s_->counter("relora_worker_collective_sent_bytes_total",
                         "Bytes this rank sent to its peers in collectives, by kind (ring algorithms; exact for "
                         "the reduce-scatter).",
                         {{"kind", kind}});
    }).Increment(static_cast<double>(sent_bytes));
}

}  // namespace relora::metrics
