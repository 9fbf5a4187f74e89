// Helpers for the cluster tests: a whole world of ranks as threads in one process, and a tiny job
// on synthetic text the test writes itself (tests/synthetic_text.h) that trains in about a second.
#pragma once

#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/job_spec.h"
#include "tests/test_paths.h"
#include "tests/tiny_job.h"
#include "worker/cluster/host_info.h"
#include "worker/distributed/group_data_parallel.h"
#include "worker/distributed/process_group.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace relora::cluster {
// The data-parallel layer under test, by its short names.
using distributed::Backend;
using distributed::DataParallelGroup;
using distributed::GroupOptions;
}  // namespace relora::cluster

namespace relora::cluster::testing {

// Runs fn(rank) for every rank on its own thread and rethrows the first exception (after every
// thread ended: a rank that fails makes its peers' collectives fail too, or time out).
inline void run_ranks(int world, const std::function<void(int rank)>& fn) {
  std::mutex mu;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        fn(rank);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

// A group on loopback with short timeouts, so that a broken test fails in seconds.
inline GroupOptions loopback_group(int port, int rank, int world) {
  GroupOptions g;
  g.store_host = "127.0.0.1";
  g.store_port = port;
  g.rank = rank;
  g.world = world;
  g.local_host = "127.0.0.1";
  g.rendezvous_timeout = std::chrono::seconds(10);
  g.collective_timeout = std::chrono::seconds(20);
  return g;
}

using relora::testing::TinyJob;
inline relora::v1::JobSpec tiny_spec(const TinyJob& job) { return relora::testing::tiny_job_spec(job); }

// With 14 steps: warm start 2 steps, then ReLoRA cycles of 4: low-rank start at 2, merges at 6
// and 10, job end at 14.
inline const char* kReloraNoDropout =
    "{mode: relora, rank: 8, alpha: 16, dropout: 0.0, warm_start_steps: 2, cycle_steps: 4, restart_warmup_steps: 1}";

// The tiny job with dropout 0.1 on `world` ranks, global batch 16 whatever the layout (micro-batches
// of 4, grad_accum = 4 / world): warm start 2 steps, cycles of 4 (low-rank start at 2, merges at 6
// and 10, each with an optimizer reset of 90% of the low-rank moments by `reset`), job end at 14.
// `shard`: ZeRO-1 (cluster.shard_optimizer); `frozen`: cluster.shard_frozen_weights.
inline relora::v1::JobSpec reset_layout_spec(int world, bool shard, const std::string& reset, const std::string& dir,
                                             bool frozen = false) {
  const std::string relora =
      "{mode: relora, rank: 8, alpha: 16, dropout: 0.1, warm_start_steps: 2, cycle_steps: 4, restart_warmup_steps: 1, "
      "optimizer_reset: " + reset + ", prune_ratio: 0.9}";
  auto spec = tiny_spec({relora, 14, /*grad_accum=*/4 / world, /*ckpt_every=*/0, dir});
  spec.mutable_cluster()->set_workers(world);
  spec.mutable_cluster()->set_shard_optimizer(shard);
  spec.mutable_cluster()->set_shard_frozen_weights(frozen);
  return spec;
}

// ZeRO buckets small enough that parameters straddle buckets and ranks.
inline constexpr int64_t kSmallBuckets = 4096;

// One rank's outcome of run_world.
struct RankResult {
  train::TrainSummary summary;
  std::string checksum;
  int64_t moment_elements = 0;  // elements of exp_avg this rank holds
  int64_t parameter_elements = 0;
  int64_t frozen_elements = 0;        // elements of the frozen W this rank holds
  int64_t frozen_elements_whole = 0;  // ... and of the whole frozen W
  std::map<std::string, torch::Tensor> parameters;  // every model parameter after the run, whole
};

// Runs `spec` on `world` ranks (threads, Gloo on loopback); `configure` adjusts each rank's
// options; `bucket_bytes`: the all-reduce (or ZeRO) bucket size.
inline std::vector<RankResult> run_world(int world, const relora::v1::JobSpec& spec,
                                         const std::function<void(train::TrainerOptions&)>& configure = {},
                                         int64_t bucket_bytes = distributed::BucketedAllReduce::kDefaultBucketBytes) {
  std::vector<RankResult> results(static_cast<size_t>(world));
  const int port = cluster::find_free_port();
  run_ranks(world, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, world));
    distributed::GroupDataParallel parallel(group, bucket_bytes);
    train::TrainerOptions opts;
    opts.export_model = false;
    opts.rank = rank;
    opts.world = world;
    opts.parallel = &parallel;
    if (configure) configure(opts);
    std::unique_ptr<train::Trainer> trainer;
    group.run_rank0_first("prepare", [&] { trainer = std::make_unique<train::Trainer>(spec, opts); },
                          std::chrono::seconds(60));
    auto& r = results[static_cast<size_t>(rank)];
    r.summary = trainer->run();
    r.checksum = train::parameter_checksum(trainer->model());
    r.moment_elements = trainer->optimizer().moment_elements();
    r.parameter_elements = trainer->optimizer().parameter_elements();
    for (auto& [name, linear] : trainer->model()->relora_linears()) {
      if (!linear->lora_enabled()) continue;
      r.frozen_elements += linear->weight.numel();
      r.frozen_elements_whole += linear->in_features() * linear->out_features();
    }
    // Sharded weights gathered: a collective, which every rank's thread reaches.
    for (const auto& [name, p] : trainer->model()->whole_parameters()) r.parameters[name] = p.detach().clone();
  });
  return results;
}

inline std::vector<RankResult> run_two_ranks(const relora::v1::JobSpec& spec,
                                             const std::function<void(train::TrainerOptions&)>& configure = {}) {
  return run_world(2, spec, configure);
}

}  // namespace relora::cluster::testing
