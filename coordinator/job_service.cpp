#include "coordinator/job_service.h"

#include <memory>

#include "coordinator/rpc_util.h"
#include "coordinator/stream_writer.h"

namespace relora::coordinator {

using namespace relora::v1;

namespace {

// One WatchJob stream.
//
// Ownership: the reactor owns itself through self_ (shared_ptr) from creation until OnDone;
// ClusterState and PumpLists hold further shared_ptrs, so a pump() running on another thread
// never sees it deleted. gRPC is done with it after OnDone, so outliving OnDone is fine.
class WatchReactor final : public grpc::ServerWriteReactor<JobUpdate>, public WatchSink {
 public:
  static WatchReactor* start(ClusterState& cluster, CoordinatorMetrics& metrics, const WatchJobRequest& req,
                             grpc::Status gate) {
    auto self = std::shared_ptr<WatchReactor>(new WatchReactor(cluster, metrics));
    self->self_ = self;
    grpc::Status status = gate.ok() ? require_job_id(req.job_id()) : gate;
    if (status.ok() && req.after_event_seq() < 0)
      status = {grpc::StatusCode::INVALID_ARGUMENT, "after_event_seq: must be >= 0"};
    if (status.ok()) status = cluster.add_watch(req.job_id(), req.after_event_seq(), self);
    if (!status.ok()) {
      self->close(status);
      self->pump();
    }
    return self.get();
  }

  void enqueue(JobUpdate update) override { writer_.enqueue(std::move(update)); }
  void close(grpc::Status status) override { writer_.close(std::move(status)); }
  void pump() override { writer_.pump(); }
  size_t pending() const override { return writer_.pending(); }

  void OnWriteDone(bool ok) override {
    if (!ok) {  // the client is gone: stop watching and finish
      cluster_.remove_watch(this);
      writer_.close(grpc::Status::CANCELLED);
    }
    writer_.on_write_done(ok);
  }
  void OnCancel() override {
    cluster_.remove_watch(this);
    writer_.close(grpc::Status::CANCELLED);  // gRPC still requires a Finish after a cancel
    writer_.pump();
  }
  void OnDone() override {
    cluster_.remove_watch(this);
    metrics_.count_rpc("WatchJob", writer_.final_status().error_code());  // no duration: a stream
    self_.reset();  // may delete this: nothing after it
  }

 private:
  WatchReactor(ClusterState& cluster, CoordinatorMetrics& metrics) : cluster_(cluster), metrics_(metrics) {}

  ClusterState& cluster_;
  CoordinatorMetrics& metrics_;
  StreamWriter<WatchReactor, JobUpdate> writer_{this};
  std::shared_ptr<WatchReactor> self_;  // released in OnDone
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* ctx, const SubmitJobRequest* req,
                                                    SubmitJobResponse* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "SubmitJob",
                      [&] { return cluster_.submit_job(*req, resp->mutable_job()); });
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx, const GetJobRequest* req,
                                                 Job* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "GetJob", [&] {
    grpc::Status st = require_job_id(req->job_id());
    return st.ok() ? cluster_.get_job(req->job_id(), resp) : st;
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx, const ListJobsRequest*,
                                                   ListJobsResponse* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "ListJobs", [&] {
    for (auto& job : cluster_.list_jobs()) *resp->add_jobs() = std::move(job);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx, const CancelJobRequest* req,
                                                    Job* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "CancelJob", [&] {
    grpc::Status st = require_job_id(req->job_id());
    return st.ok() ? cluster_.cancel_job(req->job_id(), resp) : st;
  });
}

grpc::ServerWriteReactor<JobUpdate>* JobServiceImpl::WatchJob(grpc::CallbackServerContext* ctx,
                                                              const WatchJobRequest* req) {
  return WatchReactor::start(cluster_, metrics_, *req,
                             auth_.check(*ctx, Authenticator::Role::kClient, "WatchJob"));
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJobEvents(grpc::CallbackServerContext* ctx, const GetJobEventsRequest* req,
                                                       GetJobEventsResponse* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "GetJobEvents", [&] {
    grpc::Status st = require_job_id(req->job_id());
    if (!st.ok()) return st;
    if (req->after_seq() < 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "after_seq: must be >= 0");
    if (req->limit() < 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "limit: must be >= 0 (0: all)");
    std::vector<JobEvent> events;
    st = cluster_.job_events(req->job_id(), req->after_seq(), req->limit(), &events);
    for (auto& e : events) *resp->add_events() = std::move(e);
    return st;
  });
}

grpc::ServerUnaryReactor* JobServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx, const ListWorkersRequest*,
                                                      ListWorkersResponse* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kClient, "ListWorkers", [&] {
    for (auto& w : cluster_.list_workers()) *resp->add_workers() = std::move(w);
    return grpc::Status::OK;
  });
}

}  // namespace relora::coordinator
