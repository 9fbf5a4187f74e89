// How the CLI shows jobs, events and workers: state names, durations, tables, the one-line
// progress summary, and JSON output. Pure functions of their inputs (the current time is an
// argument), so that tests can pin every string.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "relora/v1/service.pb.h"

namespace relora::client {

// "queued", "running", "completed", "failed", "cancelled" ("unknown" for anything else).
std::string state_name(relora::v1::JobState state);
bool is_terminal(relora::v1::JobState state);

// 42 -> "42s", 185 -> "3m05s", 3720 -> "1h02m", 183600 -> "2d03h"; negative or NaN -> "-".
std::string format_duration(double seconds);
// A timeout as the user would write it: 500 -> "500ms", 10000 -> "10s", 90000 -> "1m30s".
std::string format_timeout(int64_t ms);
// Time since `then_ms` (unix ms) at `now_ms`; "-" when `then_ms` is 0 (never happened).
std::string format_age(int64_t then_ms, int64_t now_ms);
// 950 -> "950", 12345 -> "12.3k", 4.2e6 -> "4.2M".
std::string format_count(double value);
// 1536 -> "1.5 KiB", 8e9 -> "7.5 GiB".
std::string format_bytes(int64_t bytes);
// Local wall-clock time "2024-05-01 12:00:03" of a unix-ms timestamp ("-" for 0).
std::string format_time(int64_t unix_ms);
// "STEP/TOTAL" as "120/1000".
std::string format_steps(const relora::v1::JobProgress& p);
// Loss with 4 decimals, "-" before the first step.
std::string format_loss(const relora::v1::JobProgress& p);

// Left-aligned columns separated by two spaces; the last column is not padded.
std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows);

std::string jobs_table(const std::vector<relora::v1::Job>& jobs, int64_t now_ms);
std::string events_table(const std::vector<relora::v1::JobEvent>& events);
std::string workers_table(const std::vector<relora::v1::WorkerInfo>& workers, int64_t now_ms);

// The live progress line of `watch`, e.g.
//   "running  step 120/1000 (12%)  loss 4.2130  12.3k tok/s  cycle 2  merges 1  ETA 3m12s"
std::string progress_line(const relora::v1::Job& job);
// One line per event, e.g. "step 120  rank 0  checkpoint  saved runs/x/step-120".
std::string event_line(const relora::v1::JobEvent& event);
// The multi-line human summary of `status`.
std::string job_summary(const relora::v1::Job& job, int64_t now_ms);

// Any message in protobuf's JSON mapping with the .proto field names (snake_case), all fields.
nlohmann::json proto_json(const google::protobuf::Message& message);
// A job for scripts: top-level plain fields (job_id, name, state as "running", step,
// total_steps, loss, merges, ...; numbers as numbers, unlike protobuf's int64-as-string), the
// parsed run summary under "summary" when there is one, and the full message under "job".
nlohmann::json job_json(const relora::v1::Job& job);

// Milliseconds since the epoch, now.
int64_t now_unix_ms();

}  // namespace relora::client
