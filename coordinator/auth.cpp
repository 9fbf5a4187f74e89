#include "coordinator/auth.h"

#include <spdlog/spdlog.h>

#include "common/grpc_security.h"

namespace relora::coordinator {

Authenticator::Authenticator(std::string client_token, std::string worker_token)
    : enabled_(true), client_token_(std::move(client_token)), worker_token_(std::move(worker_token)) {}

grpc::Status Authenticator::check(const grpc::ServerContextBase& context, Role role, const char* method) const {
  if (!enabled_) return grpc::Status::OK;
  const bool client = role == Role::kClient;
  const std::string& expected = client ? client_token_ : worker_token_;
  const char* who = client ? "client" : "worker";
  const std::string presented = bearer_token(context);
  if (!presented.empty() && constant_time_equals(presented, expected)) return grpc::Status::OK;
  const std::string problem = presented.empty() ? "no bearer token" : "a wrong token";
  // The peer's address helps find a misconfigured caller; the token itself is never logged.
  spdlog::warn("{}: rejected a call from {} with {}", method, context.peer(), problem);
  const std::string hint = client ? "relora --token-file or RELORA_TOKEN" : "relora-worker --token-file";
  return {grpc::StatusCode::UNAUTHENTICATED,
          std::string(method) + ": " + problem + "; this service needs the " + who + " token (" + hint + ")"};
}

}  // namespace relora::coordinator
