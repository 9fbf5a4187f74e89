// WorkerService (the worker-facing API) on gRPC's callback API: Register and Heartbeat are
// unary; Connect is one long-lived bidirectional stream per worker (a ServerBidiReactor):
// assignments, cycle commands, resumes and cancels go down, reports come up.
//
// Connect protocol: the first WorkerMessage must be a hello carrying the worker_id that
// Register returned (unknown id, or a worker marked lost: NOT_FOUND; register again). Later
// messages are handed to ClusterState in arrival order. A worker's second stream replaces its
// first (the old one ends with ABORTED). When the stream ends the worker is disconnected; it is
// lost unless it connects again within the heartbeat timeout.
//
// Threading contract: gRPC calls these from its own threads, concurrently; the service keeps no
// state of its own. Each stream's reactor reads one message at a time and serializes its writes
// through a StreamWriter. Nothing here blocks.
#pragma once

#include "coordinator/auth.h"
#include "coordinator/cluster_state.h"
#include "relora/v1/service.grpc.pb.h"

namespace relora::coordinator {

class WorkerServiceImpl final : public relora::v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(ClusterState& cluster, CoordinatorMetrics& metrics, const Authenticator& auth)
      : cluster_(cluster), metrics_(metrics), auth_(auth) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const relora::v1::RegisterRequest* req,
                                     relora::v1::RegisterResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const relora::v1::HeartbeatRequest* req,
                                      relora::v1::HeartbeatResponse* resp) override;
  grpc::ServerBidiReactor<relora::v1::WorkerMessage, relora::v1::CoordinatorMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;

 private:
  ClusterState& cluster_;
  CoordinatorMetrics& metrics_;
  const Authenticator& auth_;
};

}  // namespace relora::coordinator
