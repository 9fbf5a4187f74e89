// Small helpers shared by the services: finish a unary call with the status of a body that may
// throw. Library exceptions are caught once, here, at the RPC boundary (errors as values).
#pragma once

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <exception>

namespace relora::coordinator {

template <typename Body>
grpc::ServerUnaryReactor* finish_unary(grpc::CallbackServerContext* ctx, const char* method, Body&& body) {
  grpc::Status status;
  try {
    status = body();
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", method, e.what());
    status = grpc::Status(grpc::StatusCode::INTERNAL, std::string(method) + ": " + e.what());
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

inline grpc::Status require_job_id(const std::string& job_id) {
  if (job_id.empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "job_id: required"};
  return grpc::Status::OK;
}

}  // namespace relora::coordinator
