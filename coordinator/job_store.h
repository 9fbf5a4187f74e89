// Durable job records: one SQLite file (<state-dir>/relora.db) holding every submitted job (state,
// resolved spec as JSON, progress, checkpoint, summary, error) and its event log.
//
// Why SQLite: a restarted coordinator must know every job; a single file with transactions, WAL
// (readers never block the writer, a crash never leaves a half-written row) and no server to run.
//
// Threading contract: a JobStore is NOT thread-safe. ClusterState calls it with its own mutex
// held, so calls are serialized. Each call is a short local write or read (WAL,
// synchronous=NORMAL: no fsync per commit), never a wait on another party.
// Errors: every method throws StoreError with SQLite's message and what was being done.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "relora/v1/service.pb.h"

namespace relora::coordinator {

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class JobStore {
 public:
  // Opens (creating if needed) the database at `path` and its tables.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // A new job (its id must be new). Submission order is the insertion order.
  void insert_job(const relora::v1::Job& job);
  // Everything that changes after submission: state, progress, times, error, workers,
  // checkpoint, summary, restarts, world size and run. The spec is written once, by insert_job.
  void update_job(const relora::v1::Job& job);
  void append_event(const relora::v1::JobEvent& event);

  // Every job, in submission order, spec decoded.
  std::vector<relora::v1::Job> load_jobs();
  // Events of `job_id` with seq > after_seq in seq order; at most `limit` (0: all).
  std::vector<relora::v1::JobEvent> events(const std::string& job_id, int64_t after_seq, int limit);
  // The highest event seq of the job (0 when it has none).
  int64_t last_event_seq(const std::string& job_id);

  const std::string& path() const { return path_; }

 private:
  class Statement;
  void exec(const char* sql, const char* what);
  // The id (?1) and the columns that change after submission (?2..?12), for insert and update.
  static void bind_mutable_columns(Statement& st, const relora::v1::Job& job);

  const std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace relora::coordinator
