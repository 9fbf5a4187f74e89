// gpu_bench: throughput, utilisation and peak device memory of one training configuration on a
// GPU, through the real Trainer (scripts/gpu-check.sh runs it for the table: presets 350m
// and 1b3, seq 512, bf16, full vs relora rank 128).
//
// Synthetic data (random ids in a temporary .tok file), no checkpoints, no export, no evaluation:
// the timed steps are the trainer's own train_step() (forward, backward, clipping, AdamW), each
// ended by a device synchronisation (the trainer's step timing includes the queued GPU work).
// After the run, a bf16 8192^3 matrix-product peak is measured on the same device.
//
// Utilisation = executed matrix FLOPs per token x tokens/s / peak, against 989 TFLOP/s (the
// H100/H200 SXM dense bf16 figure) and against the measured peak. Executed FLOPs: full rank,
// 6 N + 12 L T C per token (N: the layers' and the head's matrix parameters); relora, frozen W
// has no weight gradient: 4 N_layers + 6 r (in + out) per projection + 6 N_head + 12 L T C
// (relora::bench::flops_per_token, shared with bench/relora-bench).
//
// Output: a human-readable line, then one `GPU_BENCH key=value ...` line that gpu-check.sh turns
// into its table, and optionally --json. Built only on request (EXCLUDE_FROM_ALL): CI never runs it.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "common/crash_handler.h"
#include "bench/bench_support.h"
#include "common/job_spec.h"
#include "common/model_presets.h"
#include "common/text_file.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/train/runtime.h"
#include "worker/train/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;

// Mean TFLOP/s of `reps` n x n x n bf16 products on `device`, after warm-up.
double matmul_tflops(torch::Device device, int64_t n, int reps) {
  torch::NoGradGuard no_grad;
  auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(device);
  auto a = torch::randn({n, n}, opts), b = torch::randn({n, n}, opts), c = torch::empty({n, n}, opts);
  for (int i = 0; i < 3; ++i) torch::mm_out(c, a, b);
  relora::train::synchronize_device(device);
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) torch::mm_out(c, a, b);
  relora::train::synchronize_device(device);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return 2.0 * n * n * n * reps / s / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  relora::install_crash_handler("gpu_bench");
  CLI::App app{"gpu_bench: one training configuration on a GPU through the real Trainer"};
  std::string preset = "350m", mode = "relora", dtype = "bf16", device_name = "cuda:0", json_out;
  int seq = 512, micro_batch = 0, rank = 128, steps = 4, warmup = 2, threads = 8;
  double nominal_tflops = 989.0;
  bool no_peak = false;
  app.add_option("--preset", preset, "model preset (common/model_presets.cpp): 350m, 1b3, ...")->capture_default_str();
  app.add_option("--mode", mode, "full or relora")->check(CLI::IsMember({"full", "relora"}))->capture_default_str();
  app.add_option("--dtype", dtype, "bf16 (autocast, fp32 masters) or fp32")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--device", device_name, "cuda:N (cpu for a smoke run)")->capture_default_str();
  app.add_option("--seq", seq, "sequence length")->capture_default_str();
  app.add_option("--micro-batch", micro_batch, "sequences per step (0: 16 for hidden <= 1024, else 8)");
  app.add_option("--rank", rank, "ReLoRA rank")->capture_default_str();
  app.add_option("--steps", steps, "timed steps")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--warmup-steps", warmup, "untimed steps first")->check(CLI::Range(0, 100000))->capture_default_str();
  app.add_option("--threads", threads, "LibTorch CPU threads (model init on the host)")->capture_default_str();
  app.add_option("--nominal-tflops", nominal_tflops, "the datasheet peak MFU is quoted against")
      ->capture_default_str();
  app.add_flag("--no-peak", no_peak, "skip the measured matrix-product peak");
  app.add_option("--json", json_out, "also write the figures to this JSON file");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  relora::train::configure_process(threads);

  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(device_name);
  } catch (const std::exception&) {
    std::cerr << "gpu_bench: '" << device_name << "' is not a device\n";
    return 2;
  }
  if (device.is_cuda() && !torch::cuda::is_available()) {
    std::cerr << "gpu_bench: " << relora::gpu_testing::kNoCudaMessage << "\n";
    return 77;
  }
  const auto shape = relora::find_model_preset(preset);
  if (!shape) {
    std::cerr << "gpu_bench: unknown preset '" << preset << "'\n";
    return 2;
  }
  if (micro_batch <= 0) micro_batch = shape->hidden_size <= 1024 ? 16 : 8;
  const bool low_rank = mode != "full";

  std::string tmpl = (std::filesystem::temp_directory_path() / "relora-gpu-bench-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = tmpl;
  int rc = 0;
  try {
    const int total = warmup + steps;
    const int64_t blocks = std::max<int64_t>(64, int64_t{micro_batch} * total * 2 + 16);
    relora::bench::write_random_tokens(dir + "/train.tok", static_cast<uint32_t>(shape->vocab_size),
                                             static_cast<size_t>(blocks * (seq + 1)));
    auto spec = relora::parse_job_spec_yaml(
        relora::bench::synthetic_job_yaml("gpu-bench-" + preset + "-" + mode + "-" + dtype, *shape, seq, micro_batch,
                                          rank, mode, dtype, total, dir + "/train.tok", dir + "/run"),
        "gpu-bench");
    relora::resolve_job_spec(spec);
    relora::validate_job_spec(spec);

    relora::train::TrainerOptions options;
    options.device = device;
    options.resume = false;
    options.save_checkpoints = false;
    options.export_model = false;
    std::vector<double> step_seconds, losses;
    options.on_step = [&](const relora::train::StepReport& r) {
      step_seconds.push_back(r.step_seconds);
      losses.push_back(r.loss);
    };
    relora::train::reset_device_memory_peak(device);
    const auto t0 = Clock::now();
    relora::train::Trainer trainer(spec, options);
    const double setup_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto summary = trainer.run();
    const auto mem = relora::train::device_memory(device);
    const double peak_rss = static_cast<double>(relora::train::peak_rss_bytes());

    std::vector<double> timed(step_seconds.begin() + std::min<size_t>(warmup, step_seconds.size()),
                              step_seconds.end());
    const double step_s = relora::bench::median(timed);
    const double tok_per_step = double(micro_batch) * seq;
    const double tok_s = step_s > 0 ? tok_per_step / step_s : 0;
    const double flops_token = relora::bench::flops_per_token(*shape, seq, rank, low_rank).executed;
    const double achieved_tflops = flops_token * tok_s / 1e12;
    double peak_tflops = -1;
    if (!no_peak) peak_tflops = device.is_cuda() ? matmul_tflops(device, 8192, 10) : matmul_tflops(device, 1024, 3);
    const double mfu_nominal = achieved_tflops / nominal_tflops;
    const double mfu_measured = peak_tflops > 0 ? achieved_tflops / peak_tflops : -1;
    auto gib = [](double bytes) { return bytes < 0 ? -1.0 : bytes / (1024.0 * 1024.0 * 1024.0); };

    nlohmann::json out = {{"preset", preset},
                          {"mode", mode},
                          {"dtype", dtype},
                          {"device", device.str()},
                          {"torch_version", TORCH_VERSION},
                          {"seq", seq},
                          {"micro_batch", micro_batch},
                          {"rank", low_rank ? rank : 0},
                          {"warmup_steps", warmup},
                          {"step_seconds", step_seconds},
                          {"step_seconds_median", step_s},
                          {"tokens_per_second", tok_s},
                          {"executed_flops_per_token", flops_token},
                          {"achieved_tflops", achieved_tflops},
                          {"nominal_tflops", nominal_tflops},
                          {"matmul_peak_tflops", peak_tflops},
                          {"mfu_nominal", mfu_nominal},
                          {"mfu_measured_peak", mfu_measured},
                          {"peak_allocated_bytes", static_cast<double>(mem.peak_allocated)},
                          {"peak_reserved_bytes", static_cast<double>(mem.peak_reserved)},
                          {"peak_rss_bytes", peak_rss},
                          {"setup_seconds", setup_s},
                          {"trainable_parameters", summary.trainable_parameters},
                          {"total_parameters", summary.total_parameters},
                          {"first_loss", losses.empty() ? 0.0 : losses.front()},
                          {"final_loss", losses.empty() ? 0.0 : losses.back()}};
    std::printf("%s %s %s, %d x %d tokens on %s: %.0f tok/s (median step %.3f s of %zu), %.1f TFLOP/s executed, "
                "MFU %.1f%% of %.0f, %.1f%% of measured %.0f TFLOP/s, peak device memory %.2f GiB allocated / "
                "%.2f GiB reserved (-1: not measured), setup %.1f s\n",
                preset.c_str(), mode.c_str(), dtype.c_str(), micro_batch, seq, device.str().c_str(), tok_s, step_s,
                timed.size(), achieved_tflops, 100 * mfu_nominal, nominal_tflops, 100 * mfu_measured, peak_tflops,
                gib(static_cast<double>(mem.peak_allocated)), gib(static_cast<double>(mem.peak_reserved)), setup_s);
    std::printf("GPU_BENCH preset=%s mode=%s dtype=%s seq=%d micro_batch=%d tokens_per_s=%.0f step_s=%.4f "
                "tflops=%.1f mfu_nominal=%.4f mfu_measured=%.4f peak_tflops=%.1f peak_alloc_gib=%.2f "
                "peak_reserved_gib=%.2f final_loss=%.4f\n",
                preset.c_str(), mode.c_str(), dtype.c_str(), seq, micro_batch, tok_s, step_s, achieved_tflops,
                mfu_nominal, mfu_measured, peak_tflops, gib(static_cast<double>(mem.peak_allocated)),
                gib(static_cast<double>(mem.peak_reserved)),
                losses.empty() ? 0.0 : losses.back());
    std::fflush(stdout);
    if (!json_out.empty()) relora::write_text_file(json_out, out.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::cerr << "gpu_bench: " << e.what() << std::endl;
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  // After a failure, leave without running static destructors: after a CUDA error LibTorch's CUDA
  // teardown can crash (the H200 run died with SIGSEGV after printing its error), which would
  // turn a clear one-line failure into a crash. The error line above is already flushed.
  if (rc != 0) std::_Exit(rc);
  return rc;
}
