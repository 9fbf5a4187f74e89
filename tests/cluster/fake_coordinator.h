// A small, real WorkerService on 127.0.0.1 for the worker's tests: it registers workers, keeps
// their Connect streams, and answers boundaries the way the coordinator does (plan_command once
// every rank of the job reached the boundary; Resume once every rank acknowledged; a repeated
// boundary or ack gets its answer again). It records every message it receives.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "relora/v1/service.grpc.pb.h"

namespace relora::cluster::testing {

class FakeCoordinator {
 public:
  // port 0: one the kernel picks.
  explicit FakeCoordinator(int port = 0, int64_t heartbeat_interval_ms = 200);
  ~FakeCoordinator();

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  void shutdown();

  // Sends an assignment to a connected worker and remembers the job's ranks.
  void assign(const std::string& worker_id, const relora::v1::Assignment& assignment);
  void cancel(const std::string& job_id);  // to every rank of the job
  // Answers every Heartbeat with `code` from now on (OK: accepts them again).
  void set_heartbeat_status(grpc::StatusCode code);

  using Log = std::vector<relora::v1::WorkerMessage>;
  // Waits until `pred` holds for the messages received so far (evaluated under the lock).
  bool wait_for(const std::function<bool(const Log&)>& pred, std::chrono::milliseconds timeout);
  bool wait_connected(const std::string& worker_id, std::chrono::milliseconds timeout);
  Log messages() const;
  std::vector<relora::v1::RegisterRequest> registrations() const;
  std::string first_worker_id(std::chrono::milliseconds timeout);  // waits for a hello

 private:
  class Service;
  friend class Service;
  struct Job {
    relora::v1::JobSpec spec;
    std::vector<std::string> workers;  // by rank
    std::map<int64_t, std::set<int>> boundaries, acks;  // by step: ranks that reported
  };
  using Stream = grpc::ServerReaderWriter<relora::v1::CoordinatorMessage, relora::v1::WorkerMessage>;
  void write_locked(const std::string& worker_id, const relora::v1::CoordinatorMessage& msg);
  void on_message_locked(const relora::v1::WorkerMessage& msg);

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  const int64_t heartbeat_interval_ms_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // State below is protected by mu_.
  Log log_;
  std::vector<relora::v1::RegisterRequest> registrations_;
  std::map<std::string, Stream*> streams_;  // connected workers
  std::map<std::string, Job> jobs_;
  int next_id_ = 1;
  grpc::StatusCode heartbeat_status_ = grpc::StatusCode::OK;
};

}  // namespace relora::cluster::testing
