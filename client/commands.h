// One function per `relora` subcommand. Each returns the process exit code (see rpc.h) and may
// throw RpcError, JobSpecError or std::runtime_error, which main() turns into one
// "error: ..." line and the matching exit code.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/grpc_security.h"

namespace relora::client {

using relora::ClientSecurity;

struct GlobalOptions {
  std::string coordinator = "127.0.0.1:50051";
  std::chrono::milliseconds timeout{10000};  // deadline of every unary RPC
  bool json = false;                         // -o json
  ClientSecurity security;                   // --token-file / RELORA_TOKEN, --tls-*
};

int cmd_submit(const GlobalOptions& g, const std::string& job_file, bool watch, bool check_locally);
int cmd_list(const GlobalOptions& g);
int cmd_status(const GlobalOptions& g, const std::string& job_id);
int cmd_watch(const GlobalOptions& g, const std::string& job_id);
int cmd_events(const GlobalOptions& g, const std::string& job_id);
int cmd_cancel(const GlobalOptions& g, const std::string& job_id);
int cmd_workers(const GlobalOptions& g);
int cmd_export(const GlobalOptions& g, const std::string& job_id, const std::string& out_dir);

struct TokenizeCommandOptions {
  std::vector<std::string> inputs;  // corpus files and directories
  std::string out_dir;              // --out
  std::string tokenizer_model;      // --tokenizer
  int threads = 0;                  // --threads; 0: all cores
  uint64_t shard_tokens = uint64_t{32} << 20;  // --shard-tokens
};
// Implemented in tokenize.cpp.
int cmd_tokenize(const GlobalOptions& g, const TokenizeCommandOptions& opts);

struct LocalOptions {
  std::string job_file;
  std::optional<int> workers;    // --workers: overrides cluster.workers
  std::string summary_json;      // --summary-json PATH
  std::string state_dir;         // --state-dir (default: a fresh temporary directory)
  bool keep_state = false;       // keep the temporary state directory after success
  std::chrono::milliseconds startup_timeout{30000};  // waiting for the coordinator's port file
  // --metrics-port-base: Prometheus on the coordinator (base) and worker i (base + 1 + i);
  // 0: ports picked by each process; -1: no metrics (see local_metrics.h).
  int metrics_port_base = 9400;
  // --linger: how long the coordinator and workers stay up after the job ended, so that
  // Prometheus scrapes the finished job's final values (they are kept only while the processes
  // live). 0: stop at once.
  std::chrono::milliseconds linger{0};
};
// Implemented in local.cpp.
int cmd_local(const GlobalOptions& g, const LocalOptions& opts);

}  // namespace relora::client
