// ClusterState, WatchJob side: one Watch per open stream; updates are coalesced so that a job
// that changes often (progress every second per job, logs, barrier events) costs a watcher at
// most one update per options_.watch_interval.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "coordinator/cluster_state.h"

namespace relora::coordinator {
namespace {

// Bounds one JobUpdate's size (gRPC's default receive limit is 4 MiB); a long history is sent
// as several updates back to back.
constexpr int kMaxEventsPerUpdate = 1000;

}  // namespace

grpc::Status ClusterState::add_watch(const std::string& job_id, int64_t after_seq, std::shared_ptr<WatchSink> sink) {
  PumpList pumps;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (find_job_locked(job_id) == nullptr) return {grpc::StatusCode::NOT_FOUND, "job '" + job_id + "' not found"};
    Watch watch;
    watch.sink = std::move(sink);
    watch.job_id = job_id;
    watch.last_seq = after_seq;
    const bool finished = flush_watch_locked(watch, SteadyClock::now(), pumps);
    if (!finished) {
      watches_.push_back(std::move(watch));
      if (watches_.back().dirty) wake_locked();  // more history to send
    }
  }
  pumps.run();
  return grpc::Status::OK;
}

void ClusterState::remove_watch(const WatchSink* sink) {
  std::lock_guard<std::mutex> lk(mu_);
  watches_.erase(
      std::remove_if(watches_.begin(), watches_.end(), [sink](const Watch& w) { return w.sink.get() == sink; }),
      watches_.end());
}

void ClusterState::job_changed_locked(const std::string& job_id) {
  bool any = false;
  for (auto& w : watches_) {
    if (w.job_id != job_id) continue;
    w.dirty = true;
    any = true;
  }
  if (any) wake_locked();
}

bool ClusterState::flush_watch_locked(Watch& watch, SteadyClock::time_point now, PumpList& pumps) {
  const JobRecord* job = find_job_locked(watch.job_id);
  if (job == nullptr) return true;  // cannot happen: jobs are never deleted
  relora::v1::JobUpdate update;
  *update.mutable_job() = job->job;
  std::vector<relora::v1::JobEvent> events;
  try {
    events = store_.events(watch.job_id, watch.last_seq, kMaxEventsPerUpdate);
  } catch (const std::exception& e) {
    spdlog::error("watch of job {}: cannot read events: {}", watch.job_id, e.what());
  }
  const bool more = static_cast<int>(events.size()) == kMaxEventsPerUpdate;
  if (!events.empty()) watch.last_seq = events.back().seq();
  for (auto& e : events) *update.add_events() = std::move(e);
  watch.dirty = more;
  watch.last_write = now;
  const bool last = is_terminal(job->job.state()) && !more;
  watch.sink->enqueue(std::move(update));
  if (last) watch.sink->close(grpc::Status::OK);
  pumps.add(watch.sink);
  return last;
}

SteadyClock::time_point ClusterState::flush_due_watches_locked(SteadyClock::time_point now, PumpList& pumps) {
  auto next = SteadyClock::time_point::max();
  for (auto it = watches_.begin(); it != watches_.end();) {
    Watch& w = *it;
    if (!w.dirty) {
      ++it;
      continue;
    }
    const auto due = w.last_write + options_.watch_interval;
    if (now < due) {
      next = std::min(next, due);
    } else if (w.sink->pending() > 0) {
      // The client has not taken the previous update yet: wait for it rather than queueing a
      // backlog (a slow client gets fewer, fresher updates).
      next = std::min(next, now + std::chrono::milliseconds(20));
    } else if (flush_watch_locked(w, now, pumps)) {
      it = watches_.erase(it);
      continue;
    } else if (w.dirty) {
      next = std::min(next, now + options_.watch_interval);
    }
    ++it;
  }
  return next;
}

}  // namespace relora::coordinator
