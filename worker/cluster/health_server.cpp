#include "worker/cluster/health_server.h"

#include <stdexcept>

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

namespace relora::cluster {

HealthServer::HealthServer(const std::string& listen_address) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port_);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("cannot serve gRPC health checks on " + listen_address);
  server_->GetHealthCheckService()->SetServingStatus(true);
}

HealthServer::~HealthServer() {
  if (server_) server_->Shutdown();
}

}  // namespace relora::cluster
