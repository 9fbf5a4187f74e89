#include "worker/cluster/health_server.h"

#include <stdexcept>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

namespace relora::cluster {

HealthServer::HealthServer(const std::string& listen_address) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port_);
  // gRPC will not build a server without a service of its own to poll for: a catch-all callback
  // service answering UNIMPLEMENTED gives it one (the health service itself is built in).
  unimplemented_ = std::make_unique<grpc::CallbackGenericService>();
  builder.RegisterCallbackGenericService(unimplemented_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("cannot serve gRPC health checks on " + listen_address);
  server_->GetHealthCheckService()->SetServingStatus(true);
}

HealthServer::~HealthServer() {
  if (server_) server_->Shutdown();
}

}  // namespace relora::cluster
