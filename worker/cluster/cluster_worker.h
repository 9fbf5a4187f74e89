// relora-worker --coordinator: a worker that takes jobs from the coordinator.
//
// The main thread (run()) waits for an Assignment, trains that rank's shard with a Trainer (a
// RemoteCycleController answering its boundaries, a distributed::GroupDataParallel synchronising
// its gradients when world > 1), reports JobFinished, and waits for the next one. A job that fails (a bad spec,
// a trainer exception, a lost peer) is reported as JobFinished{ok = false} and the worker goes
// back to waiting: it never exits because of a job.
//
// Per job, in this order:
//   1. join the process group (world > 1): rank 0 hosts the c10d store at the assignment's
//      rendezvous host/port; `rendezvous_timeout` bounds it.
//   2. build the Trainer, which prepares the data (tokenizer, token caches): rank 0 first and the
//      other ranks once it succeeded, so that ranks sharing a machine (and cache_dir) read rank 0's
//      cache instead of all tokenizing the same text (DataPipeline's writes are atomic, so that
//      would be safe, only wasteful). On separate machines without a shared cache_dir this costs
//      the other ranks' preparation time once more. `data_timeout` bounds the wait.
//   3. check that every rank would resume from the same checkpoint (a checkpoint.dir that only
//      rank 0 can see would leave the ranks at different steps): otherwise the job fails, saying so.
//   4. train; stop() or a Cancel stop it between steps, on all ranks at the same step.
//
// The protocol as the worker speaks it (proto/relora/v1/service.proto), and what it needs from
// the coordinator:
//   - It opens the stream with hello{worker_id}; every message carries worker_id.
//   - Assignment.rendezvous_host/port must be rank 0's registered host and rendezvous_port. A
//     repeated Assignment for a job it runs or has queued is ignored.
//   - Every rank of a job must get the same messages in the same order: a boundary's CycleCommand
//     (once every rank reported the boundary), then Resume (once every rank acknowledged), and a
//     Cancel only after any command or Resume already sent to one rank went to all of them.
//   - job_end gets a CycleCommand but no CommandAck/Resume round (the trainer only evaluates).
//   - After a reconnect the worker sends its outstanding BoundaryReached or CommandAck again, or
//     else its last JobFinished: answer a repeated boundary or ack with the same command or Resume,
//     and ignore a JobFinished for a job already finished.
//   - If a worker reports for a job the coordinator no longer runs (failed or cancelled while the
//     worker was away), answer Cancel{job}.
//   - Every Register carries the run the worker is training (job, rank, world, Assignment.run and
//     the newest boundary it was resumed from): a restarted coordinator adopts the run (the worker
//     goes on, resending what it waits for) or answers Cancel{job}.
//   - A CycleCommand with `stop` ends the run at that boundary (rank 0 checkpoints first) without
//     an acknowledgement; the worker reports JobFinished{ok = false} with the command's reason.
//   - When the worker half-closes the stream (shutdown), finish the call.
//   - Every rank sends JobFinished; only rank 0's carries summary_json. ProgressReport and
//     WorkerLog (kinds "eval" and "log") come from rank 0 only; a ProgressReport with `checkpoint`
//     set names a committed checkpoint.
//
// Threading: run() on one thread; stop() from any thread (a signal watcher). CoordinatorClient's
// reader thread delivers messages through on_message(), which only queues assignments and hands
// commands to the active job's controller. State below mu_ is guarded by it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/path_roots.h"
#include "relora/v1/service.pb.h"
#include "worker/cluster/coordinator_client.h"

namespace prometheus {
class Registry;
}

namespace relora::metrics {
class PrometheusTrainMetrics;
class WorkerProcessMetrics;
}  // namespace relora::metrics

namespace relora::cluster {

class RemoteCycleController;

// Exit status of a worker whose training thread stalled (EX_TEMPFAIL: try again).
constexpr int kStalledExitCode = 75;

struct ClusterWorkerOptions {
  CoordinatorClientOptions client;
  // Where this worker trains (TrainerOptions::device): "cpu" (Gloo between the ranks) or "cuda:N"
  // (NCCL, in builds with RELORA_WITH_CUDA).
  std::string device = "cpu";
  std::chrono::milliseconds rendezvous_timeout{std::chrono::seconds(60)};
  // Must exceed the time rank 0 spends writing a checkpoint while the others wait in the next
  // all-reduce (see GroupOptions).
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(300)};
  // How long a rank waits for the coordinator's command or Resume at a boundary; it covers the
  // slowest rank reaching the boundary (rank 0 may be writing a checkpoint).
  std::chrono::milliseconds boundary_timeout{std::chrono::seconds(600)};
  // The other ranks wait this long for rank 0 to prepare the data (a tokenizer may be trained).
  std::chrono::milliseconds data_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds progress_interval{std::chrono::seconds(1)};
  // A training thread with no progress (step, evaluation, checkpoint, event) for this long while
  // not waiting on the coordinator is stuck: the rank reports itself failed (retryable: the job
  // restarts as for a lost worker) and the process exits with kStalledExitCode, so that its
  // supervisor restarts it (a thread stuck in native code cannot be stopped otherwise). Must
  // exceed the longest step, evaluation or checkpoint save. 0: no watchdog.
  std::chrono::milliseconds stall_timeout{std::chrono::minutes(30)};
  // One gradient all-reduce, or one reduce-scatter / all-gather bucket of a sharded optimizer.
  int64_t bucket_bytes = int64_t{25} << 20;
  // Each job's Prometheus series (labels job_id, rank, worker) go here; nullptr: no metrics.
  // They stay, with the job's final values, until the next job starts here.
  prometheus::Registry* metrics_registry = nullptr;
  // The process's series (info, state, memory, jobs run); nullptr: none. Gets the worker id at
  // each (re)registration; must outlive the ClusterWorker.
  metrics::WorkerProcessMetrics* process_metrics = nullptr;
  // Where jobs may read and write (common/path_roots.h); empty: anywhere.
  PathRoots roots;
};

class ClusterWorker {
 public:
  explicit ClusterWorker(ClusterWorkerOptions options);
  ~ClusterWorker();
  ClusterWorker(const ClusterWorker&) = delete;
  ClusterWorker& operator=(const ClusterWorker&) = delete;

  // Connects and runs assignments until stop(); then reports the running job as stopped,
  // flushes what is queued for the coordinator and returns.
  void run();
  // Any thread. The running job stops at its next step (rank 0 checkpoints first).
  void stop();

  // For tests and logs.
  std::string worker_id() const { return client_->worker_id(); }
  int rendezvous_port() const { return client_->rendezvous_port(); }
  bool wait_connected(std::chrono::milliseconds timeout) const { return client_->wait_connected(timeout); }

 private:
  void on_message(const relora::v1::CoordinatorMessage& msg);
  void on_connected();
  void run_assignment(const relora::v1::Assignment& assignment);
  // The stall watchdog fired (its own thread): report the rank failed, flush, end the process.
  [[noreturn]] void report_stall_and_exit(const relora::v1::Assignment& a, const std::string& what);

  // Constant after construction.
  const ClusterWorkerOptions options_;
  std::unique_ptr<CoordinatorClient> client_;
  // The last job's series, kept after it ended so that its final values can still be scraped;
  // replaced when the next job starts. Only run_assignment() (the run() thread) touches it.
  std::unique_ptr<metrics::PrometheusTrainMetrics> last_job_metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // State below is protected by mu_.
  bool stopping_ = false;
  std::deque<relora::v1::Assignment> pending_;
  std::deque<std::string> cancelled_;        // recently cancelled job ids
  RemoteCycleController* active_ = nullptr;  // the running job's, owned by run_assignment
  relora::v1::Assignment active_assignment_;  // its job, rank, world and run (meaningful while active_)
  // The last job's JobFinished, sent again after a reconnect: a message written just before a
  // stream breaks can be lost, and this one must reach the coordinator.
  std::optional<relora::v1::WorkerMessage> last_finished_;
};

}  // namespace relora::cluster
