// relora-worker: runs ReLoRA training.
//   relora-worker --standalone JOB.yaml [--summary-json PATH]   the whole job in this process
//   relora-worker --export CHECKPOINT --out DIR                  a merged Hugging Face model
// Exit codes: 0 success, 2 bad input (job spec, flags, files), 1 training failed.
#include <cstdio>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/job_spec.h"
#include "worker/train/checkpoint.h"
#include "worker/train/export.h"
#include "worker/train/model_state.h"
#include "worker/train/trainer.h"

namespace {

int run_standalone(const std::string& job_path, const std::string& summary_path, int threads, bool resume) {
  relora::v1::JobSpec spec;
  try {
    spec = relora::load_job_spec_file(job_path);
  } catch (const relora::JobSpecError& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
  relora::train::TrainerOptions options;
  options.threads = threads;
  options.resume = resume;
  relora::train::TrainSummary summary;
  try {
    relora::train::Trainer trainer(spec, options);
    summary = trainer.run();
  } catch (const std::exception& e) {
    spdlog::error("job '{}' failed: {}", spec.name(), e.what());
    return 1;
  }
  const auto json = summary.to_json();
  spdlog::info("done: {} steps, {} merges, {} optimizer resets, train loss {:.4f} -> {:.4f}, eval loss {:.4f} "
               "(perplexity {:.2f}), {:.0f} tokens/s, peak RSS {:.0f} MiB",
               summary.steps, summary.merges, summary.optimizer_resets, summary.initial_train_loss,
               summary.final_train_loss, summary.eval_loss, summary.eval_perplexity, summary.tokens_per_second,
               summary.peak_rss_bytes / 1048576.0);
  if (!summary_path.empty()) {
    std::ofstream out(summary_path);
    out << json.dump(2) << "\n";
    if (!out) {
      spdlog::error("{}: cannot write the summary", summary_path);
      return 1;
    }
  }
  std::cout << json.dump(2) << std::endl;
  return summary.completed ? 0 : 1;
}

int run_export(const std::string& checkpoint_path, const std::string& out_dir) {
  try {
    auto ckpt = relora::train::load_checkpoint(checkpoint_path);
    // Rebuild the model from the checkpoint's own spec; its data is not needed.
    auto spec = relora::job_spec_from_json(ckpt.meta.at("spec").dump());
    relora::model::Llama model(relora::train::model_config(spec));
    const auto& rl = spec.relora();
    relora::train::load_model_tensors(model, ckpt, {rl.rank(), rl.alpha(), rl.dropout()}, /*allow_low_rank=*/true);
    auto info = relora::train::export_hf_model(model, ckpt.meta.value("tokenizer_model", ""),
                                               ckpt.meta.value("eos_id", 1), ckpt.meta.value("pad_id", 0), out_dir);
    spdlog::info("exported {} (step {}, {} parameters, low-rank factors merged) to {}", ckpt.path, ckpt.step,
                 info.parameters, info.dir);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("export failed: {}", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
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
  app.add_option("--threads", threads, "LibTorch intra-op threads (OpenBLAS keeps its own)")->check(CLI::Range(0, 256));
  app.add_flag("--no-resume", no_resume, "Start from scratch even if checkpoint.dir holds checkpoints");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
    if (standalone.empty() && export_ckpt.empty()) throw CLI::RequiredError("--standalone or --export");
    if (!export_ckpt.empty() && export_out.empty()) throw CLI::RequiredError("--out");
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  if (!standalone.empty()) return run_standalone(standalone, summary_json, threads, !no_resume);
  return run_export(export_ckpt, export_out);
}
