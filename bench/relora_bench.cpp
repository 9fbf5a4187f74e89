// relora-bench: throughput and memory of ONE training configuration through the real Trainer.
//
// The model trains on random token ids written to a temporary pre-tokenized .tok file (no
// tokenizer), with checkpoints, export and periodic evaluation off, so the timed steps are the
// trainer's own train_step(): forward, backward, gradient clipping and the AdamW update. After
// the run the process measures a matrix-product peak (2048x2048, fp32 and bf16, best of several)
// with the same thread settings. Figures go to stdout and, with --json, to a JSON file that
// bench/run.py aggregates (see docs/benchmarks.md for the definitions).
//
// Run one configuration per process: peak RSS (VmHWM) is per process.
//
// With --world N the same job trains on N data-parallel ranks, threads of this process joined by a
// Gloo group on loopback, as the cluster worker runs them (optionally with
// cluster.shard_optimizer): what that run reports is the collective traffic per optimizer step,
// counted by kind where the process group hands tensors to c10d (rank 0's; every rank sends the
// same): payload bytes and the bytes rank 0 sends (see CollectiveTraffic), and the optimizer state
// each rank holds. Its speed and memory figures cover all ranks sharing this machine's cores.
#include <dlfcn.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "common/crash_handler.h"
#include "bench/bench_support.h"
#include "common/job_spec.h"
#include "common/memory_estimate.h"
#include "common/model_presets.h"
#include "common/text_file.h"
#include "worker/distributed/group_data_parallel.h"
#include "worker/cluster/host_info.h"
#include "worker/distributed/process_group.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct BenchShape {
  int hidden = 0, layers = 0, heads = 0, intermediate = 0, vocab = 0;
  int rank = 128;
  int seq = 256;
  int micro_batch = 1;
  int warmup_steps = 2;
  int steps = 5;
};

// Named configurations (docs/benchmarks.md explains the choice of micro-batch and rank).
bool named_config(const std::string& name, BenchShape* s) {
  if (name == "quick") {  // the smoke test: seconds, not a measurement
    *s = {64, 2, 4, 172, 512, 8, 32, 2, 1, 2};
  } else if (name == "micro") {  // preset micro; rank 32 as in examples/micro-c4.yaml
    *s = {256, 6, 4, 688, 8192, 32, 256, 8, 3, 10};
  } else if (name == "60m") {  // preset 60m (the paper's 60M), rank 128 as in the paper
    *s = {512, 8, 8, 1376, 32100, 128, 256, 4, 2, 6};
  } else if (name == "1b3-l8") {  // the 1.3B layer shape, 8 layers, vocab 8192
    *s = {2048, 8, 32, 5461, 8192, 128, 256, 1, 2, 5};
  } else if (name == "1b3") {  // preset 1b3: the paper's 1.3B model (24 layers, vocab 32100)
    *s = {2048, 24, 32, 5461, 32100, 128, 256, 1, 1, 3};
  } else {
    return false;
  }
  return true;
}

// OpenBLAS's own thread pool (set through the library if it is the BLAS loaded; -1 otherwise).
int blas_threads(int set_to) {
  using SetFn = void (*)(int);
  using GetFn = int (*)();
  if (set_to > 0) {
    if (auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(set_to);
  }
  if (auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) return get();
  return -1;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// User + system CPU seconds of the whole process (all threads) so far.
double process_cpu_seconds() {
  struct rusage u {};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// What train_ranks measured besides the summary.
struct RanksMeasurement {
  // Per step of rank 0, by collective kind: payload bytes and bytes sent by rank 0.
  std::vector<std::vector<int64_t>> payload_per_step, sent_per_step;
  // Optimizer moments (exp_avg + exp_avg_sq) held by each rank, and the unsharded total.
  std::vector<int64_t> optimizer_state_bytes;
  int64_t optimizer_state_bytes_unsharded = 0;
  // Frozen W (low-rank modes) held by each rank, and the whole of it.
  std::vector<int64_t> frozen_weight_bytes;
  int64_t frozen_weight_bytes_unsharded = 0;
};

// Trains `spec` on `world` ranks (threads, Gloo on loopback); `options` is rank 0's (its on_step
// reports), and the other ranks get the same without callbacks.
relora::train::TrainSummary train_ranks(const relora::v1::JobSpec& spec, const relora::train::TrainerOptions& options,
                                        int world, RanksMeasurement& measured) {
  namespace distributed = relora::distributed;
  const int port = relora::cluster::find_free_port();
  std::vector<relora::train::TrainSummary> summaries(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  measured.optimizer_state_bytes.assign(static_cast<size_t>(world), 0);
  measured.frozen_weight_bytes.assign(static_cast<size_t>(world), 0);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        distributed::GroupOptions g;
        g.store_host = g.local_host = "127.0.0.1";
        g.store_port = port;
        g.rank = rank;
        g.world = world;
        distributed::DataParallelGroup group(g);
        distributed::GroupDataParallel parallel(group);
        relora::train::TrainerOptions o = options;
        o.rank = rank;
        o.world = world;
        o.parallel = &parallel;
        if (rank == 0) {
          distributed::CollectiveTraffic before;
          o.on_step = [&, before](const relora::train::StepReport& r) mutable {
            std::vector<int64_t> payload(distributed::kCollectiveKinds), sent(distributed::kCollectiveKinds);
            const auto& now = group.traffic();
            for (int k = 0; k < distributed::kCollectiveKinds; ++k) {
              payload[k] = now.bytes[k] - before.bytes[k];
              sent[k] = now.sent_bytes[k] - before.sent_bytes[k];
            }
            before = now;
            measured.payload_per_step.push_back(payload);
            measured.sent_per_step.push_back(sent);
            if (options.on_step) options.on_step(r);
          };
        } else {
          o.on_step = nullptr;
        }
        std::unique_ptr<relora::train::Trainer> trainer;
        group.run_rank0_first("prepare", [&] { trainer = std::make_unique<relora::train::Trainer>(spec, o); },
                              std::chrono::minutes(10));
        summaries[rank] = trainer->run();
        const int64_t moment_bytes = 2 * static_cast<int64_t>(sizeof(float));  // exp_avg + exp_avg_sq, fp32
        measured.optimizer_state_bytes[rank] = trainer->optimizer().moment_elements() * moment_bytes;
        if (rank == 0)
          measured.optimizer_state_bytes_unsharded = trainer->optimizer().parameter_elements() * moment_bytes;
        for (auto& [name, linear] : trainer->model()->relora_linears()) {
          if (!linear->lora_enabled()) continue;
          const int64_t element = static_cast<int64_t>(linear->weight.element_size());
          measured.frozen_weight_bytes[rank] += linear->weight.numel() * element;
          if (rank == 0) measured.frozen_weight_bytes_unsharded += linear->in_features() * linear->out_features() * element;
        }
      } catch (const std::exception& e) {
        errors[rank] = "rank " + std::to_string(rank) + ": " + e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error(e);
  return summaries[0];
}

}  // namespace

int main(int argc, char** argv) {
  relora::install_crash_handler("relora-bench");
  CLI::App app{"relora-bench: throughput and memory of one training configuration"};
  std::string config = "micro", mode = "relora", dtype = "fp32", json_out, preset;
  BenchShape over{};  // 0 / -1: take the named configuration's value
  over.rank = over.seq = over.micro_batch = over.warmup_steps = over.steps = -1;
  int threads = 1, blas = 0;
  bool peak_only = false, no_peak = false, shard_optimizer = false, shard_frozen = false;
  int world = 1;
  std::string profile_out;
  app.add_option("--config", config, "quick, micro, 60m, 1b3-l8 (1.3B layer shape, 8 layers) or 1b3");
  app.add_option("--preset", preset, "a model preset (nano, micro, 60m, ..., 1b3, 3b, 7b) instead of --config");
  app.add_option("--hidden", over.hidden);
  app.add_option("--layers", over.layers);
  app.add_option("--heads", over.heads);
  app.add_option("--intermediate", over.intermediate);
  app.add_option("--vocab", over.vocab);
  app.add_option("--rank", over.rank);
  app.add_option("--mode", mode, "full or relora")->check(CLI::IsMember({"full", "relora", "lora"}));
  app.add_option("--dtype", dtype, "fp32 or bf16 (autocast)")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--steps", over.steps, "timed optimizer steps");
  app.add_option("--warmup-steps", over.warmup_steps, "untimed steps first");
  app.add_option("--micro-batch", over.micro_batch);
  app.add_option("--seq", over.seq);
  app.add_option("--threads", threads, "LibTorch intra-op threads");
  app.add_option("--blas-threads", blas, "OpenBLAS threads (0: leave as OPENBLAS_NUM_THREADS says)");
  app.add_option("--world", world, "data-parallel ranks (threads on loopback Gloo): measures collective traffic")
      ->check(CLI::Range(1, 16));
  app.add_flag("--shard-optimizer", shard_optimizer, "with --world > 1: cluster.shard_optimizer (ZeRO-1)");
  app.add_flag("--shard-frozen-weights", shard_frozen,
               "with --world > 1 and a low-rank mode: cluster.shard_frozen_weights (FSDP-style)");
  app.add_option("--json", json_out, "write the figures here");
  app.add_flag("--peak-only", peak_only, "only measure the matrix-product peaks");
  app.add_flag("--no-peak", no_peak, "skip the matrix-product peak measurement");
  bool activation_checkpointing = false;
  app.add_flag("--activation-checkpointing", activation_checkpointing, "training.activation_checkpointing: true");
  app.add_option("--profile", profile_out, "write a chrome://tracing profile of the timed steps here");
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::warn);
  relora::train::configure_process(threads);  // as the worker's main does
  const int blas_now = blas_threads(blas);

  json out;
  out["impl"] = "relora-cpp";
  out["torch_version"] = TORCH_VERSION;
  out["threads"] = at::get_num_threads();
  out["blas_threads"] = blas_now;
  out["load_average_start"] = load_average();

  auto measure_peaks = [&] {
    json peak;
    // The trainer's own MFU peak: best of five 2048^3 products after a warm-up.
    peak["fp32_gflops"] = relora::train::measure_matmul_peak_flops(torch::kFloat, torch::kCPU) / 1e9;
    peak["bf16_gflops"] = relora::train::measure_matmul_peak_flops(torch::kBFloat16, torch::kCPU) / 1e9;
    peak["size"] = 2048;
    return peak;
  };
  if (peak_only) {
    out["peak"] = measure_peaks();
    std::cout << out.dump(2) << std::endl;
    if (json_out.empty()) return 0;
    try {
      relora::write_text_file(json_out, out.dump(2) + "\n");
    } catch (const std::exception& e) {
      std::cerr << "relora-bench: " << e.what() << "\n";
      return 1;
    }
    return 0;
  }

  BenchShape s;
  if (!preset.empty()) {
    auto p = relora::find_model_preset(preset);
    if (!p) {
      std::cerr << "unknown preset " << preset << "\n";
      return 2;
    }
    if (!named_config(preset, &s)) named_config("60m", &s);  // micro-batch/seq defaults
    s.hidden = p->hidden_size, s.layers = p->num_layers, s.heads = p->num_heads;
    s.intermediate = p->intermediate_size, s.vocab = p->vocab_size;
    config = preset;
  } else if (!named_config(config, &s)) {
    std::cerr << "unknown --config " << config << "\n";
    return 2;
  }
  for (auto [dst, src] : {std::pair{&s.hidden, over.hidden}, {&s.layers, over.layers}, {&s.heads, over.heads},
                          {&s.intermediate, over.intermediate}, {&s.vocab, over.vocab}}) {
    if (src > 0) *dst = src;
  }
  for (auto [dst, src] : {std::pair{&s.rank, over.rank}, {&s.seq, over.seq}, {&s.micro_batch, over.micro_batch},
                          {&s.warmup_steps, over.warmup_steps}, {&s.steps, over.steps}}) {
    if (src >= 0) *dst = src;
  }
  if (s.steps < 1) {
    std::cerr << "--steps must be at least 1\n";
    return 2;
  }
  const bool low_rank = mode != "full";

  // Synthetic data: random ids, enough blocks for every step (and a few validation blocks).
  char tmpl[] = "/tmp/relora-bench-XXXXXX";
  const char* tmp = mkdtemp(tmpl);
  if (!tmp) {
    perror("mkdtemp");
    return 1;
  }
  const std::string dir = tmp;
  int rc = 0;
  try {
    const int64_t blocks = std::max<int64_t>(32, int64_t{s.micro_batch} * world * (s.warmup_steps + s.steps) + 8);
    const std::string tok = dir + "/train.tok";
    relora::bench::write_random_tokens(tok, static_cast<uint32_t>(s.vocab), static_cast<size_t>(blocks * s.seq));
    const relora::ModelShape shape{s.hidden, s.layers, s.heads, s.intermediate, s.vocab};
    auto spec = relora::parse_job_spec_yaml(
        relora::bench::synthetic_job_yaml("bench-" + config + "-" + mode + "-" + dtype, shape, s.seq, s.micro_batch,
                                          s.rank, mode, dtype, s.warmup_steps + s.steps, tok, dir + "/run"),
        "bench");
    if (world > 1) {
      spec.mutable_cluster()->set_workers(world);
      spec.mutable_cluster()->set_shard_optimizer(shard_optimizer);
      spec.mutable_cluster()->set_shard_frozen_weights(shard_frozen);
    }
    spec.mutable_training()->set_activation_checkpointing(activation_checkpointing);
    relora::resolve_job_spec(spec);
    relora::validate_job_spec(spec);

    relora::train::TrainerOptions options;
    options.resume = false;
    options.save_checkpoints = false;
    options.export_model = false;
    std::vector<double> step_seconds;
    std::vector<double> losses;
    std::vector<double> step_cpu;  // CPU seconds between step reports (all threads)
    double cpu_mark = 0;
    std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
    options.on_step = [&](const relora::train::StepReport& r) {
      if (!profile_out.empty() && r.step == s.warmup_steps)
        profile = std::make_unique<torch::autograd::profiler::RecordProfile>(profile_out);
      step_seconds.push_back(r.step_seconds);
      const double cpu = process_cpu_seconds();
      step_cpu.push_back(cpu - cpu_mark);
      cpu_mark = cpu;
      losses.push_back(r.loss);
      std::fprintf(stderr, "  step %lld/%lld  %.3f s  loss %.4f\n", static_cast<long long>(r.step),
                   static_cast<long long>(r.total_steps), r.step_seconds, r.loss);
    };
    const auto t0 = Clock::now();
    double setup_seconds = 0;
    RanksMeasurement ranks;  // world > 1
    relora::train::TrainSummary summary;
    if (world > 1) {
      cpu_mark = process_cpu_seconds();
      summary = train_ranks(spec, options, world, ranks);
    } else {
      relora::train::Trainer trainer(spec, options);
      cpu_mark = process_cpu_seconds();
      setup_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      summary = trainer.run();
    }
    profile.reset();
    const int64_t rss = relora::train::peak_rss_bytes();  // VmHWM, before the peak measurement allocates anything

    std::vector<double> timed(step_seconds.begin() + std::min<size_t>(s.warmup_steps, step_seconds.size()),
                              step_seconds.end());
    const double step_median = relora::bench::median(timed);
    const double tokens_per_step = double(s.micro_batch) * s.seq * world;
    const auto f = relora::bench::flops_per_token(shape, s.seq, s.rank, low_rank);
    const double tok_s = step_median > 0 ? tokens_per_step / step_median : 0;

    out["config"] = config;
    out["mode"] = mode;
    out["dtype"] = dtype;
    out["shape"] = {{"hidden", s.hidden}, {"layers", s.layers}, {"heads", s.heads}, {"intermediate", s.intermediate},
                    {"vocab", s.vocab}, {"rank", low_rank ? s.rank : 0}, {"seq", s.seq},
                    {"micro_batch", s.micro_batch}};
    out["warmup_steps"] = s.warmup_steps;
    out["timed_steps"] = timed.size();
    out["step_seconds"] = step_seconds;
    out["step_seconds_median"] = step_median;
    out["step_cpu_seconds"] = step_cpu;  // the first one includes the low-rank start
    out["tokens_per_step"] = tokens_per_step;
    out["tokens_per_second"] = tok_s;
    out["setup_seconds"] = setup_seconds;
    out["total_parameters"] = summary.total_parameters;
    out["trainable_parameters"] = summary.trainable_parameters;
    out["world"] = world;
    out["shard_optimizer"] = world > 1 && shard_optimizer;
    out["shard_frozen_weights"] = world > 1 && shard_frozen;
    if (world > 1) {
      // Measured: what rank 0's process group handed over and sent per timed step, by kind
      // (steady state: the timed steps hold no boundary, evaluation or checkpoint).
      namespace distributed = relora::distributed;
      const auto per_kind = [&](const std::vector<std::vector<int64_t>>& steps, int64_t& total) {
        json by_kind = json::object();
        total = 0;
        for (int k = 0; k < distributed::kCollectiveKinds; ++k) {
          std::vector<double> per_step;
          for (size_t i = std::min<size_t>(s.warmup_steps, steps.size()); i < steps.size(); ++i)
            per_step.push_back(static_cast<double>(steps[i][k]));
          const auto bytes = static_cast<int64_t>(relora::bench::median(per_step));
          by_kind[distributed::collective_kind_name(static_cast<distributed::CollectiveKind>(k))] = bytes;
          total += bytes;
        }
        return by_kind;
      };
      int64_t payload_total = 0, sent_total = 0;
      out["collective_bytes_per_step"] = per_kind(ranks.payload_per_step, payload_total);
      out["collective_bytes_per_step_total"] = payload_total;
      out["collective_bytes_each_step"] = ranks.payload_per_step;
      out["collective_sent_bytes_per_step"] = per_kind(ranks.sent_per_step, sent_total);
      out["collective_sent_bytes_per_step_total"] = sent_total;
      out["optimizer_state_bytes_per_rank"] = ranks.optimizer_state_bytes;
      out["optimizer_state_bytes_unsharded"] = ranks.optimizer_state_bytes_unsharded;
      out["frozen_weight_bytes_per_rank"] = ranks.frozen_weight_bytes;
      out["frozen_weight_bytes_unsharded"] = ranks.frozen_weight_bytes_unsharded;
    }
    out["model_flops_per_token"] = f.model;
    out["executed_flops_per_token"] = f.executed;
    out["executed_flops_per_second"] = f.executed * tok_s;
    out["peak_rss_bytes"] = rss;
    // What relora-worker --dry-run says about this spec (common/memory_estimate.h), to compare.
    const auto estimate = relora::estimate_memory(spec);
    out["estimate"] = {{"peak_bytes", estimate.peak_bytes},       {"weight_bytes", estimate.weight_bytes},
                       {"gradient_bytes", estimate.gradient_bytes}, {"optimizer_bytes", estimate.optimizer_bytes},
                       {"activation_bytes", estimate.activation_bytes}, {"runtime_bytes", estimate.runtime_bytes},
                       {"flops_per_token", estimate.flops_per_token}};
    out["first_loss"] = losses.empty() ? 0.0 : losses.front();
    out["final_loss"] = losses.empty() ? 0.0 : losses.back();
    if (!no_peak) {
      out["peak"] = measure_peaks();
      const double peak = out["peak"][dtype == "bf16" ? "bf16_gflops" : "fp32_gflops"].get<double>() * 1e9;
      out["utilisation"] = f.executed * tok_s / peak;
    }
    out["load_average_end"] = load_average();

    std::printf("%s %s %s threads %d/%d: %.0f tok/s (median step %.3f s of %zu), %.1f GFLOP/s executed",
                config.c_str(), mode.c_str(), dtype.c_str(), at::get_num_threads(), blas_now, tok_s, step_median,
                timed.size(), f.executed * tok_s / 1e9);
    if (out.contains("utilisation")) std::printf(" (%.0f%% of peak)", 100 * out["utilisation"].get<double>());
    std::printf(", peak RSS %.0f MiB, %lld trainable", rss / 1048576.0,
                static_cast<long long>(summary.trainable_parameters));
    if (world > 1)
      std::printf(", world %d%s%s: %.2f MB collective payload per step", world, shard_optimizer ? " (ZeRO-1)" : "",
                  shard_frozen ? " (frozen W sharded)" : "", out["collective_bytes_per_step_total"].get<double>() / 1e6);
    std::printf("\n");
    if (!json_out.empty()) relora::write_text_file(json_out, out.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::cerr << "relora-bench: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
