// Small helpers shared by the services: finish a unary call with the status of a body that may
// throw, once the caller is authenticated. Library exceptions are caught once, here, at the RPC boundary (errors as values). Every
// unary call is counted and timed here (relora_coordinator_rpcs_total, _rpc_duration_seconds).
#pragma once

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <exception>

#include "coordinator/auth.h"
#include "coordinator/coordinator_metrics.h"

namespace relora::coordinator {

// The body runs only once the caller is authenticated for `role`.
template <typename Body>
grpc::ServerUnaryReactor* finish_unary(grpc::CallbackServerContext* ctx, CoordinatorMetrics& metrics,
                                       const Authenticator& auth, Authenticator::Role role, const char* method,
                                       Body&& body) {
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status gate = auth.check(*ctx, role, method);
  grpc::Status status = gate;
  try {
    if (gate.ok()) status = body();
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", method, e.what());
    status = grpc::Status(grpc::StatusCode::INTERNAL, std::string(method) + ": " + e.what());
  }
  metrics.unary_rpc_done(method, status.error_code(), seconds_since(start));
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

inline grpc::Status require_job_id(const std::string& job_id) {
  if (job_id.empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "job_id: required"};
  return grpc::Status::OK;
}

}  // namespace relora::coordinator
