// Formatting of jobs, events and workers (see format.h).
#include "client/format.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <sstream>

namespace relora::client {

using relora::v1::JobState;

namespace {

// printf into a std::string (std::format is C++20).
template <typename... Args>
std::string fmt(const char* format, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, args...);
  return buf;
}

}  // namespace

std::string state_name(JobState state) {
  switch (state) {
    case relora::v1::JOB_STATE_QUEUED: return "queued";
    case relora::v1::JOB_STATE_RUNNING: return "running";
    case relora::v1::JOB_STATE_COMPLETED: return "completed";
    case relora::v1::JOB_STATE_FAILED: return "failed";
    case relora::v1::JOB_STATE_CANCELLED: return "cancelled";
    default: return "unknown";
  }
}

bool is_terminal(JobState state) {
  return state == relora::v1::JOB_STATE_COMPLETED || state == relora::v1::JOB_STATE_FAILED ||
         state == relora::v1::JOB_STATE_CANCELLED;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "-";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return fmt("%llds", static_cast<long long>(s));
  if (s < 3600) return fmt("%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  if (s < 86400) return fmt("%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  return fmt("%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
}

std::string format_timeout(int64_t ms) {
  if (ms < 1000 || (ms % 1000 != 0 && ms < 60000)) return std::to_string(ms) + "ms";
  return format_duration(ms / 1000.0);
}

std::string format_age(int64_t then_ms, int64_t now_ms) {
  if (then_ms <= 0) return "-";
  return format_duration(std::max<int64_t>(0, now_ms - then_ms) / 1000.0);
}

std::string format_count(double v) {
  if (!std::isfinite(v)) return "-";
  if (std::fabs(v) < 1000) return fmt("%.0f", v);
  if (std::fabs(v) < 1e6) return fmt("%.1fk", v / 1e3);
  if (std::fabs(v) < 1e9) return fmt("%.1fM", v / 1e6);
  return fmt("%.1fG", v / 1e9);
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 1024) return fmt("%lld B", static_cast<long long>(bytes));
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = bytes / 1024.0;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  return fmt("%.1f %s", v, units[u]);
}

std::string format_time(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string format_steps(const relora::v1::JobProgress& p) {
  return std::to_string(p.step()) + "/" + std::to_string(p.total_steps());
}

std::string format_loss(const relora::v1::JobProgress& p) {
  // Loss 0 exactly only happens before the first step is reported.
  if (p.step() == 0 && p.loss() == 0) return "-";
  return fmt("%.4f", p.loss());
}

std::string format_table(const std::vector<std::string>& headers,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(headers.size());
  for (size_t c = 0; c < headers.size(); ++c) width[c] = headers[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < headers.size(); ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      line += cell;
      if (c + 1 < headers.size()) line += std::string(width[c] - cell.size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(headers);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string jobs_table(const std::vector<relora::v1::Job>& jobs, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : jobs) {
    rows.push_back({j.id(), j.name(), state_name(j.state()), format_steps(j.progress()), format_loss(j.progress()),
                    std::to_string(j.progress().merges()), format_age(j.submitted_unix_ms(), now_ms)});
  }
  return format_table({"ID", "NAME", "STATE", "STEP/TOTAL", "LOSS", "MERGES", "AGE"}, rows);
}

namespace {
std::string rank_name(int32_t rank) { return rank < 0 ? "coord" : std::to_string(rank); }
}  // namespace

std::string events_table(const std::vector<relora::v1::JobEvent>& events) {
  std::vector<std::vector<std::string>> rows;
  bool any_checksum = false;
  for (const auto& e : events) any_checksum |= !e.param_checksum().empty();
  for (const auto& e : events) {
    std::vector<std::string> row{format_time(e.unix_ms()), std::to_string(e.step()), rank_name(e.rank()), e.kind(),
                                 e.message()};
    if (any_checksum) row.push_back(e.param_checksum());
    rows.push_back(std::move(row));
  }
  std::vector<std::string> headers{"TIME", "STEP", "RANK", "KIND", "MESSAGE"};
  if (any_checksum) headers.push_back("CHECKSUM");
  return format_table(headers, rows);
}

std::string workers_table(const std::vector<relora::v1::WorkerInfo>& workers, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : workers) {
    const bool assigned = !w.job_id().empty();
    rows.push_back({w.id(), w.host(), w.device(), w.memory_bytes() > 0 ? format_bytes(w.memory_bytes()) : "-",
                    w.state(), assigned ? w.job_id() : "-", assigned ? std::to_string(w.rank()) : "-",
                    format_age(w.last_heartbeat_unix_ms(), now_ms)});
  }
  return format_table({"ID", "HOST", "DEVICE", "MEMORY", "STATE", "JOB", "RANK", "HEARTBEAT"}, rows);
}

std::string progress_line(const relora::v1::Job& job) {
  const auto& p = job.progress();
  std::string line = state_name(job.state());
  if (job.state() == relora::v1::JOB_STATE_QUEUED) {
    const int workers = job.spec().cluster().has_workers() ? job.spec().cluster().workers() : 1;
    return line + "  waiting for " + std::to_string(workers) + (workers == 1 ? " worker" : " workers");
  }
  line += "  step " + format_steps(p);
  if (p.total_steps() > 0) line += fmt(" (%.0f%%)", 100.0 * p.step() / p.total_steps());
  line += "  loss " + format_loss(p);
  if (p.tokens_per_second() > 0) line += "  " + format_count(p.tokens_per_second()) + " tok/s";
  line += "  cycle " + std::to_string(p.cycle()) + "  merges " + std::to_string(p.merges());
  if (p.eval_loss() > 0) line += fmt("  eval ppl %.2f", p.eval_perplexity());
  if (job.state() == relora::v1::JOB_STATE_RUNNING && p.eta_seconds() > 0) {
    line += "  ETA " + format_duration(p.eta_seconds());
  } else if (is_terminal(job.state()) && job.started_unix_ms() > 0 && job.finished_unix_ms() > 0) {
    line += "  took " + format_duration((job.finished_unix_ms() - job.started_unix_ms()) / 1000.0);
  }
  return line;
}

std::string event_line(const relora::v1::JobEvent& e) {
  std::string line = "step " + std::to_string(e.step()) + "  " +
                     (e.rank() < 0 ? std::string("coordinator") : "rank " + std::to_string(e.rank())) + "  " +
                     e.kind();
  if (!e.message().empty()) line += "  " + e.message();
  if (!e.param_checksum().empty()) line += "  checksum " + e.param_checksum();
  return line;
}

std::string job_summary(const relora::v1::Job& job, int64_t now_ms) {
  const auto& p = job.progress();
  std::ostringstream out;
  auto row = [&](const char* key, const std::string& value) { out << fmt("%-11s", key) << value << "\n"; };
  row("job", job.id() + (job.name().empty() ? "" : " (" + job.name() + ")"));
  row("state", state_name(job.state()));
  if (job.state() == relora::v1::JOB_STATE_FAILED || !job.error().empty()) row("error", job.error());
  std::string progress = "step " + format_steps(p) + ", loss " + format_loss(p);
  if (p.lr() > 0) progress += fmt(", lr %.3g", p.lr());
  if (p.tokens_per_second() > 0) progress += ", " + format_count(p.tokens_per_second()) + " tokens/s";
  row("progress", progress);
  row("relora", "cycle " + std::to_string(p.cycle()) + ", " + std::to_string(p.merges()) + " merges, " +
                    std::to_string(p.optimizer_resets()) + " optimizer resets");
  if (p.eval_loss() > 0) row("eval", fmt("loss %.4f, perplexity %.2f", p.eval_loss(), p.eval_perplexity()));
  if (job.state() == relora::v1::JOB_STATE_RUNNING && p.eta_seconds() > 0) row("eta", format_duration(p.eta_seconds()));
  if (!p.source_tokens().empty()) {
    // Sorted by name: protobuf maps have no order of their own.
    std::map<std::string, int64_t> sources(p.source_tokens().begin(), p.source_tokens().end());
    std::string line;
    for (const auto& [source, tokens] : sources)
      line += (line.empty() ? "" : ", ") + source + " " + format_count(static_cast<double>(tokens)) + " tokens";
    row("data", line);
  }
  if (p.rss_bytes() > 0) row("memory", format_bytes(p.rss_bytes()) + " (rank 0 RSS)");
  if (job.worker_ids_size() > 0) {
    std::string ids;
    for (int i = 0; i < job.worker_ids_size(); ++i) ids += (i ? ", " : "") + job.worker_ids(i);
    const int32_t wanted = job.spec().cluster().workers();
    if (job.world_size() > 0 && job.world_size() < wanted)
      ids += " (" + std::to_string(job.world_size()) + " of " + std::to_string(wanted) + ", elastic)";
    row("workers", ids);
  }
  if (job.restarts() > 0)
    row("restarts", std::to_string(job.restarts()) + " of at most " +
                        std::to_string(job.spec().cluster().max_restarts()) + " (see `relora events`)");
  row("submitted", format_time(job.submitted_unix_ms()) + " (" + format_age(job.submitted_unix_ms(), now_ms) + " ago)");
  if (job.started_unix_ms() > 0) row("started", format_time(job.started_unix_ms()));
  if (job.finished_unix_ms() > 0) row("finished", format_time(job.finished_unix_ms()));
  row("checkpoint", job.checkpoint().empty() ? "none yet" : job.checkpoint());
  return out.str();
}

nlohmann::json proto_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string text;
  const auto status = google::protobuf::util::MessageToJsonString(message, &text, opts);
  if (!status.ok()) return nlohmann::json::object();  // cannot happen for our own messages
  return nlohmann::json::parse(text);
}

nlohmann::json job_json(const relora::v1::Job& job) {
  const auto& p = job.progress();
  nlohmann::json j = {
      {"job_id", job.id()},
      {"name", job.name()},
      {"state", state_name(job.state())},
      {"step", p.step()},
      {"total_steps", p.total_steps()},
      {"loss", p.loss()},
      {"tokens_per_second", p.tokens_per_second()},
      {"cycle", p.cycle()},
      {"merges", p.merges()},
      {"optimizer_resets", p.optimizer_resets()},
      {"eta_seconds", p.eta_seconds()},
      {"eval_loss", p.eval_loss()},
      {"eval_perplexity", p.eval_perplexity()},
      {"source_tokens", std::map<std::string, int64_t>(p.source_tokens().begin(), p.source_tokens().end())},
      {"checkpoint", job.checkpoint()},
      {"error", job.error()},
      {"restarts", job.restarts()},
      {"world_size", job.world_size()},
  };
  if (!job.summary_json().empty()) {
    // Kept as text in "job" either way; parsed here so scripts need not decode it twice.
    auto summary = nlohmann::json::parse(job.summary_json(), nullptr, /*allow_exceptions=*/false);
    j["summary"] = summary.is_discarded() ? nlohmann::json(job.summary_json()) : summary;
  }
  j["job"] = proto_json(job);
  return j;
}

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace relora::client
