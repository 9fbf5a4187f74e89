#include "tests/cluster/fake_coordinator.h"

#include <stdexcept>

#include "common/cycle_plan.h"

namespace relora::cluster::testing {

using relora::v1::CoordinatorMessage;
using relora::v1::WorkerMessage;

class FakeCoordinator::Service final : public relora::v1::WorkerService::Service {
 public:
  explicit Service(FakeCoordinator& owner) : owner_(owner) {}

  grpc::Status Register(grpc::ServerContext*, const relora::v1::RegisterRequest* req,
                        relora::v1::RegisterResponse* resp) override {
    std::lock_guard<std::mutex> lock(owner_.mu_);
    owner_.registrations_.push_back(*req);
    resp->set_worker_id(req->worker_id().empty() ? "worker-" + std::to_string(owner_.next_id_++) : req->worker_id());
    resp->set_heartbeat_interval_ms(owner_.heartbeat_interval_ms_);
    owner_.cv_.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const relora::v1::HeartbeatRequest* req,
                         relora::v1::HeartbeatResponse*) override {
    std::lock_guard<std::mutex> lock(owner_.mu_);
    if (owner_.heartbeat_status_ == grpc::StatusCode::OK) return grpc::Status::OK;
    return grpc::Status(owner_.heartbeat_status_, "unknown worker " + req->worker_id());
  }

  grpc::Status Connect(grpc::ServerContext*, Stream* stream) override {
    WorkerMessage msg;
    std::string worker;
    while (stream->Read(&msg)) {
      std::lock_guard<std::mutex> lock(owner_.mu_);
      if (msg.has_hello()) {
        worker = msg.worker_id();
        owner_.streams_[worker] = stream;
      }
      owner_.log_.push_back(msg);
      owner_.on_message_locked(msg);
      owner_.cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(owner_.mu_);
    auto it = owner_.streams_.find(worker);
    if (it != owner_.streams_.end() && it->second == stream) owner_.streams_.erase(it);
    return grpc::Status::OK;
  }

 private:
  FakeCoordinator& owner_;
};

FakeCoordinator::FakeCoordinator(int port, int64_t heartbeat_interval_ms)
    : service_(std::make_unique<Service>(*this)), heartbeat_interval_ms_(heartbeat_interval_ms) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) throw std::runtime_error("fake coordinator: cannot listen on port " + std::to_string(port));
}

FakeCoordinator::~FakeCoordinator() { shutdown(); }

void FakeCoordinator::shutdown() {
  if (!server_) return;
  // Open Connect streams are cancelled at the deadline, so their handlers return.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  server_->Wait();
  server_.reset();
}

void FakeCoordinator::write_locked(const std::string& worker_id, const CoordinatorMessage& msg) {
  auto it = streams_.find(worker_id);
  if (it != streams_.end()) it->second->Write(msg);
}

void FakeCoordinator::assign(const std::string& worker_id, const relora::v1::Assignment& assignment) {
  std::lock_guard<std::mutex> lock(mu_);
  Job& job = jobs_[assignment.job_id()];
  job.spec = assignment.spec();
  if (static_cast<int>(job.workers.size()) < assignment.world_size()) job.workers.resize(assignment.world_size());
  job.workers.at(assignment.rank()) = worker_id;
  CoordinatorMessage msg;
  *msg.mutable_assignment() = assignment;
  write_locked(worker_id, msg);
}

void FakeCoordinator::cancel(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  CoordinatorMessage msg;
  msg.mutable_cancel()->set_job_id(job_id);
  for (const auto& w : jobs_.at(job_id).workers) write_locked(w, msg);
}

void FakeCoordinator::set_heartbeat_status(grpc::StatusCode code) {
  std::lock_guard<std::mutex> lock(mu_);
  heartbeat_status_ = code;
}

void FakeCoordinator::on_message_locked(const WorkerMessage& msg) {
  if (msg.has_boundary()) {
    const auto& b = msg.boundary();
    auto it = jobs_.find(b.job_id());
    if (it == jobs_.end()) return;
    Job& job = it->second;
    auto& ranks = job.boundaries[b.step()];
    const bool answered = ranks.size() == job.workers.size();
    ranks.insert(b.rank());
    if (ranks.size() < job.workers.size()) return;
    CoordinatorMessage cmd;
    *cmd.mutable_command() = relora::plan_command(job.spec, *relora::parse_boundary_kind(b.boundary()), b.step());
    cmd.mutable_command()->set_job_id(b.job_id());
    if (answered) {
      write_locked(job.workers.at(b.rank()), cmd);  // a repeat: answer that rank again
    } else {
      for (const auto& w : job.workers) write_locked(w, cmd);
    }
  } else if (msg.has_ack()) {
    const auto& a = msg.ack();
    auto it = jobs_.find(a.job_id());
    if (it == jobs_.end()) return;
    Job& job = it->second;
    auto& ranks = job.acks[a.step()];
    const bool answered = ranks.size() == job.workers.size();
    ranks.insert(a.rank());
    if (ranks.size() < job.workers.size()) return;
    CoordinatorMessage resume;
    resume.mutable_resume()->set_job_id(a.job_id());
    resume.mutable_resume()->set_step(a.step());
    if (answered) {
      write_locked(job.workers.at(a.rank()), resume);
    } else {
      for (const auto& w : job.workers) write_locked(w, resume);
    }
  }
}

bool FakeCoordinator::wait_for(const std::function<bool(const Log&)>& pred, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return pred(log_); });
}

bool FakeCoordinator::wait_connected(const std::string& worker_id, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return streams_.count(worker_id) > 0; });
}

std::string FakeCoordinator::first_worker_id(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !streams_.empty(); })) return "";
  return streams_.begin()->first;
}

FakeCoordinator::Log FakeCoordinator::messages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

std::vector<relora::v1::RegisterRequest> FakeCoordinator::registrations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return registrations_;
}

}  // namespace relora::cluster::testing
