#include "coordinator/worker_service.h"

#include <chrono>
#include <memory>
#include <mutex>

#include "coordinator/rpc_util.h"
#include "coordinator/stream_writer.h"

namespace relora::coordinator {

using namespace relora::v1;

namespace {

// One worker's Connect stream.
//
// Ownership: the reactor owns itself through self_ from creation until OnDone; ClusterState
// holds a shared_ptr (as the worker's WorkerLink) until the stream is detached, and PumpLists
// hold one while pumping, so a write started from another thread never races with deletion.
class WorkerStream final : public grpc::ServerBidiReactor<WorkerMessage, CoordinatorMessage>,
                           public WorkerLink,
                           public std::enable_shared_from_this<WorkerStream> {
 public:
  static WorkerStream* start(ClusterState& cluster, CoordinatorMetrics& metrics, const grpc::Status& gate) {
    auto self = std::shared_ptr<WorkerStream>(new WorkerStream(cluster, metrics));
    self->self_ = self;
    if (gate.ok())
      self->StartRead(&self->in_);
    else
      self->end(gate);  // unauthenticated: finish before reading anything
    return self.get();
  }

  void enqueue(CoordinatorMessage msg) override { writer_.enqueue(std::move(msg)); }
  void close(grpc::Status status) override { writer_.close(std::move(status)); }
  void pump() override { writer_.pump(); }

  // Reads are sequential (the next StartRead is issued here), so in_ needs no lock.
  void OnReadDone(bool ok) override {
    if (!ok) {  // the worker closed its side or the connection broke
      end(grpc::Status::OK);
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    grpc::Status status;
    const std::string bound = worker_id();
    if (bound.empty()) {
      if (in_.body_case() != WorkerMessage::kHello) {
        status = {grpc::StatusCode::INVALID_ARGUMENT, "the first message on Connect must be a hello"};
      } else if (in_.worker_id().empty()) {
        status = {grpc::StatusCode::INVALID_ARGUMENT, "worker_id: required in the hello (from Register)"};
      } else {
        set_worker_id(in_.worker_id());
        status = cluster_.attach_stream(in_.worker_id(), shared_from_this());
      }
    } else {
      status = cluster_.on_worker_message(bound, in_);
    }
    // Per message: the stream's own lifetime says nothing about the coordinator's latency.
    metrics_.observe_rpc_duration("Connect", seconds_since(start));
    if (!status.ok()) {
      end(status);
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override { writer_.on_write_done(ok); }

  void OnCancel() override { end(grpc::Status::CANCELLED); }

  void OnDone() override {
    detach();
    metrics_.count_rpc("Connect", writer_.final_status().error_code());
    self_.reset();  // may delete this: nothing after it
  }

 private:
  WorkerStream(ClusterState& cluster, CoordinatorMetrics& metrics) : cluster_(cluster), metrics_(metrics) {}

  std::string worker_id() const {
    std::lock_guard<std::mutex> lk(mu_);
    return worker_id_;
  }
  void set_worker_id(const std::string& id) {
    std::lock_guard<std::mutex> lk(mu_);
    worker_id_ = id;
  }
  void detach() {
    const std::string id = worker_id();
    if (!id.empty()) cluster_.detach_stream(id, this);
  }
  // Stop serving this stream: the worker becomes disconnected, queued messages drain, Finish.
  void end(grpc::Status status) {
    detach();
    writer_.close(std::move(status));
    writer_.pump();
  }

  ClusterState& cluster_;
  CoordinatorMetrics& metrics_;
  WorkerMessage in_;  // the message being read
  StreamWriter<WorkerStream, CoordinatorMessage> writer_{this};
  std::shared_ptr<WorkerStream> self_;  // released in OnDone
  // OnCancel and OnDone may run on other threads than OnReadDone, which binds the id.
  mutable std::mutex mu_;
  std::string worker_id_;  // GUARDED_BY(mu_); empty until the hello
};

}  // namespace

grpc::ServerUnaryReactor* WorkerServiceImpl::Register(grpc::CallbackServerContext* ctx, const RegisterRequest* req,
                                                      RegisterResponse* resp) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kWorker, "Register",
                      [&] { return cluster_.register_worker(*req, resp); });
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx, const HeartbeatRequest* req,
                                                       HeartbeatResponse*) {
  return finish_unary(ctx, metrics_, auth_, Authenticator::Role::kWorker, "Heartbeat",
                      [&] { return cluster_.heartbeat(req->worker_id()); });
}

grpc::ServerBidiReactor<WorkerMessage, CoordinatorMessage>* WorkerServiceImpl::Connect(grpc::CallbackServerContext* ctx) {
  return WorkerStream::start(cluster_, metrics_, auth_.check(*ctx, Authenticator::Role::kWorker, "Connect"));
}

}  // namespace relora::coordinator
