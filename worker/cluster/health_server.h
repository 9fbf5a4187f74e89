// The standard gRPC health service (grpc.health.v1.Health) on its own port, for the worker's
// Kubernetes readiness and liveness probes. The worker is a gRPC client otherwise; this is the
// only server it runs. Answers SERVING while the process is up; no authentication (kubelet's
// probes carry none) and plaintext (they cannot do TLS).
#pragma once

#include <memory>
#include <string>

namespace grpc {
class CallbackGenericService;
class Server;
}

namespace relora::cluster {

class HealthServer {
 public:
  // Throws std::runtime_error naming `listen_address` if it cannot bind.
  explicit HealthServer(const std::string& listen_address);
  ~HealthServer();
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;
  int port() const { return port_; }

 private:
  std::unique_ptr<grpc::CallbackGenericService> unimplemented_;  // outlives server_
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace relora::cluster
