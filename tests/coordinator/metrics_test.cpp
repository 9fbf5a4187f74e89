// The coordinator's Prometheus endpoint, scraped over a plain HTTP/1.0 socket: every metric of the
// contract (docs/observability.md) with its label values, the values following a two-rank job
// through its boundaries, counters that only grow, lost workers, restarts, no `job` label, and
// finished jobs' state and last progress kept for the most recent kFinishedJobsKept of them.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "coordinator/coordinator_metrics.h"
#include "tests/coordinator/harness.h"

namespace relora::coordinator::testing {
namespace {

using Labels = std::map<std::string, std::string>;

struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

// GET http://127.0.0.1:<port>/metrics; the body, or "" when the endpoint does not answer 200.
std::string http_get_metrics(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buf[8192];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") > response.find("\r\n") ||
      body == std::string::npos) {
    ADD_FAILURE() << "bad response from the metrics endpoint:\n" << response.substr(0, 500);
    return "";
  }
  return response.substr(body + 4);
}

// The Prometheus text format, as prometheus-cpp writes it (no escaped quotes in our labels).
std::vector<Sample> parse(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    const auto brace = line.find('{');
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    if (brace != std::string::npos && brace < space) {
      s.name = line.substr(0, brace);
      const auto close = line.find('}', brace);
      std::string labels = line.substr(brace + 1, close - brace - 1);
      size_t pos = 0;
      while (pos < labels.size()) {
        const auto eq = labels.find('=', pos);
        const auto q1 = labels.find('"', eq);
        const auto q2 = labels.find('"', q1 + 1);
        s.labels[labels.substr(pos, eq - pos)] = labels.substr(q1 + 1, q2 - q1 - 1);
        pos = q2 + 1;
        if (pos < labels.size() && labels[pos] == ',') ++pos;
      }
    } else {
      s.name = line.substr(0, line.find(' '));
    }
    s.value = std::stod(line.substr(space + 1));
    out.push_back(std::move(s));
  }
  return out;
}

class Scrape {
 public:
  explicit Scrape(int port) : text_(http_get_metrics(port)), samples_(parse(text_)) {}
  const std::string& text() const { return text_; }
  const std::vector<Sample>& samples() const { return samples_; }
  std::optional<double> find(const std::string& name, const Labels& labels = {}) const {
    for (const auto& s : samples_)
      if (s.name == name && s.labels == labels) return s.value;
    return std::nullopt;
  }
  // The value, failing the test when the series is absent.
  double at(const std::string& name, const Labels& labels = {}) const {
    auto v = find(name, labels);
    EXPECT_TRUE(v.has_value()) << name << " " << ::testing::PrintToString(labels) << " missing in\n" << text_;
    return v.value_or(-1);
  }
  // Every label set of `name` (its children).
  std::vector<Labels> label_sets(const std::string& name) const {
    std::vector<Labels> out;
    for (const auto& s : samples_)
      if (s.name == name) out.push_back(s.labels);
    return out;
  }

 private:
  std::string text_;
  std::vector<Sample> samples_;
};

bool is_monotonic(const std::string& name) {
  auto ends = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends("_total") || ends("_count") || ends("_sum") || ends("_bucket");
}

// Every counter and histogram series of `before` is in `after` with a value at least as big.
void expect_counters_grew(const Scrape& before, const Scrape& after) {
  int checked = 0;
  for (const auto& s : before.samples()) {
    if (!is_monotonic(s.name)) continue;
    auto v = after.find(s.name, s.labels);
    ASSERT_TRUE(v.has_value()) << s.name << " " << ::testing::PrintToString(s.labels) << " disappeared";
    EXPECT_GE(*v, s.value) << s.name << " " << ::testing::PrintToString(s.labels) << " went down";
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

const Labels kJobStates[] = {{{"state", "queued"}},
                             {{"state", "running"}},
                             {{"state", "completed"}},
                             {{"state", "failed"}},
                             {{"state", "cancelled"}}};

double jobs(const Scrape& s, const std::string& state) { return s.at("relora_coordinator_jobs", {{"state", state}}); }
double workers(const Scrape& s, const std::string& state) {
  return s.at("relora_coordinator_workers", {{"state", state}});
}
double commands(const Scrape& s, const std::string& kind) {
  return s.at("relora_coordinator_commands_total", {{"kind", kind}});
}
double rpcs(const Scrape& s, const std::string& method, const std::string& code) {
  return s.find("relora_coordinator_rpcs_total", {{"method", method}, {"code", code}}).value_or(0);
}
const char kRoundTrip[] = "relora_coordinator_command_round_trip_seconds_count";
const char kProgress[] = "relora_coordinator_job_last_progress_timestamp_seconds";
const char kJobState[] = "relora_coordinator_job_state";

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

TEST(CoordinatorMetrics, StatusCodeNamesAreTheUpperCaseEnumNames) {
  EXPECT_EQ(status_code_name(grpc::StatusCode::OK), "OK");
  EXPECT_EQ(status_code_name(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_EQ(status_code_name(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(status_code_name(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
}

TEST(CoordinatorMetrics, OffByDefault) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path());
  EXPECT_EQ(c.server().metrics_port(), -1);
  c.submit_ok(job_yaml("no-metrics"));  // counting into the private registry works the same
}

TEST(CoordinatorMetrics, EveryMetricFollowsAJobThroughItsBoundaries) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), 10s, /*metrics_port=*/0);
  const int port = c.server().metrics_port();
  ASSERT_GT(port, 0);

  // Before anything happened: every state and command kind is there, at 0.
  const Scrape empty(port);
  for (const auto& labels : kJobStates) EXPECT_EQ(empty.at("relora_coordinator_jobs", labels), 0);
  EXPECT_EQ(empty.label_sets("relora_coordinator_jobs").size(), 5u);
  for (const char* state : {"idle", "busy", "lost"}) EXPECT_EQ(workers(empty, state), 0);
  EXPECT_EQ(empty.label_sets("relora_coordinator_workers").size(), 3u);
  for (const char* kind : {"low_rank_start", "cycle_end", "job_end"}) EXPECT_EQ(commands(empty, kind), 0);
  EXPECT_EQ(empty.at("relora_coordinator_heartbeat_misses_total"), 0);
  EXPECT_EQ(empty.at("relora_coordinator_job_restarts_total"), 0);
  EXPECT_EQ(empty.at(kRoundTrip), 0);
  EXPECT_TRUE(empty.label_sets(kProgress).empty());
  EXPECT_TRUE(empty.label_sets(kJobState).empty());

  SimWorker a(c.channel(), "host-a", 29501), b(c.channel(), "host-b", 29502);
  a.join();
  b.join();
  ASSERT_TRUE(eventually([&] { return workers(Scrape(port), "idle") == 2; }));
  const double before_start = unix_now();
  const v1::Job job = c.submit_ok(job_yaml("metrics", 2));
  ASSERT_TRUE(a.next().has_value());  // assignments
  ASSERT_TRUE(b.next().has_value());

  const Scrape running(port);
  EXPECT_EQ(jobs(running, "running"), 1);
  EXPECT_EQ(jobs(running, "queued"), 0);
  EXPECT_EQ(workers(running, "busy"), 2);
  EXPECT_EQ(workers(running, "idle"), 0);
  // Set when the job starts, so a job that never reports is still caught by ReloraJobNoProgress.
  EXPECT_GE(running.at(kProgress, {{"job_id", job.id()}}), before_start - 1);
  EXPECT_EQ(running.at(kJobState, {{"job_id", job.id()}, {"state", "running"}}), 1);
  EXPECT_EQ(running.label_sets(kJobState).size(), 1u);
  EXPECT_EQ(rpcs(running, "SubmitJob", "OK"), 1);
  EXPECT_EQ(rpcs(running, "Register", "OK"), 2);
  EXPECT_GE(running.at("relora_coordinator_rpc_duration_seconds_count", {{"method", "SubmitJob"}}), 1);
  EXPECT_GE(running.at("relora_coordinator_rpc_duration_seconds_bucket", {{"method", "SubmitJob"}, {"le", "+Inf"}}),
            1);

  // One boundary: the command is counted once (not per rank) and timed until the last ack.
  auto boundary = [&](int64_t step, const std::string& kind, bool acked) {
    a.boundary(job.id(), 0, step, kind);
    b.boundary(job.id(), 1, step, kind);
    for (SimWorker* w : {&a, &b}) {
      auto m = w->next();
      ASSERT_TRUE(m && m->has_command()) << (m ? m->DebugString() : "nothing");
    }
    if (!acked) return;
    a.ack(job.id(), 0, step, "sum");
    b.ack(job.id(), 1, step, "sum");
    for (SimWorker* w : {&a, &b}) {
      auto m = w->next();
      ASSERT_TRUE(m && m->has_resume());
    }
  };
  boundary(20, "low_rank_start", true);
  const Scrape first(port);
  EXPECT_EQ(commands(first, "low_rank_start"), 1);
  EXPECT_EQ(commands(first, "cycle_end"), 0);
  EXPECT_EQ(first.at(kRoundTrip), 1);
  EXPECT_GE(first.at("relora_coordinator_rpc_duration_seconds_count", {{"method", "Connect"}}), 4);  // per message
  const double progress_first = first.at(kProgress, {{"job_id", job.id()}});

  // A merge in between; every counter only grows across it.
  a.progress(job.id(), 0, 40, 5.0);
  boundary(60, "cycle_end", true);
  const Scrape merged(port);
  EXPECT_EQ(commands(merged, "cycle_end"), 1);
  EXPECT_EQ(merged.at(kRoundTrip), 2);
  EXPECT_GE(merged.at(kProgress, {{"job_id", job.id()}}), progress_first);
  expect_counters_grew(first, merged);

  // job_end: counted, but never acknowledged, so not timed.
  boundary(100, "job_end", false);
  b.finished(job.id(), 1, true);
  a.finished(job.id(), 0, true, "", "{}");
  ASSERT_TRUE(c.wait_state(job.id(), v1::JOB_STATE_COMPLETED));
  // An error code, and a WatchJob stream that ends OK (the job is finished).
  EXPECT_EQ(c.submit("not: [valid", nullptr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::Job missing;
  EXPECT_EQ(c.get("job-404", &missing).error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::WatchJobRequest req;
    req.set_job_id(job.id());
    auto reader = c.jobs().WatchJob(&ctx, req);
    for (v1::JobUpdate u; reader->Read(&u);) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_TRUE(eventually([&] { return rpcs(Scrape(port), "WatchJob", "OK") == 1; }));

  const Scrape done(port);
  EXPECT_EQ(commands(done, "job_end"), 1);
  EXPECT_EQ(done.at(kRoundTrip), 2);
  EXPECT_EQ(jobs(done, "completed"), 1);
  EXPECT_EQ(jobs(done, "running"), 0);
  EXPECT_EQ(workers(done, "idle"), 2);
  EXPECT_EQ(workers(done, "busy"), 0);
  // A finished job keeps its last progress (frozen) and its state, now completed, alone.
  EXPECT_GE(done.at(kProgress, {{"job_id", job.id()}}), merged.at(kProgress, {{"job_id", job.id()}}));
  EXPECT_LE(done.at(kProgress, {{"job_id", job.id()}}), unix_now() + 1);
  EXPECT_EQ(done.at(kJobState, {{"job_id", job.id()}, {"state", "completed"}}), 1);
  EXPECT_EQ(done.label_sets(kJobState).size(), 1u) << done.text();
  EXPECT_EQ(rpcs(done, "SubmitJob", "INVALID_ARGUMENT"), 1);
  EXPECT_EQ(rpcs(done, "GetJob", "NOT_FOUND"), 1);
  EXPECT_GE(rpcs(done, "GetJob", "OK"), 1);
  expect_counters_grew(merged, done);

  // Label rules: no `job` label anywhere (Prometheus adds its own); codes are upper-case names.
  for (const auto& s : done.samples()) {
    EXPECT_EQ(s.labels.count("job"), 0u) << s.name;
    if (s.labels.count("code")) EXPECT_THAT(s.labels.at("code"), ::testing::MatchesRegex("[A-Z_]+"));
  }
  // Every metric of the contract and no other relora_ one (prometheus-cpp adds its exposer_*).
  std::set<std::string> families;
  for (const auto& s : done.samples()) {
    if (s.name.rfind("relora_", 0) != 0) continue;
    std::string n = s.name;
    for (const char* suffix : {"_bucket", "_count", "_sum"}) {
      const std::string suf = suffix;
      if (n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0 &&
          n.find("_seconds") != std::string::npos)
        n = n.substr(0, n.size() - suf.size());
    }
    families.insert(n);
  }
  const std::set<std::string> contract = {"relora_coordinator_jobs",
                                          "relora_coordinator_workers",
                                          "relora_coordinator_commands_total",
                                          "relora_coordinator_command_round_trip_seconds",
                                          "relora_coordinator_heartbeat_misses_total",
                                          "relora_coordinator_rpcs_total",
                                          "relora_coordinator_rpc_duration_seconds",
                                          "relora_coordinator_job_restarts_total",
                                          "relora_coordinator_runs_reattached_total",
                                          "relora_coordinator_job_regroups_total",
                                          "relora_coordinator_job_last_progress_timestamp_seconds",
                                          "relora_coordinator_job_state"};
  EXPECT_EQ(families, contract);
}

TEST(CoordinatorMetrics, ALostWorkerIsAHeartbeatMissAndLeavesTheLostState) {
  relora::testing::TempDir dir;
  Coordinator c(dir.path(), /*heartbeat_timeout=*/300ms, /*metrics_port=*/0);
  const int port = c.server().metrics_port();
  SimWorker silent(c.channel(), "host-a", 29501);
  silent.join();
  const std::string job = c.submit_ok(job_yaml("lost", 1, ", max_restarts: 0")).id();
  ASSERT_TRUE(silent.next().has_value());
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_FAILED, 3000ms));
  const Scrape s(port);
  EXPECT_EQ(s.at("relora_coordinator_heartbeat_misses_total"), 1);
  EXPECT_EQ(workers(s, "lost"), 1);
  EXPECT_EQ(workers(s, "idle"), 0);
  EXPECT_EQ(jobs(s, "failed"), 1);
  EXPECT_EQ(s.at(kJobState, {{"job_id", job}, {"state", "failed"}}), 1);
  EXPECT_EQ(s.label_sets(kProgress).size(), 1u);  // kept after the job failed
  EXPECT_EQ(rpcs(s, "Heartbeat", "OK"), 0);
  EXPECT_EQ(silent.heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(rpcs(Scrape(port), "Heartbeat", "NOT_FOUND"), 1);
  // Back after registering again.
  ASSERT_TRUE(silent.register_worker(silent.id()).ok());
  EXPECT_EQ(workers(Scrape(port), "lost"), 0);
}

TEST(CoordinatorMetrics, ARunNotReattachedAfterARestartCountsAsARestart) {
  relora::testing::TempDir dir;
  std::string job;
  {
    Coordinator c(dir.path(), 10s, /*metrics_port=*/0);
    SimWorker w(c.channel(), "host-a", 29501);
    w.join();
    job = c.submit_ok(job_yaml("restart", 1)).id();
    ASSERT_TRUE(w.next().has_value());
    ASSERT_EQ(jobs(Scrape(c.server().metrics_port()), "running"), 1);
    c.shutdown();
  }
  Coordinator c(dir.path(), 10s, /*metrics_port=*/0, /*reattach_timeout=*/300ms);
  ASSERT_TRUE(c.wait_state(job, v1::JOB_STATE_QUEUED));  // its worker never reported back
  const Scrape s(c.server().metrics_port());
  EXPECT_EQ(s.at("relora_coordinator_job_restarts_total"), 1);
  EXPECT_EQ(s.at("relora_coordinator_runs_reattached_total"), 0);
  EXPECT_EQ(jobs(s, "queued"), 1);
  EXPECT_EQ(jobs(s, "running"), 0);
  EXPECT_EQ(s.at(kJobState, {{"job_id", job}, {"state", "queued"}}), 1);
  EXPECT_TRUE(s.label_sets(kProgress).empty());  // progress is not persisted: it starts again with the run
}

// Many finished jobs: only the newest kFinishedJobsKept keep their series; unfinished ones all do.
TEST(CoordinatorMetrics, OnlyTheMostRecentFinishedJobsKeepTheirSeries) {
  prometheus::Registry registry;
  CoordinatorMetrics m(registry);
  const size_t kept = CoordinatorMetrics::kFinishedJobsKept;
  std::vector<JobStateEntry> all;
  for (size_t i = 0; i < kept + 5; ++i) {
    const std::string id = "job-" + std::to_string(100 + i);  // finished in this order
    m.job_progress(id);
    all.push_back({id, i % 2 ? "failed" : "completed", true, static_cast<int64_t>(1000 + i)});
  }
  m.job_progress("job-run");
  all.push_back({"job-run", "running", false, 0});
  all.push_back({"job-wait", "queued", false, 0});
  m.set_job_states(all);
  auto series = [&](const std::string& name) {
    std::map<std::string, std::string> by_job;  // job_id -> state label ("" for progress)
    for (const auto& s : parse(prometheus::TextSerializer().Serialize(registry.Collect())))
      if (s.name == name) by_job[s.labels.at("job_id")] = s.labels.count("state") ? s.labels.at("state") : "";
    return by_job;
  };
  auto states = series(kJobState);
  EXPECT_EQ(states.size(), kept + 2);
  EXPECT_EQ(states["job-run"], "running");
  EXPECT_EQ(states["job-wait"], "queued");
  for (size_t i = 0; i < kept + 5; ++i) {
    const std::string id = "job-" + std::to_string(100 + i);
    EXPECT_EQ(states.count(id), i >= 5 ? 1u : 0u) << id;  // the 5 oldest are gone
  }
  auto progress = series(kProgress);
  EXPECT_EQ(progress.size(), kept + 1);  // job-wait never started
  EXPECT_EQ(progress.count("job-100"), 0u);
  EXPECT_EQ(progress.count("job-124"), 1u);
  // A state change replaces the job's series.
  all[kept + 5].state = "completed";
  all[kept + 5].finished = true;
  all[kept + 5].finished_unix_ms = 5000;
  m.set_job_states(all);
  states = series(kJobState);
  EXPECT_EQ(states["job-run"], "completed");
  EXPECT_EQ(states.size(), kept + 1);  // job-wait and the 20 newest finished (job-105 dropped)
  EXPECT_EQ(states.count("job-105"), 0u);
}

}  // namespace
}  // namespace relora::coordinator::testing
