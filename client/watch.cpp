// Following a job's update stream and showing progress (see watch.h).
#include "client/watch.h"

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "client/format.h"

namespace relora::client {

ProgressDisplay::ProgressDisplay(std::ostream& out, bool tty, double line_interval_s)
    : out_(out), tty_(tty), interval_s_(line_interval_s) {}

void ProgressDisplay::clear_line() {
  if (line_open_) out_ << "\r\x1b[K";
  line_open_ = false;
}

void ProgressDisplay::update(const relora::v1::Job& job, double now_s) {
  last_line_ = progress_line(job);
  if (tty_) {
    out_ << "\r" << last_line_ << "\x1b[K" << std::flush;
    line_open_ = true;
    return;
  }
  if (last_line_ != printed_ && now_s - last_print_s_ >= interval_s_) {
    out_ << last_line_ << "\n" << std::flush;
    printed_ = last_line_;
    last_print_s_ = now_s;
  }
}

void ProgressDisplay::event(const relora::v1::JobEvent& event) {
  const bool redraw = line_open_;
  clear_line();
  out_ << event_line(event) << "\n";
  if (redraw) {
    out_ << last_line_ << "\x1b[K";
    line_open_ = true;
  }
  out_ << std::flush;
}

void ProgressDisplay::finish(const relora::v1::Job& job) {
  const std::string line = progress_line(job);
  clear_line();
  if (tty_ || line != printed_) out_ << line << "\n";
  printed_ = last_line_ = line;
  out_ << std::flush;
}

void WatchCanceller::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool WatchCanceller::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void WatchCanceller::attach(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = context;
  // A cancel() that came before the stream opened must still stop it.
  if (cancelled_) context_->TryCancel();
}

void WatchCanceller::detach() {
  std::lock_guard<std::mutex> lock(mu_);
  context_ = nullptr;
}

namespace {

double monotonic_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Codes after which the stream is worth reopening: the coordinator went away or restarted.
bool retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE || code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::OK;
}

}  // namespace

relora::v1::Job follow_job(Rpc& rpc, const std::string& job_id, const UpdateCallback& on_update,
                           WatchCanceller* canceller, double reconnect_window_s) {
  // A unary call first: a wrong id or an unreachable coordinator fails now, with the deadline,
  // instead of on a stream that has none.
  relora::v1::Job job = rpc.get_job(job_id);
  int64_t last_seq = 0;
  double broken_since = -1;  // when the stream first broke without a successful read since
  for (;;) {
    grpc::ClientContext ctx;
    if (canceller) canceller->attach(&ctx);
    auto reader = rpc.watch(ctx, job_id, last_seq);
    relora::v1::JobUpdate update;
    while (reader->Read(&update)) {
      broken_since = -1;
      job = update.job();
      std::vector<relora::v1::JobEvent> fresh;
      for (const auto& e : update.events()) {
        if (e.seq() > last_seq) fresh.push_back(e);
      }
      if (!fresh.empty()) last_seq = fresh.back().seq();
      on_update(job, fresh);
    }
    const grpc::Status status = reader->Finish();
    if (canceller) canceller->detach();
    if (canceller && canceller->cancelled()) return job;
    if (is_terminal(job.state())) return job;
    if (!retryable(status.error_code())) rpc.check(status);  // NOT_FOUND and the like: fail now
    // The stream ended before the job did: the coordinator restarted or dropped us. Reopen
    // from the last event seen until the window runs out.
    const double now = monotonic_s();
    if (broken_since < 0) broken_since = now;
    if (now - broken_since > reconnect_window_s) {
      rpc.check(status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the job's update stream ended early")
                            : status);
    }
    spdlog::debug("watch stream of {} ended ({}): reconnecting", job_id, status.error_message());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int report_outcome(const relora::v1::Job& job) {
  switch (job.state()) {
    case relora::v1::JOB_STATE_COMPLETED: return kExitOk;
    case relora::v1::JOB_STATE_FAILED:
      std::cerr << "error: job '" << job.id() << "' failed: " << (job.error().empty() ? "no reason given" : job.error())
                << std::endl;
      return kExitFailed;
    case relora::v1::JOB_STATE_CANCELLED:
      std::cerr << "error: job '" << job.id() << "' was cancelled" << (job.error().empty() ? "" : ": " + job.error())
                << std::endl;
      return kExitFailed;
    default:
      std::cerr << "error: job '" << job.id() << "' is still " << state_name(job.state()) << std::endl;
      return kExitFailed;
  }
}

int watch_and_report(Rpc& rpc, const std::string& job_id, bool json, WatchCanceller* canceller) {
  ProgressDisplay display(std::cout, ::isatty(STDOUT_FILENO) == 1);
  auto on_update = [&](const relora::v1::Job& job, const std::vector<relora::v1::JobEvent>& events) {
    if (json) {
      // One JSON object per line: easy to follow with `jq` while the job runs.
      auto line = job_json(job);
      line.erase("job");  // the full job is in the last line only; progress lines stay short
      line["events"] = nlohmann::json::array();
      for (const auto& e : events) line["events"].push_back(proto_json(e));
      std::cout << line.dump() << std::endl;
      return;
    }
    for (const auto& e : events) display.event(e);
    display.update(job, monotonic_s());
  };
  const relora::v1::Job job = follow_job(rpc, job_id, on_update, canceller);
  if (json) {
    std::cout << job_json(job).dump() << std::endl;
  } else {
    display.finish(job);
  }
  if (canceller && canceller->cancelled() && !is_terminal(job.state())) return kExitFailed;
  return report_outcome(job);
}

}  // namespace relora::client
