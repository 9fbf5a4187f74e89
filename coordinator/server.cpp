#include "coordinator/server.h"

#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <stdexcept>

namespace relora::coordinator {

CoordinatorServer::CoordinatorServer(ServerOptions options) : options_(std::move(options)) {
  if (options_.metrics_port >= 0) {
    metrics_server_ = std::make_unique<MetricsServer>(metrics_bind_address(options_.metrics_port));
    metrics_ = std::make_unique<CoordinatorMetrics>(metrics_server_->registry());
  } else {
    metrics_ = std::make_unique<CoordinatorMetrics>();  // counted, never exposed
  }
  std::error_code ec;
  std::filesystem::create_directories(options_.state_dir, ec);
  if (ec) throw std::runtime_error("cannot create state directory " + options_.state_dir + ": " + ec.message());
  db_path_ = (std::filesystem::path(options_.state_dir) / "relora.db").string();
  store_ = std::make_unique<JobStore>(db_path_);
  cluster_ = std::make_unique<ClusterState>(
      *store_, ClusterOptions{options_.heartbeat_timeout, options_.watch_interval}, *metrics_);
  job_service_ = std::make_unique<JobServiceImpl>(*cluster_, *metrics_);
  worker_service_ = std::make_unique<WorkerServiceImpl>(*cluster_, *metrics_);

  // grpc.health.v1.Health (Check and Watch) on the same port, for Kubernetes gRPC probes and
  // grpc_health_probe. The flag is process-wide and read by ServerBuilder; gRPC's own service
  // answers without touching ClusterState, so it stays responsive under load. It must stay
  // reachable without credentials: probes carry none.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // No TLS yet: the control plane is meant for a private network (see the README).
  builder.AddListeningPort(options_.listen, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(job_service_.get());
  builder.RegisterService(worker_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    throw std::runtime_error("cannot listen on " + options_.listen + " (address in use or invalid?)");
  }
  const auto colon = options_.listen.rfind(':');
  address_ =
      (colon == std::string::npos ? options_.listen : options_.listen.substr(0, colon)) + ":" + std::to_string(port_);
  if (auto* health = server_->GetHealthCheckService()) {
    // "" (the whole server) is SERVING by default; name the two services too.
    health->SetServingStatus(relora::v1::JobService::service_full_name(), true);
    health->SetServingStatus(relora::v1::WorkerService::service_full_name(), true);
  }
  background_ = std::thread([this] { cluster_->run_background(); });
  spdlog::info("coordinator listening on {} (state {}, heartbeat timeout {} ms)", address_, db_path_,
               options_.heartbeat_timeout.count());
  if (metrics_server_) spdlog::info("metrics on http://0.0.0.0:{}/metrics", metrics_server_->port());
}

CoordinatorServer::~CoordinatorServer() { shutdown(); }

void CoordinatorServer::shutdown() {
  if (stopped_) return;
  stopped_ = true;
  // NOT_SERVING for every service first, so that probes and load balancers stop routing here
  // while the streams drain.
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  // Streams first, so that workers and watchers get a clear status instead of a reset.
  cluster_->close_all_streams({grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"});
  // Calls still open after the grace period are cancelled; the reactors finish on OnCancel.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  cluster_->stop_background();
  if (background_.joinable()) background_.join();
  spdlog::info("coordinator stopped");
}

}  // namespace relora::coordinator
