// The CLI's connection to the coordinator: one channel, a deadline on every unary call, and the
// mapping from gRPC status codes to the CLI's exit codes.
//
// Exit codes (shared by every subcommand):
//   0 ok; 1 the job or the operation failed; 2 usage or bad input (flags, job spec);
//   3 the coordinator could not be reached in time (UNAVAILABLE, DEADLINE_EXCEEDED).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/grpc_security.h"
#include "relora/v1/service.grpc.pb.h"

namespace relora::client {

using relora::ClientSecurity;

enum ExitCode : int { kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnreachable = 3 };

int exit_code_for(grpc::StatusCode code);

// "10s", "500ms", "2m", "1h", "1.5s" (a unit is required, as in the coordinator's flags).
// nullopt if malformed or not positive.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text);

// A failed RPC, with a one-line message a user can act on (see describe_status()).
class RpcError : public std::runtime_error {
 public:
  RpcError(grpc::StatusCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  grpc::StatusCode code() const { return code_; }
  int exit_code() const { return exit_code_for(code_); }

 private:
  grpc::StatusCode code_;
};

// The one-line message for a failed status. Unreachable-coordinator codes name the address
// tried; every other code passes the coordinator's own message through (it names the field or
// the job already).
std::string describe_status(const grpc::Status& status, const std::string& address,
                            std::chrono::milliseconds timeout);

// JobService calls with the CLI's deadline. Every method throws RpcError on a non-OK status.
class Rpc {
 public:
  // `security`: the bearer token and TLS settings (default: plaintext, no token). Throws
  // std::runtime_error naming a TLS file that cannot be read.
  Rpc(std::string address, std::chrono::milliseconds timeout, const ClientSecurity& security = {});

  const std::string& address() const { return address_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  relora::v1::Job submit(const std::string& spec_yaml, const std::string& source_name);
  relora::v1::Job get_job(const std::string& job_id);
  std::vector<relora::v1::Job> list_jobs();
  relora::v1::Job cancel(const std::string& job_id);
  std::vector<relora::v1::JobEvent> events(const std::string& job_id, int64_t after_seq = 0);
  std::vector<relora::v1::WorkerInfo> workers();

  // The job's update stream. No deadline: a job may run for days. `context` must outlive the
  // reader; cancel it (TryCancel) from another thread to stop waiting.
  std::unique_ptr<grpc::ClientReader<relora::v1::JobUpdate>> watch(grpc::ClientContext& context,
                                                                   const std::string& job_id,
                                                                   int64_t after_event_seq);

  // Throws RpcError for a non-OK status (the watch stream's Finish() status, for instance).
  void check(const grpc::Status& status) const;

 private:
  // The deadline and the bearer token of one unary call.
  void prepare(grpc::ClientContext& context) const;

  // Constant after construction.
  const std::string address_;
  const std::chrono::milliseconds timeout_;
  const std::string token_;  // never logged
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<relora::v1::JobService::Stub> stub_;
};

}  // namespace relora::client
