// JobService (the client-facing API) on gRPC's callback API: unary calls validate their request,
// ask ClusterState, and finish on the default reactor; WatchJob is a ServerWriteReactor fed by
// ClusterState's coalesced updates.
//
// Threading contract: gRPC calls these from its own threads, concurrently. The service keeps no
// state of its own; ClusterState serializes. Nothing here blocks.
#pragma once

#include "coordinator/auth.h"
#include "coordinator/cluster_state.h"
#include "relora/v1/service.grpc.pb.h"

namespace relora::coordinator {

class JobServiceImpl final : public relora::v1::JobService::CallbackService {
 public:
  JobServiceImpl(ClusterState& cluster, CoordinatorMetrics& metrics, const Authenticator& auth)
      : cluster_(cluster), metrics_(metrics), auth_(auth) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx, const relora::v1::SubmitJobRequest* req,
                                      relora::v1::SubmitJobResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const relora::v1::GetJobRequest* req,
                                   relora::v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const relora::v1::ListJobsRequest* req,
                                     relora::v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const relora::v1::CancelJobRequest* req,
                                      relora::v1::Job* resp) override;
  grpc::ServerWriteReactor<relora::v1::JobUpdate>* WatchJob(grpc::CallbackServerContext* ctx,
                                                            const relora::v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* GetJobEvents(grpc::CallbackServerContext* ctx, const relora::v1::GetJobEventsRequest* req,
                                         relora::v1::GetJobEventsResponse* resp) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const relora::v1::ListWorkersRequest* req,
                                        relora::v1::ListWorkersResponse* resp) override;

 private:
  ClusterState& cluster_;
  CoordinatorMetrics& metrics_;
  const Authenticator& auth_;
};

}  // namespace relora::coordinator
