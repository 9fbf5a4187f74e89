// The coordinator's brain: workers, jobs, the FIFO gang scheduler, the per-job cycle barrier,
// heartbeat timeouts and job watchers. The gRPC services are thin adapters over this class.
//
// Threading contract (leveldb style):
//   * One mutex, mu_, protects every member below the "State below is protected by mu_" line.
//     Every public method takes it for a short, bounded time (memory work plus a local SQLite
//     write); nothing ever waits on a worker or client while holding it.
//   * Messages to streams are queued under mu_ (so their order is the order of decisions) and
//     handed to gRPC after mu_ is released (PumpList, see stream_writer.h): a gRPC call may run
//     reactions inline, and those reactions call back into this class.
//   * Timeouts (lost workers) and rate-limited watch updates run on one background thread,
//     run_background(), which sleeps on cv_ until the next deadline or a wake-up.
//   * Lock order: mu_, then a stream's writer mutex. Reactors never hold their writer mutex
//     while calling in here.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/coordinator_metrics.h"
#include "coordinator/cycle_barrier.h"
#include "coordinator/ids.h"
#include "coordinator/job_store.h"
#include "coordinator/stream_writer.h"
#include "relora/v1/service.pb.h"

namespace relora::coordinator {

using SteadyClock = std::chrono::steady_clock;

// A worker's Connect stream, as ClusterState sees it (implemented in worker_service.cpp).
// enqueue/close only queue; the stream moves when pump() runs outside mu_.
class WorkerLink : public Pumpable {
 public:
  virtual void enqueue(relora::v1::CoordinatorMessage msg) = 0;
  virtual void close(grpc::Status status) = 0;
};

// A WatchJob stream (implemented in job_service.cpp).
class WatchSink : public Pumpable {
 public:
  virtual void enqueue(relora::v1::JobUpdate update) = 0;
  virtual void close(grpc::Status status) = 0;
  virtual size_t pending() const = 0;  // updates queued or in flight
};

struct ClusterOptions {
  // A worker with no Heartbeat RPC and no stream message for this long is lost (also: one whose
  // stream stayed disconnected this long).
  std::chrono::milliseconds heartbeat_timeout{5000};
  // Coalescing of WatchJob updates: at most one per interval per watcher (~5/s).
  std::chrono::milliseconds watch_interval{200};
  // After a restart, how long a run that was RUNNING waits for all of its ranks to report back
  // (Register with running_job_id) before the job is requeued to resume from its checkpoint.
  // 0: never adopt (requeue at once, as coordinators before schema 2 did).
  std::chrono::milliseconds reattach_timeout{std::chrono::seconds(60)};
};

class ClusterState {
 public:
  // Loads every job from `store`. A job that was RUNNING when the previous coordinator stopped
  // stays RUNNING while its ranks, which train on meanwhile, report back (Register with
  // running_job_id): once all have, the run is adopted as it stands. If they do not all come back
  // within reattach_timeout (or the store predates run numbers), it is queued again at the front
  // to resume from its checkpoint.
  // `metrics` is updated at every state change (under mu_) and must outlive this object.
  ClusterState(JobStore& store, ClusterOptions options, CoordinatorMetrics& metrics);
  ~ClusterState();
  ClusterState(const ClusterState&) = delete;
  ClusterState& operator=(const ClusterState&) = delete;

  // ---- JobService (cluster_state.cpp) ----
  grpc::Status submit_job(const relora::v1::SubmitJobRequest& request, relora::v1::Job* out);
  grpc::Status get_job(const std::string& job_id, relora::v1::Job* out);
  std::vector<relora::v1::Job> list_jobs();
  grpc::Status cancel_job(const std::string& job_id, relora::v1::Job* out);
  grpc::Status job_events(const std::string& job_id, int64_t after_seq, int limit,
                          std::vector<relora::v1::JobEvent>* out);
  std::vector<relora::v1::WorkerInfo> list_workers();

  // ---- WatchJob (cluster_watch.cpp) ----
  // Queues the first update (events after `after_seq` and the job) at once; later updates follow
  // changes, coalesced. Finishes the sink with OK after the update that shows a terminal state.
  grpc::Status add_watch(const std::string& job_id, int64_t after_seq, std::shared_ptr<WatchSink> sink);
  // The client went away (OnCancel/OnDone): forget the sink. Idempotent.
  void remove_watch(const WatchSink* sink);

  // ---- WorkerService (cluster_workers.cpp) ----
  grpc::Status register_worker(const relora::v1::RegisterRequest& request, relora::v1::RegisterResponse* out);
  grpc::Status heartbeat(const std::string& worker_id);
  // The hello of a Connect stream: binds `link` to the worker (replacing an older stream).
  grpc::Status attach_stream(const std::string& worker_id, std::shared_ptr<WorkerLink> link);
  // The stream ended. The worker stays known; it is lost unless it reconnects in time.
  void detach_stream(const std::string& worker_id, const WorkerLink* link);
  // A message after the hello. A non-OK status means the stream itself is misused (close it);
  // protocol errors inside a job fail the job instead and return OK.
  grpc::Status on_worker_message(const std::string& worker_id, const relora::v1::WorkerMessage& msg);

  // ---- lifecycle ----
  // The background loop (heartbeat timeouts, watch updates); returns after stop_background().
  void run_background();
  void stop_background();
  // Finishes every worker and watch stream with `status` (before the gRPC server shuts down).
  void close_all_streams(const grpc::Status& status);

  std::chrono::milliseconds heartbeat_timeout() const { return options_.heartbeat_timeout; }

 private:
  struct WorkerRecord {
    relora::v1::WorkerInfo info;  // state: idle, busy or lost; job_id and rank while busy
    int32_t rendezvous_port = 0;
    uint64_t order = 0;                // registration order: free workers are taken oldest first
    std::shared_ptr<WorkerLink> link;  // null while no Connect stream is bound
    SteadyClock::time_point last_seen;
    SteadyClock::time_point disconnected_since;  // meaningful while link is null
    // A job whose run was stopped here (cancel sent) and whose JobFinished has not arrived: the
    // worker is still winding that run down, so it is not free for the next one yet.
    std::string draining_job;
    SteadyClock::time_point draining_since;
    // It said its process is exiting (JobFinished.worker_exiting): not scheduled again; lost once
    // its stream ends, unless it registers again.
    bool exiting = false;
    bool lost() const { return info.state() == "lost"; }
    bool free() const { return link && !lost() && !exiting && info.job_id().empty() && draining_job.empty(); }
  };
  struct JobRecord {
    relora::v1::Job job;
    int64_t last_seq = 0;                   // the job's newest event
    std::unique_ptr<CycleBarrier> barrier;  // while RUNNING
    bool started_event = false;             // "started" recorded for the current run
    SteadyClock::time_point command_sent;   // when the barrier's current command went out
    // After a coordinator restart: the RUNNING run waits for its ranks until adopt_deadline.
    bool adopting = false;
    SteadyClock::time_point adopt_deadline;
    // Regrouping onto more workers: the current run stops at a boundary with a checkpoint, and
    // the next one waits for this many workers (its draining ranks included). 0: not regrouping.
    int32_t regroup_world = 0;
  };
  struct Watch {
    std::shared_ptr<WatchSink> sink;
    std::string job_id;
    int64_t last_seq = 0;  // events up to here were sent
    bool dirty = false;    // the job changed since the last update
    SteadyClock::time_point last_write;
  };

  // cluster_state.cpp
  JobRecord* find_job_locked(const std::string& job_id);
  void add_event_locked(JobRecord& job, int64_t step, int32_t rank, const std::string& kind, const std::string& message,
                        const std::string& param_checksum = "");
  void persist_locked(JobRecord& job);
  void job_changed_locked(const std::string& job_id);
  void schedule_locked(PumpList& pumps);
  void start_job_locked(JobRecord& job, const std::vector<WorkerRecord*>& gang, PumpList& pumps);
  // Moves a RUNNING or QUEUED job to a terminal state, frees its workers and, when
  // `cancel_ranks`, sends Cancel to every rank that still has a stream.
  void finish_job_locked(JobRecord& job, relora::v1::JobState state, const std::string& error, bool cancel_ranks,
                         PumpList& pumps, const std::string& reporter = "");
  // The current run ended early (a rank lost, or failed while training): queue the job again to
  // resume from its checkpoint while cluster.max_restarts allows and `retryable`, else fail it.
  // `reporter` is the worker that reported the failure (it has stopped: no cancel, no draining).
  void restart_or_fail_locked(JobRecord& job, const std::string& reason, bool retryable, const std::string& reporter,
                              PumpList& pumps);
  // Cancels the run on every rank of `job` and frees them; ranks other than `reporter` (and lost
  // ones) drain until their JobFinished arrives.
  void stop_ranks_locked(JobRecord& job, bool cancel_ranks, const std::string& reporter, PumpList& pumps);
  void send_locked(WorkerRecord& worker, const relora::v1::CoordinatorMessage& msg, PumpList& pumps);
  // `msg` to every rank of the job's current run that has a stream.
  void send_to_ranks_locked(JobRecord& job, const relora::v1::CoordinatorMessage& msg, PumpList& pumps);
  void wake_locked();
  // Publishes the job and worker counts by state (relora_coordinator_jobs/_workers) and each
  // job's state (relora_coordinator_job_state). Called wherever a job or worker changes state.
  void publish_counts_locked();

  // cluster_adoption.cpp: a restarted coordinator taking over running runs; regrouping.
  void begin_adoption_locked(JobRecord& job);
  // Binds `w` as rank `rank` of the adopting job when it is the rank the job recorded (same run,
  // world and worker id); false (and nothing changed) otherwise. `resumed_step`: the newest
  // boundary the rank was resumed from (-1: unknown).
  bool adopt_rank_locked(JobRecord& job, WorkerRecord& w, int32_t rank, int32_t world, int32_t run,
                         int64_t resumed_step, PumpList& pumps);
  // Adoptions past their deadline fall back to a requeue; returns the earliest deadline left.
  SteadyClock::time_point check_adoptions_locked(SteadyClock::time_point now, PumpList& pumps);
  // The world the job would run on if it took the free workers now (0: it cannot grow).
  int32_t regroup_world_locked(const JobRecord& job);
  // Sends the stop that ends the current run at boundary `cmd.step()` with a checkpoint.
  void start_regroup_locked(JobRecord& job, int32_t world, const relora::v1::CycleCommand& cmd, PumpList& pumps);
  // A rank of a regrouping run ended: queue the job (first in line) for its bigger world.
  void regroup_locked(JobRecord& job, const std::string& reporter, PumpList& pumps);

  // cluster_workers.cpp
  WorkerRecord* find_worker_locked(const std::string& worker_id);
  void check_workers_locked(SteadyClock::time_point now, PumpList& pumps);
  void mark_lost_locked(WorkerRecord& worker, const std::string& why, PumpList& pumps);
  // The RUNNING job a job-scoped message belongs to, or null when it is stale (the worker left
  // that job) or wrong (then the job is failed with a protocol error).
  JobRecord* job_of_message_locked(WorkerRecord& worker, const std::string& job_id, int32_t rank, PumpList& pumps);
  void on_boundary_locked(WorkerRecord& w, const relora::v1::BoundaryReached& m, PumpList& pumps);
  void on_ack_locked(WorkerRecord& w, const relora::v1::CommandAck& m, PumpList& pumps);
  void on_progress_locked(WorkerRecord& w, const relora::v1::ProgressReport& m, PumpList& pumps);
  void on_finished_locked(WorkerRecord& w, const relora::v1::JobFinished& m, PumpList& pumps);
  void on_log_locked(WorkerRecord& w, const relora::v1::WorkerLog& m, PumpList& pumps);
  void note_started_locked(JobRecord& job);

  // cluster_watch.cpp
  // Queues one update; true when it was the last (terminal job, every event sent).
  bool flush_watch_locked(Watch& watch, SteadyClock::time_point now, PumpList& pumps);
  SteadyClock::time_point flush_due_watches_locked(SteadyClock::time_point now, PumpList& pumps);

  // Constant after construction.
  JobStore& store_;
  const ClusterOptions options_;
  CoordinatorMetrics& metrics_;  // thread-safe itself

  // State below is protected by mu_.
  std::mutex mu_;
  std::condition_variable cv_;                   // the background thread waits here
  bool stopping_ = false;                        // GUARDED_BY(mu_)
  bool wake_ = false;                            // GUARDED_BY(mu_): re-run the background pass now
  IdGenerator ids_;                              // GUARDED_BY(mu_)
  std::map<std::string, JobRecord> jobs_;        // GUARDED_BY(mu_)
  std::vector<std::string> job_order_;           // GUARDED_BY(mu_): submission order
  std::deque<std::string> queue_;                // GUARDED_BY(mu_): QUEUED job ids, FIFO
  std::map<std::string, WorkerRecord> workers_;  // GUARDED_BY(mu_)
  uint64_t next_worker_order_ = 0;               // GUARDED_BY(mu_)
  std::vector<Watch> watches_;                   // GUARDED_BY(mu_)
};

bool is_terminal(relora::v1::JobState state);

}  // namespace relora::coordinator
