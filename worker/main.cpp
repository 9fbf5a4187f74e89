// relora-worker: runs ReLoRA training.
//   relora-worker --standalone JOB.yaml [--summary-json PATH]   the whole job in this process
//   relora-worker --export CHECKPOINT --out DIR                  a merged Hugging Face model
//   relora-worker --dry-run JOB.yaml [--device cpu|cuda:N]       parameters, FLOPs, memory per rank
//   relora-worker --coordinator HOST:PORT [--host NAME] [--device cpu|cuda:N] [--token-file F] [--tls-ca F]
//                                                                a cluster worker, until SIGINT/SIGTERM
// Exit codes: 0 success, 2 bad input (job spec, flags, files), 1 training failed, 3 (--dry-run) the
// job does not fit the device.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include "common/crash_handler.h"
#include "common/grpc_security.h"
#include "common/job_spec.h"
#include "common/memory_estimate.h"
#include "common/metrics_server.h"
#include "common/text_file.h"
#include "worker/cluster/health_server.h"
#include "worker/metrics/process_metrics.h"
#include "worker/metrics/prometheus_train_metrics.h"
#include "worker/cluster/cluster_worker.h"
#include "worker/distributed/error_message.h"
#include "worker/cluster/host_info.h"
#include "worker/train/checkpoint.h"
#include "worker/train/export.h"
#include "worker/train/hf_config.h"
#include "worker/train/model_state.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace {

// The job file parsed and validated, or nothing (the error, naming the file, logged).
std::optional<relora::v1::JobSpec> load_job_or_log(const std::string& job_path) {
  try {
    // model.from_hf: the shape comes from its config.json, here as in the Trainer, so that
    // --dry-run estimates the model the job will train.
    return relora::train::apply_hf_config(relora::load_job_spec_file(job_path));
  } catch (const relora::JobSpecError& e) {
    spdlog::error("{}", e.what());
    return std::nullopt;
  }
}

int run_standalone(const std::string& job_path, const std::string& summary_path, bool resume,
                   relora::MetricsServer* metrics, relora::metrics::WorkerProcessMetrics* process) {
  using relora::metrics::WorkerProcessMetrics;
  const auto loaded = load_job_or_log(job_path);
  if (!loaded) return 2;
  const relora::v1::JobSpec& spec = *loaded;
  relora::train::TrainerOptions options;
  options.resume = resume;
  std::unique_ptr<relora::metrics::PrometheusTrainMetrics> job_metrics;
  if (metrics) {
    job_metrics = std::make_unique<relora::metrics::PrometheusTrainMetrics>(metrics->registry(), spec.name(), 0,
                                                                           "standalone");
    options.metrics = job_metrics.get();
  }
  if (process) process->set_state(WorkerProcessMetrics::State::kTraining);
  relora::train::TrainSummary summary;
  try {
    relora::train::Trainer trainer(spec, options);
    summary = trainer.run();
  } catch (const std::exception& e) {
    if (process) {
      process->job_finished(WorkerProcessMetrics::Outcome::kFailed);
      process->set_state(WorkerProcessMetrics::State::kIdle);
    }
    spdlog::error("job '{}' failed: {}", spec.name(), relora::distributed::error_message(e));
    const std::string stack = relora::distributed::error_stack(e);
    if (!stack.empty()) spdlog::debug("C++ stack of the failure:{}", stack);
    return 1;
  }
  if (process) {
    process->job_finished(summary.completed ? WorkerProcessMetrics::Outcome::kCompleted
                                            : WorkerProcessMetrics::Outcome::kStopped);
    process->set_state(WorkerProcessMetrics::State::kIdle);
  }
  const auto json = summary.to_json();
  spdlog::info("done: {} steps, {} merges, {} optimizer resets, train loss {:.4f} -> {:.4f}, eval loss {:.4f} "
               "(perplexity {:.2f}), {:.0f} tokens/s, peak RSS {:.0f} MiB",
               summary.steps, summary.merges, summary.optimizer_resets, summary.initial_train_loss,
               summary.final_train_loss, summary.eval_loss, summary.eval_perplexity, summary.tokens_per_second,
               summary.peak_rss_bytes / 1048576.0);
  if (!summary_path.empty()) {
    try {
      relora::write_text_file(summary_path, json.dump(2) + "\n");
    } catch (const std::exception& e) {
      spdlog::error("cannot write the summary: {}", e.what());
      return 1;
    }
  }
  std::cout << json.dump(2) << std::endl;
  return summary.completed ? 0 : 1;
}

// Nothing of the model is allocated: the estimate comes from the spec (common/memory_estimate.h).
int run_dry_run(const std::string& job_path, const std::string& device_name) {
  const auto loaded = load_job_or_log(job_path);
  if (!loaded) return 2;
  const relora::v1::JobSpec& spec = *loaded;
  const torch::Device device(device_name);
  const auto estimate = relora::estimate_memory(spec, device.is_cuda());
  const int64_t usable = relora::train::usable_memory_bytes(device);
  const std::string where = device.is_cuda() ? device_name + " (free device memory)" : "cpu (physical memory)";
  std::cout << "job '" << spec.name() << "': " << spec.relora().mode() << ", " << spec.training().dtype() << ", "
            << spec.model().num_layers() << " layers x hidden " << spec.model().hidden_size()
            << (spec.model().from_hf().empty() ? "" : " (from " + spec.model().from_hf() + "/config.json)")
            << ", micro-batch "
            << spec.training().micro_batch_size() << " x " << spec.data().seq_len() << " tokens"
            << (spec.training().activation_checkpointing() ? ", activation checkpointing" : "") << "\n"
            << relora::describe_memory_estimate(estimate, usable, where) << std::flush;
  if (usable > 0 && estimate.peak_bytes > usable) {
    spdlog::error("job '{}' does not fit {}: it needs about {:.2f} GiB per rank, {:.2f} GiB are there (short by "
                  "{:.2f} GiB); try bf16, relora mode, activation checkpointing, a smaller micro-batch or more ranks "
                  "with cluster.shard_optimizer / cluster.shard_frozen_weights",
                  spec.name(), where, estimate.peak_bytes / 1073741824.0, usable / 1073741824.0,
                  (estimate.peak_bytes - usable) / 1073741824.0);
    return 3;
  }
  return 0;
}

int run_export(const std::string& checkpoint_path, const std::string& out_dir) {
  try {
    auto ckpt = relora::train::load_checkpoint(checkpoint_path);
    // Rebuild the model from the checkpoint's own spec; its data is not needed.
    auto spec = relora::job_spec_from_json(ckpt.meta.at("spec").dump());
    relora::model::Llama model(relora::train::model_config(spec));
    const auto& rl = spec.relora();
    relora::train::load_model_tensors(model, ckpt, {rl.rank(), rl.alpha(), rl.dropout()}, /*allow_low_rank=*/true);
    // The tokenizer's ids and settings come from its model file (the checkpoint names it).
    auto info = relora::train::export_hf_model(model, ckpt.meta.value("tokenizer_model", ""),
                                               spec.data().seq_len(), out_dir);
    spdlog::info("exported {} (step {}, {} parameters, low-rank factors merged) to {}", ckpt.path, ckpt.step,
                 info.parameters, info.dir);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("export failed: {}", e.what());
    return 1;
  }
}

std::chrono::milliseconds from_seconds(double s) {
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

// SIGINT/SIGTERM reach a watcher thread through a pipe: the handler may run on any thread
// (libraries start threads before main, so masking the signals cannot steer them), and writing
// a byte is all a handler may safely do.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const char byte = static_cast<char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
}

// Runs until SIGINT or SIGTERM: the first stops the running job at its next step (rank 0
// checkpoints) and reports it; a second one exits at once.
int run_cluster(relora::cluster::ClusterWorkerOptions options) {
  relora::cluster::ClusterWorker worker(std::move(options));
  if (::pipe(g_signal_pipe) != 0) {
    spdlog::error("cannot create the signal pipe");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::thread([&worker] {
    char sig = 0;
    if (::read(g_signal_pipe[0], &sig, 1) != 1) return;
    spdlog::info("signal {}: stopping after the current step (again to exit at once)", static_cast<int>(sig));
    worker.stop();
    if (::read(g_signal_pipe[0], &sig, 1) == 1) std::_Exit(128 + sig);
  }).detach();
  worker.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  relora::install_crash_handler("relora-worker");
  CLI::App app{"relora-worker: ReLoRA training worker"};
  std::string standalone, summary_json, export_ckpt, export_out;
  int threads = 1;
  bool no_resume = false;
  std::string log_level = "info";
  auto* standalone_opt = app.add_option("--standalone", standalone, "Run the job in JOB.yaml in this process")
                             ->check(CLI::ExistingFile);
  app.add_option("--summary-json", summary_json, "Write the run summary as JSON to this path")->needs(standalone_opt);
  auto* export_opt = app.add_option("--export", export_ckpt, "Export a checkpoint as a Hugging Face LLaMA model")
                         ->check(CLI::ExistingPath)
                         ->excludes(standalone_opt);
  app.add_option("--out", export_out, "Output directory of --export")->needs(export_opt);
  std::string dry_run;
  auto* dry_run_opt = app.add_option("--dry-run", dry_run,
                                     "Print JOB.yaml's parameters, FLOPs and per-rank memory estimate against the "
                                     "device's memory, allocating nothing (exit 3 if it does not fit)")
                          ->check(CLI::ExistingFile)
                          ->excludes(standalone_opt)
                          ->excludes(export_opt);

  std::string coordinator, host = relora::cluster::local_hostname(), device = "cpu";
  int rendezvous_port = 0;
  double heartbeat_s = 0, rpc_timeout_s = 5, rendezvous_timeout_s = 60, collective_timeout_s = 300,
         boundary_timeout_s = 600, stall_timeout_s = 1800;
  auto* coordinator_opt =
      app.add_option("--coordinator", coordinator, "Work for the coordinator at HOST:PORT")
          ->excludes(standalone_opt)
          ->excludes(export_opt);
  app.add_option("--host", host, "This machine's name or address as the other workers reach it")
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--rendezvous-port", rendezvous_port,
                 "Port of this worker's c10d store when it is a job's rank 0 (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str()
      ->needs(coordinator_opt);
  // RELORA_DEVICE lets a deployment overlay (the Kubernetes GPU one) choose the device without
  // repeating the whole argument list.
  app.add_option("--device", device, "Where to train: cpu, or cuda:N in CUDA builds (NCCL between ranks)")
      ->envname("RELORA_DEVICE")
      ->capture_default_str();
  app.add_option("--heartbeat-interval", heartbeat_s, "Seconds between heartbeats (0: the coordinator's)")
      ->check(CLI::Range(0.0, 3600.0))
      ->needs(coordinator_opt);
  app.add_option("--rpc-timeout", rpc_timeout_s, "Deadline of each call to the coordinator, seconds")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--rendezvous-timeout", rendezvous_timeout_s, "Seconds for a job's ranks to meet")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--collective-timeout", collective_timeout_s,
                 "Seconds one all-reduce may wait (must exceed rank 0's checkpoint writes)")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--boundary-timeout", boundary_timeout_s, "Seconds to wait for the coordinator at a cycle boundary")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--stall-timeout", stall_timeout_s,
                 "Seconds the training thread may go without progress (a step, an evaluation, a checkpoint; "
                 "waits on the coordinator do not count); then the rank reports itself failed and the worker "
                 "exits with status 75 for its supervisor to restart it. Keep it above --collective-timeout and "
                 "the longest step or checkpoint save (0: no watchdog)")
      ->check(CLI::Range(0.0, 864000.0))
      ->capture_default_str()
      ->needs(coordinator_opt);
  app.add_option("--threads", threads, "LibTorch intra-op threads (OpenBLAS keeps its own)")->check(CLI::Range(0, 256));
  app.add_flag("--no-resume", no_resume, "Start from scratch even if checkpoint.dir holds checkpoints");
  int metrics_port = -1;
  app.add_option("--metrics-port", metrics_port, "Serve Prometheus metrics on this port (0: any free port; -1: off)")
      ->check(CLI::Range(-1, 65535));
  std::string token_file;
  relora::ClientSecurity security;
  app.add_option("--token-file", token_file, "File holding the worker bearer token the coordinator expects")
      ->check(CLI::ExistingFile)
      ->needs(coordinator_opt);
  app.add_option("--tls-ca", security.tls_ca_file, "Use TLS, trusting the coordinator's certificate to this PEM CA")
      ->check(CLI::ExistingFile)
      ->needs(coordinator_opt);
  app.add_option("--tls-cert", security.tls_cert_file, "Client certificate for mutual TLS (PEM; with --tls-key)")
      ->check(CLI::ExistingFile)
      ->needs(coordinator_opt);
  app.add_option("--tls-key", security.tls_key_file, "Private key of --tls-cert (PEM)")
      ->check(CLI::ExistingFile)
      ->needs(coordinator_opt);
  relora::PathRoots roots;
  app.add_option("--data-root", roots.data,
                 "Jobs may read only under these directories (and --checkpoint-root); symlinks are followed "
                 "before the check (repeatable)")
      ->check(CLI::ExistingDirectory)
      ->needs(coordinator_opt);
  app.add_option("--checkpoint-root", roots.checkpoint,
                 "Jobs may write (checkpoint.dir, data.cache_dir) only under this directory")
      ->check(CLI::ExistingDirectory)
      ->needs(coordinator_opt);
  std::string health_listen;
  app.add_option("--health-listen", health_listen,
                 "Serve the gRPC health service on HOST:PORT (Kubernetes probes; cluster mode)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
    if (!dry_run.empty() && !coordinator.empty())
      throw CLI::ValidationError("--dry-run", "excludes --coordinator");
    if (standalone.empty() && export_ckpt.empty() && coordinator.empty() && dry_run.empty())
      throw CLI::RequiredError("--standalone, --export, --coordinator or --dry-run");
    if (!coordinator.empty() || !dry_run.empty()) {
      try {
        if (torch::Device(device).is_cuda() && !torch::cuda::is_available())
          throw CLI::ValidationError("--device", device + ": this build or machine has no CUDA device");
      } catch (const c10::Error&) {
        throw CLI::ValidationError("--device", "'" + device + "' is not a device (cpu, cuda, cuda:N)");
      }
    }
    if (!export_ckpt.empty() && export_out.empty()) throw CLI::RequiredError("--out");
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  if (!dry_run.empty()) return run_dry_run(dry_run, device);
  std::unique_ptr<relora::MetricsServer> metrics;
  std::shared_ptr<relora::metrics::WorkerProcessMetrics> process_metrics;
  std::unique_ptr<relora::cluster::HealthServer> health;
  try {
    if (metrics_port >= 0) {
      metrics = std::make_unique<relora::MetricsServer>(relora::metrics_bind_address(metrics_port));
      spdlog::info("metrics: http://127.0.0.1:{}/metrics", metrics->port());
      // The process series, fresh at every scrape (memory changes while idle too). The hook holds
      // them, so they live as long as the server that renders them.
      process_metrics = std::make_shared<relora::metrics::WorkerProcessMetrics>(
          metrics->shared_registry(), standalone.empty() ? device : "cpu");
      metrics->set_before_scrape([p = process_metrics] { p->refresh(); });
      if (!standalone.empty()) process_metrics->set_worker("standalone");
    }
    if (!token_file.empty()) security.token = relora::read_token_file(token_file);
    relora::channel_credentials(security);  // a bad TLS file or flag pair fails here, before any work
    if (!health_listen.empty()) {
      health = std::make_unique<relora::cluster::HealthServer>(health_listen);
      spdlog::info("health: grpc.health.v1.Health on port {}", health->port());
    }
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
  // Process-wide, once: the intra-op threads and the allocator setting every training job here uses.
  if (!standalone.empty() || !coordinator.empty()) relora::train::configure_process(threads);
  if (!standalone.empty())
    return run_standalone(standalone, summary_json, !no_resume, metrics.get(), process_metrics.get());
  if (!coordinator.empty()) {
    relora::cluster::ClusterWorkerOptions options;
    options.client.address = coordinator;
    options.client.security = security;
    options.roots = roots;
    options.client.host = host;
    options.client.memory_bytes = relora::cluster::total_memory_bytes();
    options.client.device = device;
    options.client.rendezvous_port = rendezvous_port;
    options.device = device;
    options.client.rpc_timeout = from_seconds(rpc_timeout_s);
    options.client.heartbeat_interval = from_seconds(heartbeat_s);
    options.rendezvous_timeout = from_seconds(rendezvous_timeout_s);
    options.collective_timeout = from_seconds(collective_timeout_s);
    options.boundary_timeout = from_seconds(boundary_timeout_s);
    options.stall_timeout = from_seconds(stall_timeout_s);
    options.metrics_registry = metrics ? &metrics->registry() : nullptr;
    options.process_metrics = process_metrics.get();
    return run_cluster(std::move(options));
  }
  return run_export(export_ckpt, export_out);
}
