// The coordinator process in one object: job store, cluster state, both gRPC services, the
// standard health service (grpc.health.v1.Health), the gRPC server, the background thread and,
// when enabled, the Prometheus endpoint. main() and the tests use it the same way:
//
//   CoordinatorServer server({.listen = "127.0.0.1:0", .state_dir = dir});
//   connect to server.address(); ...; server.shutdown();
//
// Threading contract: construct, query and shut down from one thread. shutdown() is idempotent
// and also run by the destructor.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "common/grpc_security.h"
#include "common/metrics_server.h"
#include "coordinator/auth.h"
#include "coordinator/cluster_state.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/job_service.h"
#include "coordinator/job_store.h"
#include "coordinator/worker_service.h"

namespace relora::coordinator {

// The largest request the server accepts (gRPC's default, stated): job specs, reports and
// heartbeats are kilobytes; anything near this is a mistake or an attack.
constexpr int kMaxMessageBytes = 4 * 1024 * 1024;

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";    // host:port; port 0 picks a free port
  std::string state_dir = "./relora-state";  // holds relora.db
  std::chrono::milliseconds heartbeat_timeout{5000};
  std::chrono::milliseconds watch_interval{200};
  // After a restart: how long a run that was RUNNING waits for its ranks to report back before
  // the job is requeued (ClusterOptions::reattach_timeout). 0: requeue at once.
  std::chrono::milliseconds reattach_timeout{std::chrono::seconds(60)};
  // Prometheus /metrics on 0.0.0.0:<port>: -1 off, 0 a free port (see metrics_port()).
  int metrics_port = -1;
  // Bearer tokens (files holding one token each; both or neither). Without them the gate is open,
  // so the server binds loopback only, whatever `listen` says, and logs that it did.
  std::string client_token_file;
  std::string worker_token_file;
  ServerTls tls;  // TLS, and mutual TLS with a client CA; off when empty
};

class CoordinatorServer {
 public:
  // Creates the state directory, opens <state_dir>/relora.db, starts serving. Throws
  // std::runtime_error (StoreError included) with a message naming what failed.
  explicit CoordinatorServer(ServerOptions options);
  ~CoordinatorServer();
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  int port() const { return port_; }
  // The listen host with the bound port ("127.0.0.1:41234"), ready for grpc::CreateChannel.
  const std::string& address() const { return address_; }
  const std::string& db_path() const { return db_path_; }
  // The bound metrics port, or -1 when metrics are off.
  int metrics_port() const { return metrics_server_ ? metrics_server_->port() : -1; }

  // Ends every stream (UNAVAILABLE: the coordinator is shutting down), stops the gRPC server and
  // the background thread. Jobs stay in the store as they are; RUNNING ones resume on restart.
  void shutdown();

 private:
  const ServerOptions options_;
  // Declared first: the cluster and services refer to metrics_, and the exposer scrapes them.
  std::unique_ptr<MetricsServer> metrics_server_;  // null when metrics are off
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::string db_path_;
  Authenticator auth_;
  std::string listen_;  // options_.listen, or its loopback form when there are no tokens
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<ClusterState> cluster_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::thread background_;
  int port_ = 0;
  std::string address_;
  bool stopped_ = false;
};

}  // namespace relora::coordinator
