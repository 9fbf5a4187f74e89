#include "coordinator/auth.h"

#include <spdlog/spdlog.h>

#include "common/grpc_security.h"

namespace relora::coordinator {

Authenticator::Authenticator(std::string client_token, std::string worker_token)
    : enabled_(true), client_token_(std::move(client_token)), worker_token_(std::move(worker_token)) {}

grpc::Status Authenticator::check_client(const grpc::ServerContextBase& context, const char* method) const {
  return check(context, client_token_, "client", method);
}

grpc::Status Authenticator::check_worker(const grpc::ServerContextBase& context, const char* method) const {
  return check(context, worker_token_, "worker", method);
}

grpc::Status Authenticator::check(const grpc::ServerContextBase& context, const std::string& expected, const char* who,
                                  const char* method) const {
  if (!enabled_) return grpc::Status::OK;
  const std::string presented = bearer_token(context);
  if (!presented.empty() && constant_time_equals(presented, expected)) return grpc::Status::OK;
  const std::string problem = presented.empty() ? "no bearer token" : "a wrong token";
  // The peer's address helps find a misconfigured caller; the token itself is never logged.
  spdlog::warn("{}: rejected a call from {} with {}", method, context.peer(), problem);
  const std::string hint = std::string(who) == "client" ? "relora --token-file or RELORA_TOKEN"
                                                          : "relora-worker --token-file";
  return {grpc::StatusCode::UNAUTHENTICATED,
          std::string(method) + ": " + problem + "; this service needs the " + who + " token (" + hint + ")"};
}

}  // namespace relora::coordinator
