// Turns one job's trainer callbacks into messages for the coordinator:
//   on_step        -> ProgressReport, rank 0, at most one per `interval` (always the last step)
//   on_eval        -> WorkerLog{kind "eval"} and the eval fields of later reports, rank 0
//   on_checkpoint  -> ProgressReport with `checkpoint` set (never dropped), rank 0
//   on_event       -> WorkerLog{kind "log"}, rank 0 (other ranks' events are the same ones)
//   finished()     -> JobFinished, every rank (rank 0's carries the summary)
//
// Threading: the trainer calls everything on the rank's training thread; `sink` is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "relora/v1/service.pb.h"
#include "worker/cluster/message_sink.h"
#include "worker/train/trainer.h"

namespace relora::cluster {

class JobReporter {
 public:
  JobReporter(MessageSink& sink, std::string job_id, int rank, std::chrono::milliseconds interval);

  // Points options.on_step / on_eval / on_event / on_checkpoint at this reporter, which must
  // outlive the trainer.
  void install(train::TrainerOptions& options);

  void on_step(const train::StepReport& report);
  void on_eval(const train::EvalReport& report);
  void on_event(int64_t step, const std::string& text);
  void on_checkpoint(int64_t step, const std::string& path);
  // Returns the message it sent (the worker sends it again after a reconnect).
  // `retryable`: the failure was the run's, not the input's (see JobFinished.retryable).
  relora::v1::WorkerMessage finished(bool ok, const std::string& error, const std::string& summary_json,
                                     bool retryable = false);

 private:
  void send_progress(const std::string& checkpoint);

  MessageSink& sink_;
  const std::string job_id_;
  const int rank_;
  const std::chrono::milliseconds interval_;
  relora::v1::JobProgress progress_;  // latest values
  std::chrono::steady_clock::time_point last_sent_{};
  bool sent_any_ = false;
};

}  // namespace relora::cluster
