// A stand-in JobService for testing the CLI without the real coordinator (and without
// workers): a real gRPC server on loopback whose jobs advance with wall time.
//
// A job runs as soon as it is submitted and advances one step every `step_ms`. Its name picks
// the script: "fail-*" fails half-way, "hang-*" stays at step 1 forever, anything else
// completes with a summary_json. Events: submitted, started, a checkpoint and an ack with a
// checksum half-way, then completed / failed / cancelled. Specs are checked with the same
// common/job_spec code the coordinator uses, so bad specs give INVALID_ARGUMENT naming the field.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "relora/v1/service.grpc.pb.h"

namespace relora::testing {

// The jobs; shared by the servers of one test so that a "restarted" coordinator keeps them.
class FakeJobs {
 public:
  explicit FakeJobs(int step_ms = 5) : step_ms_(step_ms) {}
  grpc::Status submit(const relora::v1::SubmitJobRequest& req, relora::v1::Job* out);
  grpc::Status get(const std::string& id, relora::v1::Job* out, std::vector<relora::v1::JobEvent>* events);
  grpc::Status cancel(const std::string& id, relora::v1::Job* out);
  std::vector<relora::v1::Job> list();

 private:
  struct Record {
    relora::v1::Job job;
    std::vector<relora::v1::JobEvent> events;
    std::chrono::steady_clock::time_point start;
  };
  void advance(Record& r);  // requires mu_
  void add_event(Record& r, int64_t step, int rank, const std::string& kind, const std::string& message,
                 const std::string& checksum = "");

  const int step_ms_;
  std::mutex mu_;
  // State below is protected by mu_.
  std::map<std::string, Record> jobs_;
  int next_id_ = 1;
};

class FakeJobService final : public relora::v1::JobService::Service {
 public:
  explicit FakeJobService(std::shared_ptr<FakeJobs> jobs) : jobs_(std::move(jobs)) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const relora::v1::SubmitJobRequest* req,
                         relora::v1::SubmitJobResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext*, const relora::v1::GetJobRequest* req, relora::v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext*, const relora::v1::ListJobsRequest*,
                        relora::v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext*, const relora::v1::CancelJobRequest* req,
                         relora::v1::Job* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const relora::v1::WatchJobRequest* req,
                        grpc::ServerWriter<relora::v1::JobUpdate>* writer) override;
  grpc::Status GetJobEvents(grpc::ServerContext*, const relora::v1::GetJobEventsRequest* req,
                            relora::v1::GetJobEventsResponse* resp) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const relora::v1::ListWorkersRequest*,
                           relora::v1::ListWorkersResponse* resp) override;

 private:
  std::shared_ptr<FakeJobs> jobs_;
};

// A FakeJobService listening on `address` ("127.0.0.1:0": a free port).
class FakeCoordinator {
 public:
  explicit FakeCoordinator(std::shared_ptr<FakeJobs> jobs, const std::string& address = "127.0.0.1:0");
  ~FakeCoordinator() { shutdown(); }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void shutdown();

 private:
  FakeJobService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace relora::testing
