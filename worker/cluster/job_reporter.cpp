#include "worker/cluster/job_reporter.h"

#include <filesystem>

#include <spdlog/fmt/fmt.h>

#include "worker/train/runtime.h"

namespace relora::cluster {

JobReporter::JobReporter(MessageSink& sink, std::string job_id, int rank, std::chrono::milliseconds interval)
    : sink_(sink), job_id_(std::move(job_id)), rank_(rank), interval_(interval) {}

void JobReporter::install(train::TrainerOptions& options) {
  options.on_step = [this](const train::StepReport& r) { on_step(r); };
  options.on_eval = [this](const train::EvalReport& r) { on_eval(r); };
  options.on_event = [this](int64_t step, const std::string& text) { on_event(step, text); };
  options.on_checkpoint = [this](int64_t step, const std::string& path) { on_checkpoint(step, path); };
}

void JobReporter::send_progress(const std::string& checkpoint) {
  relora::v1::WorkerMessage msg;
  auto* report = msg.mutable_progress();
  report->set_job_id(job_id_);
  report->set_rank(rank_);
  *report->mutable_progress() = progress_;
  report->mutable_progress()->set_rss_bytes(train::current_rss_bytes());
  report->set_checkpoint(checkpoint);
  // A plain report is superseded by the next one; one naming a checkpoint is not.
  sink_.send(std::move(msg), /*droppable=*/checkpoint.empty());
  last_sent_ = std::chrono::steady_clock::now();
  sent_any_ = true;
}

void JobReporter::on_step(const train::StepReport& r) {
  if (rank_ != 0) return;
  progress_.set_step(r.step);
  progress_.set_total_steps(r.total_steps);
  progress_.set_loss(r.loss);
  progress_.set_lr(r.lr);
  progress_.set_tokens_per_second(r.tokens_per_second);
  progress_.set_cycle(r.cycle);
  progress_.set_merges(r.merges);
  progress_.set_optimizer_resets(r.optimizer_resets);
  progress_.set_eta_seconds(r.eta_seconds);
  for (const auto& [source, tokens] : r.source_tokens) (*progress_.mutable_source_tokens())[source] = tokens;
  const bool due = !sent_any_ || std::chrono::steady_clock::now() - last_sent_ >= interval_;
  if (due || r.step == r.total_steps) send_progress("");
}

void JobReporter::on_eval(const train::EvalReport& r) {
  if (rank_ != 0) return;
  progress_.set_eval_loss(r.loss);
  progress_.set_eval_perplexity(r.perplexity);
  relora::v1::WorkerMessage msg;
  auto* log = msg.mutable_log();
  log->set_job_id(job_id_);
  log->set_rank(rank_);
  log->set_step(r.step);
  log->set_kind("eval");
  log->set_message(fmt::format("eval loss {:.4f}, perplexity {:.2f} ({} tokens)", r.loss, r.perplexity, r.tokens));
  sink_.send(std::move(msg));
  // The final evaluation runs after the last step report: send the progress again so the job's
  // progress (and `relora watch`/`status`) shows the newest evaluation.
  send_progress("");
}

void JobReporter::on_event(int64_t step, const std::string& text) {
  if (rank_ != 0) return;
  relora::v1::WorkerMessage msg;
  auto* log = msg.mutable_log();
  log->set_job_id(job_id_);
  log->set_rank(rank_);
  log->set_step(step);
  log->set_kind("log");
  log->set_message(text);
  sink_.send(std::move(msg));
}

void JobReporter::on_checkpoint(int64_t step, const std::string& path) {
  if (rank_ != 0) return;
  progress_.set_step(step);
  // Absolute: a relative checkpoint.dir is relative to this worker's working directory, which
  // `relora export` (and a user reading `relora status`) elsewhere on the shared volume cannot know.
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(path, ec);
  send_progress(ec ? path : absolute.lexically_normal().string());
}

relora::v1::WorkerMessage JobReporter::finished(bool ok, const std::string& error, const std::string& summary_json,
                                                bool retryable) {
  relora::v1::WorkerMessage msg;
  auto* done = msg.mutable_finished();
  done->set_job_id(job_id_);
  done->set_rank(rank_);
  done->set_ok(ok);
  done->set_error(error);
  done->set_summary_json(summary_json);
  done->set_retryable(retryable);
  sink_.send(msg);
  return msg;
}

}  // namespace relora::cluster
