#include "coordinator/job_store.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

#include "common/job_spec.h"

namespace relora::coordinator {
namespace {

using relora::v1::Job;
using relora::v1::JobEvent;
using relora::v1::JobProgress;

// 2: restarts, world_size and run (a restarted coordinator adopts running runs by them).
constexpr int kSchemaVersion = 2;

// Column names are spelled out in every statement so that adding a column never shifts indices.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  submit_order      INTEGER PRIMARY KEY AUTOINCREMENT,
  id                TEXT NOT NULL UNIQUE,
  name              TEXT NOT NULL,
  state             TEXT NOT NULL,          -- JobState enum name, e.g. JOB_STATE_RUNNING
  spec_json         TEXT NOT NULL,          -- resolved spec, job_spec_to_json
  progress_json     TEXT NOT NULL,          -- JobProgress in protobuf's JSON mapping
  submitted_unix_ms INTEGER NOT NULL,
  started_unix_ms   INTEGER NOT NULL DEFAULT 0,
  finished_unix_ms  INTEGER NOT NULL DEFAULT 0,
  error             TEXT NOT NULL DEFAULT '',
  worker_ids_json   TEXT NOT NULL DEFAULT '[]',
  checkpoint        TEXT NOT NULL DEFAULT '',
  summary_json      TEXT NOT NULL DEFAULT '',
  restarts          INTEGER NOT NULL DEFAULT 0,
  world_size        INTEGER NOT NULL DEFAULT 0,
  run               INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
  job_id         TEXT NOT NULL,
  seq            INTEGER NOT NULL,
  unix_ms        INTEGER NOT NULL,
  step           INTEGER NOT NULL,
  rank           INTEGER NOT NULL,
  kind           TEXT NOT NULL,
  message        TEXT NOT NULL,
  param_checksum TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
)sql";

std::string progress_to_json(const JobProgress& p) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(p, &out, opts);
  if (!status.ok()) throw StoreError("encoding job progress: " + status.ToString());
  return out;
}

JobProgress progress_from_json(const std::string& text) {
  JobProgress p;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // a newer coordinator may have written more fields
  const auto status = google::protobuf::util::JsonStringToMessage(text, &p, opts);
  if (!status.ok()) throw StoreError("decoding job progress: " + status.ToString());
  return p;
}

}  // namespace

// A prepared statement, finalized on scope exit. Binds are 1-based as in SQLite.
class JobStore::Statement {
 public:
  Statement(sqlite3* db, const char* sql, std::string what) : db_(db), what_(std::move(what)) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail();
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  // True while there is a row to read.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail();
    return false;
  }
  void run() {
    while (step()) {
    }
  }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail();
  }
  [[noreturn]] void fail() { throw StoreError(what_ + ": " + sqlite3_errmsg(db_)); }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string what_;
};

JobStore::JobStore(const std::string& path) : path_(path) {
  // NOMUTEX: our caller serializes access (see the header); SQLite's own mutex would be redundant.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw StoreError("opening job database " + path + ": " + msg);
  }
  // Another process holding the file (a second coordinator, the sqlite3 shell) makes writes
  // wait up to this long instead of failing at once with SQLITE_BUSY.
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec("PRAGMA journal_mode=WAL", "enabling WAL");
    exec("PRAGMA synchronous=NORMAL", "setting synchronous");
    exec(kSchema, "creating tables");
    Statement version(db_, "PRAGMA user_version", "reading schema version");
    const int64_t found = version.step() ? version.integer(0) : 0;
    if (found > kSchemaVersion)
      throw StoreError(path + " was written by a newer coordinator (schema " + std::to_string(found) + ")");
    if (found == 1) {
      // Written by a coordinator before schema 2 (CREATE TABLE IF NOT EXISTS left its table as it was).
      exec("ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0;"
           "ALTER TABLE jobs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 0;"
           "ALTER TABLE jobs ADD COLUMN run INTEGER NOT NULL DEFAULT 0;",
           "upgrading the jobs table to schema 2");
    }
    exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str(), "writing schema version");
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

JobStore::~JobStore() { sqlite3_close(db_); }

void JobStore::exec(const char* sql, const char* what) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    throw StoreError(std::string(what) + " in " + path_ + ": " + msg);
  }
}

void JobStore::insert_job(const Job& job) {
  // One statement, so that a failed submission leaves no half-written row behind.
  Statement st(db_,
               "INSERT INTO jobs (id, state, progress_json, started_unix_ms, finished_unix_ms, error, "
               "worker_ids_json, checkpoint, summary_json, restarts, world_size, run, name, spec_json, "
               "submitted_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
               "saving job " + job.id());
  bind_mutable_columns(st, job);
  st.bind(13, job.name()).bind(14, job_spec_to_json(job.spec()));
  st.bind(15, static_cast<int64_t>(job.submitted_unix_ms()));
  st.run();
}

void JobStore::update_job(const Job& job) {
  Statement st(db_,
               "UPDATE jobs SET state=?2, progress_json=?3, started_unix_ms=?4, finished_unix_ms=?5, "
               "error=?6, worker_ids_json=?7, checkpoint=?8, summary_json=?9, restarts=?10, world_size=?11, "
               "run=?12 WHERE id=?1",
               "updating job " + job.id());
  bind_mutable_columns(st, job);
  st.run();
}

void JobStore::bind_mutable_columns(Statement& st, const Job& job) {
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& w : job.worker_ids()) workers.push_back(w);
  st.bind(1, job.id()).bind(2, relora::v1::JobState_Name(job.state())).bind(3, progress_to_json(job.progress()));
  st.bind(4, static_cast<int64_t>(job.started_unix_ms())).bind(5, static_cast<int64_t>(job.finished_unix_ms()));
  st.bind(6, job.error()).bind(7, workers.dump()).bind(8, job.checkpoint()).bind(9, job.summary_json());
  st.bind(10, static_cast<int64_t>(job.restarts())).bind(11, static_cast<int64_t>(job.world_size()));
  st.bind(12, static_cast<int64_t>(job.run()));
}

void JobStore::append_event(const JobEvent& e) {
  Statement st(db_,
               "INSERT INTO events (job_id, seq, unix_ms, step, rank, kind, message, param_checksum) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
               "saving event of job " + e.job_id());
  st.bind(1, e.job_id()).bind(2, static_cast<int64_t>(e.seq())).bind(3, static_cast<int64_t>(e.unix_ms()));
  st.bind(4, static_cast<int64_t>(e.step())).bind(5, static_cast<int64_t>(e.rank())).bind(6, e.kind());
  st.bind(7, e.message()).bind(8, e.param_checksum());
  st.run();
}

std::vector<Job> JobStore::load_jobs() {
  Statement st(db_,
               "SELECT id, name, state, spec_json, progress_json, submitted_unix_ms, started_unix_ms, "
               "finished_unix_ms, error, worker_ids_json, checkpoint, summary_json, restarts, world_size, run FROM jobs "
               "ORDER BY submit_order",
               "loading jobs");
  std::vector<Job> jobs;
  while (st.step()) {
    Job job;
    job.set_id(st.text(0));
    job.set_name(st.text(1));
    relora::v1::JobState state = relora::v1::JOB_STATE_UNSPECIFIED;
    if (!relora::v1::JobState_Parse(st.text(2), &state))
      throw StoreError("job " + job.id() + " has an unknown state '" + st.text(2) + "'");
    job.set_state(state);
    try {
      *job.mutable_spec() = job_spec_from_json(st.text(3));
    } catch (const std::exception& e) {
      throw StoreError("job " + job.id() + ": " + e.what());
    }
    *job.mutable_progress() = progress_from_json(st.text(4));
    job.set_submitted_unix_ms(st.integer(5));
    job.set_started_unix_ms(st.integer(6));
    job.set_finished_unix_ms(st.integer(7));
    job.set_error(st.text(8));
    const auto workers = nlohmann::json::parse(st.text(9), nullptr, /*allow_exceptions=*/false);
    if (workers.is_array())
      for (const auto& w : workers)
        if (w.is_string()) job.add_worker_ids(w.get<std::string>());
    job.set_checkpoint(st.text(10));
    job.set_summary_json(st.text(11));
    job.set_restarts(static_cast<int32_t>(st.integer(12)));
    job.set_world_size(static_cast<int32_t>(st.integer(13)));
    job.set_run(static_cast<int32_t>(st.integer(14)));
    jobs.push_back(std::move(job));
  }
  return jobs;
}

std::vector<JobEvent> JobStore::events(const std::string& job_id, int64_t after_seq, int limit) {
  Statement st(db_,
               "SELECT seq, unix_ms, step, rank, kind, message, param_checksum FROM events "
               "WHERE job_id=?1 AND seq>?2 ORDER BY seq LIMIT ?3",
               "loading events of job " + job_id);
  st.bind(1, job_id).bind(2, after_seq).bind(3, static_cast<int64_t>(limit > 0 ? limit : -1));  // -1: no limit
  std::vector<JobEvent> out;
  while (st.step()) {
    JobEvent e;
    e.set_job_id(job_id);
    e.set_seq(st.integer(0));
    e.set_unix_ms(st.integer(1));
    e.set_step(st.integer(2));
    e.set_rank(static_cast<int32_t>(st.integer(3)));
    e.set_kind(st.text(4));
    e.set_message(st.text(5));
    e.set_param_checksum(st.text(6));
    out.push_back(std::move(e));
  }
  return out;
}

int64_t JobStore::last_event_seq(const std::string& job_id) {
  Statement st(db_, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id=?1", "reading events of job " + job_id);
  st.bind(1, job_id);
  return st.step() ? st.integer(0) : 0;
}

}  // namespace relora::coordinator
