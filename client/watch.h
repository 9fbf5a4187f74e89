// Following a job: the update stream (with reconnects) and the live progress display shared by
// `relora watch`, `relora submit --watch` and `relora local`.
#pragma once

#include <functional>
#include <iosfwd>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "client/rpc.h"
#include "relora/v1/service.pb.h"

namespace relora::client {

// The progress line and event lines. On a terminal the progress line is rewritten in place
// (\r + clear to end of line) and event lines are printed above it; otherwise (a log file, a
// pipe) a changed progress line is printed at most once per `line_interval_s`, so logs stay
// readable. Times are passed in (seconds on any monotonic clock) so tests need no sleeping.
class ProgressDisplay {
 public:
  ProgressDisplay(std::ostream& out, bool tty, double line_interval_s = 5.0);
  void update(const relora::v1::Job& job, double now_s);
  void event(const relora::v1::JobEvent& event);
  // The final progress line, always printed, ending the rewritten line on a terminal.
  void finish(const relora::v1::Job& job);

 private:
  void clear_line();

  std::ostream& out_;
  const bool tty_;
  const double interval_s_;
  double last_print_s_ = -std::numeric_limits<double>::infinity();
  std::string last_line_;   // the latest progress line (shown or not)
  std::string printed_;     // the latest progress line printed (non-terminal mode)
  bool line_open_ = false;  // a progress line without its newline is on screen (terminal mode)
};

// Lets another thread (a signal handler's helper, a child-process monitor) stop a follow_job()
// that is blocked reading the stream. Thread-safe.
class WatchCanceller {
 public:
  void cancel();
  bool cancelled() const;
  // follow_job() registers the stream's context while reading from it.
  void attach(grpc::ClientContext* context);
  void detach();

 private:
  mutable std::mutex mu_;
  // State below is protected by mu_.
  bool cancelled_ = false;
  grpc::ClientContext* context_ = nullptr;
};

using UpdateCallback =
    std::function<void(const relora::v1::Job& job, const std::vector<relora::v1::JobEvent>& new_events)>;

// Follows `job_id` until it finishes and returns the job as last seen. Calls `on_update` for
// every update with the events not seen before (replayed from the start of the job first).
// When the stream breaks (the coordinator restarted), it reconnects from the last event seen
// for up to `reconnect_window_s`, then throws RpcError (UNAVAILABLE). If `canceller` stops it,
// returns the job as last seen (not finished).
relora::v1::Job follow_job(Rpc& rpc, const std::string& job_id, const UpdateCallback& on_update,
                           WatchCanceller* canceller = nullptr, double reconnect_window_s = 60.0);

// Text or JSON-lines output of follow_job() on stdout; returns the exit code for the final job
// (0 completed, 1 failed or cancelled, printing why on stderr).
int watch_and_report(Rpc& rpc, const std::string& job_id, bool json, WatchCanceller* canceller = nullptr);

// The exit code and, on stderr, the one-line reason for a finished job.
int report_outcome(const relora::v1::Job& job);

}  // namespace relora::client
