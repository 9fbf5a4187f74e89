// The coordinator's gate: clients (JobService) and workers (WorkerService) each present their own
// bearer token, so a leaked client token cannot impersonate a worker and the reverse. Without
// tokens the gate is open and the server binds loopback only (server.cpp). The health service is
// never gated: Kubernetes probes carry no credentials.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

namespace relora::coordinator {

class Authenticator {
 public:
  enum class Role { kClient, kWorker };  // JobService callers, WorkerService callers

  Authenticator() = default;  // open: every call passes
  // Both tokens non-empty (main reads them with read_token_file).
  Authenticator(std::string client_token, std::string worker_token);

  bool enabled() const { return enabled_; }
  // OK, or UNAUTHENTICATED saying whether the token was missing or wrong (never echoing it).
  grpc::Status check(const grpc::ServerContextBase& context, Role role, const char* method) const;

 private:

  bool enabled_ = false;
  std::string client_token_;
  std::string worker_token_;
};

}  // namespace relora::coordinator
