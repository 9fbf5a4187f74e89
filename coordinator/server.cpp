#include "coordinator/server.h"

#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <stdexcept>

namespace relora::coordinator {

namespace {

Authenticator make_authenticator(const ServerOptions& options) {
  if (options.client_token_file.empty() != options.worker_token_file.empty())
    throw std::runtime_error("--client-token-file and --worker-token-file go together (one token for clients, one for workers)");
  if (options.client_token_file.empty()) return Authenticator();
  return Authenticator(read_token_file(options.client_token_file), read_token_file(options.worker_token_file));
}

}  // namespace

CoordinatorServer::CoordinatorServer(ServerOptions options)
    : options_(std::move(options)), auth_(make_authenticator(options_)), listen_(options_.listen) {
  if (!auth_.enabled() && !is_loopback_listen_address(listen_)) {
    listen_ = loopback_listen_address(listen_);
    spdlog::warn("no --client-token-file/--worker-token-file: serving on loopback only ({} instead of {}); "
                 "give both token files to accept other hosts", listen_, options_.listen);
  }
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
      *store_, ClusterOptions{options_.heartbeat_timeout, options_.watch_interval, options_.reattach_timeout}, *metrics_);
  job_service_ = std::make_unique<JobServiceImpl>(*cluster_, *metrics_, auth_);
  worker_service_ = std::make_unique<WorkerServiceImpl>(*cluster_, *metrics_, auth_);

  // grpc.health.v1.Health (Check and Watch) on the same port, for Kubernetes gRPC probes and
  // grpc_health_probe. The flag is process-wide and read by ServerBuilder; gRPC's own service
  // answers without touching ClusterState, so it stays responsive under load. It must stay
  // reachable without credentials: probes carry none.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen_, server_credentials(options_.tls), &port_);
  // Bounds what one message may make the server allocate; job specs and reports are far smaller.
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(job_service_.get());
  builder.RegisterService(worker_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    server_.reset();
    throw std::runtime_error("cannot listen on " + listen_ + " (address in use or invalid?)");
  }
  const auto colon = listen_.rfind(':');
  address_ = (colon == std::string::npos ? listen_ : listen_.substr(0, colon)) + ":" + std::to_string(port_);
  if (auto* health = server_->GetHealthCheckService()) {
    // "" (the whole server) is SERVING by default; name the two services too.
    health->SetServingStatus(relora::v1::JobService::service_full_name(), true);
    health->SetServingStatus(relora::v1::WorkerService::service_full_name(), true);
  }
  background_ = std::thread([this] { cluster_->run_background(); });
  spdlog::info("coordinator listening on {} (state {}, heartbeat timeout {} ms, {}, {})", address_, db_path_,
               options_.heartbeat_timeout.count(), auth_.enabled() ? "bearer tokens" : "no tokens",
               !options_.tls.enabled()                ? "plaintext"
               : options_.tls.client_ca_file.empty() ? "TLS"
                                                      : "mutual TLS");
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
