// The remote subcommands: each one is a call or two on the coordinator and a formatter
// (see commands.h). `local` lives in local.cpp.
#include "client/commands.h"

#include <filesystem>
#include <iostream>

#include "client/binaries.h"
#include "client/format.h"
#include "client/job_file.h"
#include "client/local_cluster.h"
#include "client/rpc.h"
#include "client/watch.h"

namespace relora::client {

int cmd_submit(const GlobalOptions& g, const std::string& job_file, bool watch, bool check_locally) {
  const JobFile file = read_job_file(job_file, check_locally);
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto job = rpc.submit(file.text, std::filesystem::path(job_file).filename().string());
  if (g.json) {
    auto j = job_json(job);
    if (!watch) std::cout << j.dump(2) << std::endl;
    else std::cout << nlohmann::json{{"job_id", job.id()}, {"name", job.name()}}.dump() << std::endl;
  } else {
    std::cout << job.id() << std::endl;
  }
  if (!watch) return kExitOk;
  return watch_and_report(rpc, job.id(), g.json);
}

int cmd_list(const GlobalOptions& g) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto jobs = rpc.list_jobs();
  if (g.json) {
    auto arr = nlohmann::json::array();
    for (const auto& j : jobs) arr.push_back(job_json(j));
    std::cout << arr.dump(2) << std::endl;
  } else {
    std::cout << jobs_table(jobs, now_unix_ms());
  }
  return kExitOk;
}

int cmd_status(const GlobalOptions& g, const std::string& job_id) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto job = rpc.get_job(job_id);
  if (g.json) {
    std::cout << job_json(job).dump(2) << std::endl;
  } else {
    std::cout << job_summary(job, now_unix_ms());
  }
  return kExitOk;
}

int cmd_watch(const GlobalOptions& g, const std::string& job_id) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  return watch_and_report(rpc, job_id, g.json);
}

int cmd_events(const GlobalOptions& g, const std::string& job_id) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto events = rpc.events(job_id);
  if (g.json) {
    auto arr = nlohmann::json::array();
    for (const auto& e : events) arr.push_back(proto_json(e));
    std::cout << arr.dump(2) << std::endl;
  } else {
    std::cout << events_table(events);
  }
  return kExitOk;
}

int cmd_cancel(const GlobalOptions& g, const std::string& job_id) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto job = rpc.cancel(job_id);
  if (g.json) {
    std::cout << job_json(job).dump(2) << std::endl;
  } else {
    std::cout << "job " << job.id() << ": " << state_name(job.state()) << std::endl;
  }
  return kExitOk;
}

int cmd_workers(const GlobalOptions& g) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto workers = rpc.workers();
  if (g.json) {
    auto arr = nlohmann::json::array();
    for (const auto& w : workers) arr.push_back(proto_json(w));
    std::cout << arr.dump(2) << std::endl;
  } else {
    std::cout << workers_table(workers, now_unix_ms());
  }
  return kExitOk;
}

int cmd_export(const GlobalOptions& g, const std::string& job_id, const std::string& out_dir) {
  Rpc rpc(g.coordinator, g.timeout, g.security);
  const auto job = rpc.get_job(job_id);
  if (job.checkpoint().empty()) {
    std::cerr << "error: job '" << job_id << "' has no checkpoint yet (" << state_name(job.state()) << ", step "
              << job.progress().step() << ")" << std::endl;
    return kExitFailed;
  }
  // The path is the one rank 0 reported: this only works where that directory is visible
  // (the same machine, or a shared file system), and a relative path is relative to the
  // worker's working directory.
  if (!std::filesystem::exists(job.checkpoint())) {
    std::cerr << "error: job '" << job_id << "' checkpoint " << job.checkpoint()
              << " is not visible from here (export runs on this machine)" << std::endl;
    return kExitFailed;
  }
  const std::string worker = require_binary(worker_binary());
  if (!g.json) std::cerr << "exporting " << job.checkpoint() << " with " << worker << std::endl;
  const int rc = run_and_wait(worker, {"--export", job.checkpoint(), "--out", out_dir});
  if (rc != 0) {
    std::cerr << "error: " << worker << " --export failed (exit status " << rc << ")" << std::endl;
    return rc == kExitUsage ? kExitUsage : kExitFailed;
  }
  if (g.json) {
    std::cout << nlohmann::json{{"job_id", job_id}, {"checkpoint", job.checkpoint()}, {"out", out_dir}}.dump()
              << std::endl;
  } else {
    std::cout << "exported " << job.checkpoint() << " to " << out_dir << std::endl;
  }
  return kExitOk;
}

}  // namespace relora::client
