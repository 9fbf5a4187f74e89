// Test harness for the coordinator: a real server on 127.0.0.1:0 over a real SQLite file in a
// temporary directory, real gRPC stubs, and SimWorker, a worker simulated with the generated
// WorkerService stub (Register, Heartbeat, and Connect as a ClientReaderWriter read by a thread).
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "coordinator/server.h"
#include "relora/v1/service.grpc.pb.h"
#include "tests/test_paths.h"

namespace relora::coordinator::testing {

using namespace std::chrono_literals;
namespace v1 = relora::v1;

// Every client call gets a deadline (style item 8): a hung coordinator fails the test quickly.
inline void set_deadline(grpc::ClientContext& ctx, std::chrono::milliseconds d = 5000ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + d);
}

// A valid two-worker ReLoRA job: boundaries low_rank_start@20, cycle_end@60, job_end@100.
// `cluster_extra`: more cluster fields (", min_workers: 1").
inline std::string job_yaml(const std::string& name, int workers = 1, const std::string& cluster_extra = "") {
  return "name: " + name +
         "\n"
         "model: {preset: nano}\n"
         "data: {train: [corpus.txt]}\n"
         "training: {steps: 100}\n"
         "relora: {warm_start_steps: 20, cycle_steps: 40}\n"
         "cluster: {workers: " +
         std::to_string(workers) + cluster_extra + "}\n";
}

// Polls `pred` until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 3000ms) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

class Coordinator {
 public:
  // metrics_port: -1 no metrics endpoint, 0 one on a free port (server().metrics_port()).
  explicit Coordinator(const std::string& state_dir, std::chrono::milliseconds heartbeat_timeout = 10s,
                       int metrics_port = -1, std::chrono::milliseconds reattach_timeout = 60s) {
    ServerOptions opts;
    opts.listen = "127.0.0.1:0";
    opts.state_dir = state_dir;
    opts.heartbeat_timeout = heartbeat_timeout;
    opts.reattach_timeout = reattach_timeout;
    opts.metrics_port = metrics_port;
    server_ = std::make_unique<CoordinatorServer>(opts);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    jobs_ = v1::JobService::NewStub(channel_);
  }
  CoordinatorServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  v1::JobService::Stub& jobs() { return *jobs_; }
  void shutdown() { server_->shutdown(); }

  grpc::Status submit(const std::string& yaml, v1::Job* out, const std::string& source = "job.yaml") {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::SubmitJobRequest req;
    req.set_spec_yaml(yaml);
    req.set_source_name(source);
    v1::SubmitJobResponse resp;
    grpc::Status st = jobs_->SubmitJob(&ctx, req, &resp);
    if (out) *out = resp.job();
    return st;
  }
  v1::Job submit_ok(const std::string& yaml) {
    v1::Job job;
    grpc::Status st = submit(yaml, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }
  grpc::Status get(const std::string& id, v1::Job* out) {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::GetJobRequest req;
    req.set_job_id(id);
    return jobs_->GetJob(&ctx, req, out);
  }
  v1::Job get_ok(const std::string& id) {
    v1::Job job;
    grpc::Status st = get(id, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }
  v1::JobState state(const std::string& id) { return get_ok(id).state(); }
  bool wait_state(const std::string& id, v1::JobState want, std::chrono::milliseconds t = 3000ms) {
    return eventually([&] { return state(id) == want; }, t);
  }
  grpc::Status cancel(const std::string& id, v1::Job* out) {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::CancelJobRequest req;
    req.set_job_id(id);
    return jobs_->CancelJob(&ctx, req, out);
  }
  std::vector<v1::Job> list() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::ListJobsResponse resp;
    grpc::Status st = jobs_->ListJobs(&ctx, {}, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.jobs().begin(), resp.jobs().end()};
  }
  std::vector<v1::WorkerInfo> workers() {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::ListWorkersResponse resp;
    grpc::Status st = jobs_->ListWorkers(&ctx, {}, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.workers().begin(), resp.workers().end()};
  }
  std::vector<v1::JobEvent> events(const std::string& id, int64_t after = 0) {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::GetJobEventsRequest req;
    req.set_job_id(id);
    req.set_after_seq(after);
    v1::GetJobEventsResponse resp;
    grpc::Status st = jobs_->GetJobEvents(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.events().begin(), resp.events().end()};
  }

 private:
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
};

// A worker as the coordinator sees it on the wire, driven step by step by the test.
class SimWorker {
 public:
  SimWorker(std::shared_ptr<grpc::Channel> channel, std::string host, int rendezvous_port)
      : stub_(v1::WorkerService::NewStub(channel)), host_(std::move(host)), port_(rendezvous_port) {}
  ~SimWorker() {
    stop_heartbeats();
    disconnect();
  }

  const std::string& id() const { return id_; }

  // `running`: the running_* fields to send (the run this worker says it is still training).
  grpc::Status register_worker(const std::string& reuse_id = "", const v1::RegisterRequest* running = nullptr) {
    grpc::ClientContext ctx;
    set_deadline(ctx);
    v1::RegisterRequest req;
    if (running != nullptr) req = *running;
    req.set_host(host_);
    req.set_device("cpu");
    req.set_rendezvous_port(port_);
    req.set_worker_id(reuse_id);
    v1::RegisterResponse resp;
    grpc::Status st = stub_->Register(&ctx, req, &resp);
    if (st.ok()) {
      id_ = resp.worker_id();
      heartbeat_interval_ms_ = resp.heartbeat_interval_ms();
    }
    return st;
  }
  int64_t heartbeat_interval_ms() const { return heartbeat_interval_ms_; }

  grpc::Status heartbeat() {
    grpc::ClientContext ctx;
    set_deadline(ctx, 2000ms);
    v1::HeartbeatRequest req;
    req.set_worker_id(id_);
    v1::HeartbeatResponse resp;
    return stub_->Heartbeat(&ctx, req, &resp);
  }
  void start_heartbeats(std::chrono::milliseconds every) {
    heartbeating_ = true;
    heartbeat_thread_ = std::thread([this, every] {
      while (heartbeating_) {
        heartbeat();
        std::this_thread::sleep_for(every);
      }
    });
  }
  void stop_heartbeats() {
    heartbeating_ = false;
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  }

  // Opens Connect and sends the hello with `hello_id` (default: the registered id).
  void connect(std::optional<std::string> hello_id = std::nullopt) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      read_done_ = false;  // a reconnect: the previous stream's end is history
    }
    ctx_ = std::make_unique<grpc::ClientContext>();
    set_deadline(*ctx_, 60000ms);
    stream_ = stub_->Connect(ctx_.get());
    v1::WorkerMessage hello;
    hello.set_worker_id(hello_id.value_or(id_));
    hello.set_hello(true);
    stream_->Write(hello);
    reader_ = std::thread([this] {
      v1::CoordinatorMessage msg;
      while (stream_->Read(&msg)) {
        std::lock_guard<std::mutex> lk(mu_);
        inbox_.push_back(msg);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lk(mu_);
      read_done_ = true;
      cv_.notify_all();
    });
  }
  // Register + connect, and wait until the coordinator lists the worker's stream as bound
  // (the hello is processed asynchronously).
  void join() {
    ASSERT_TRUE(register_worker().ok());
    connect();
  }

  bool send(const v1::WorkerMessage& m) {
    v1::WorkerMessage copy = m;
    copy.set_worker_id(id_);
    std::lock_guard<std::mutex> lk(write_mu_);
    return stream_->Write(copy);
  }
  void boundary(const std::string& job, int rank, int64_t step, const std::string& kind) {
    v1::WorkerMessage m;
    auto* b = m.mutable_boundary();
    b->set_job_id(job);
    b->set_rank(rank);
    b->set_step(step);
    b->set_boundary(kind);
    send(m);
  }
  void ack(const std::string& job, int rank, int64_t step, const std::string& checksum) {
    v1::WorkerMessage m;
    auto* a = m.mutable_ack();
    a->set_job_id(job);
    a->set_rank(rank);
    a->set_step(step);
    a->set_param_checksum(checksum);
    send(m);
  }
  void progress(const std::string& job, int rank, int64_t step, double loss, const std::string& checkpoint = "") {
    v1::WorkerMessage m;
    auto* p = m.mutable_progress();
    p->set_job_id(job);
    p->set_rank(rank);
    p->mutable_progress()->set_step(step);
    p->mutable_progress()->set_loss(loss);
    p->set_checkpoint(checkpoint);
    send(m);
  }
  // `retryable`: the failure happened while training (a restart may succeed).
  void finished(const std::string& job, int rank, bool ok, const std::string& error = "",
                const std::string& summary = "", bool retryable = false) {
    v1::WorkerMessage m;
    auto* f = m.mutable_finished();
    f->set_job_id(job);
    f->set_rank(rank);
    f->set_ok(ok);
    f->set_error(error);
    f->set_summary_json(summary);
    f->set_retryable(retryable);
    send(m);
  }

  // The next message from the coordinator, or nullopt after `timeout`.
  std::optional<v1::CoordinatorMessage> next(std::chrono::milliseconds timeout = 3000ms) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, timeout, [this] { return !inbox_.empty() || read_done_; });
    if (inbox_.empty()) return std::nullopt;
    v1::CoordinatorMessage m = inbox_.front();
    inbox_.pop_front();
    return m;
  }
  // True once the coordinator ended the stream; then finish() gives its status.
  bool stream_ended(std::chrono::milliseconds timeout = 3000ms) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, timeout, [this] { return read_done_; });
  }
  grpc::Status finish() {
    if (reader_.joinable()) reader_.join();
    grpc::Status st = stream_->Finish();
    stream_.reset();
    return st;
  }
  // Closes our side and waits for the stream to end.
  void disconnect() {
    if (!stream_) return;
    {
      std::lock_guard<std::mutex> lk(write_mu_);
      stream_->WritesDone();
    }
    if (!stream_ended(2000ms)) ctx_->TryCancel();
    finish();
  }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  const std::string host_;
  const int port_;
  std::string id_;
  int64_t heartbeat_interval_ms_ = 0;
  std::atomic<bool> heartbeating_{false};
  std::thread heartbeat_thread_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream_;
  std::thread reader_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::CoordinatorMessage> inbox_;
  bool read_done_ = false;
};

// The worker's idle/busy/lost state as ListWorkers reports it.
inline std::string worker_state(Coordinator& c, const std::string& id) {
  for (const auto& w : c.workers())
    if (w.id() == id) return w.state();
  return "";
}

}  // namespace relora::coordinator::testing
