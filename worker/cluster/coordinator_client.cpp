#include "worker/cluster/coordinator_client.h"

#include <spdlog/spdlog.h>

#include "common/grpc_security.h"

#include "worker/cluster/host_info.h"

namespace relora::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Messages kept while the coordinator is slow or away; beyond this, droppable ones are dropped.
constexpr size_t kMaxQueued = 10000;
constexpr milliseconds kDefaultHeartbeat{2000};

std::string status_text(const grpc::Status& s) {
  static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                                "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  std::string text = code >= 0 && code <= 16 ? names[code] : std::to_string(code);
  if (!s.error_message().empty()) text += ": " + s.error_message();
  return text;
}

}  // namespace

struct CoordinatorClient::Session {
  grpc::ClientContext ctx;  // declared before the stream: outlives it
  std::unique_ptr<grpc::ClientReaderWriter<relora::v1::WorkerMessage, relora::v1::CoordinatorMessage>> stream;
  bool active = true;  // guarded by CoordinatorClient::mu_; false once reading ended
};

CoordinatorClient::CoordinatorClient(CoordinatorClientOptions options, MessageHandler on_message,
                                     std::function<void()> on_connected)
    : options_(std::move(options)), on_message_(std::move(on_message)), on_connected_(std::move(on_connected)) {
  grpc::ChannelArguments args;
  // gRPC's own reconnect backoff grows to 120 s by default; keep it within ours, so that a
  // coordinator that comes back is found within backoff_max.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_initial.count()));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_initial.count()));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options_.backoff_max.count()));
  channel_ = grpc::CreateCustomChannel(options_.address, channel_credentials(options_.security), args);
  stub_ = relora::v1::WorkerService::NewStub(channel_);
}

CoordinatorClient::~CoordinatorClient() { stop(milliseconds(0)); }

void CoordinatorClient::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  connection_thread_ = std::thread([this] { connection_loop(); });
  heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
}

void CoordinatorClient::stop(milliseconds flush_timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) return;
  stopping_ = true;
  cv_.notify_all();
  const auto deadline = Clock::now() + flush_timeout;
  // The writer drains the outbox and then half-closes; the coordinator then ends the call.
  cv_.wait_until(lock, deadline, [&] { return !connected_ || (outbox_.empty() && !writing_); });
  cv_.wait_until(lock, deadline, [&] { return session_ == nullptr; });
  if (session_) session_->ctx.TryCancel();
  if (register_call_) register_call_->TryCancel();
  if (heartbeat_call_) heartbeat_call_->TryCancel();
  if (!outbox_.empty()) spdlog::warn("coordinator: {} message(s) not delivered at shutdown", outbox_.size());
  lock.unlock();
  if (connection_thread_.joinable()) connection_thread_.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void CoordinatorClient::send(relora::v1::WorkerMessage msg, bool droppable) {
  std::lock_guard<std::mutex> lock(mu_);
  if (droppable && (!connected_ || outbox_.size() >= kMaxQueued)) return;
  outbox_.push_back({std::move(msg), droppable});
  cv_.notify_all();
}

std::string CoordinatorClient::worker_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

int CoordinatorClient::rendezvous_port() const {
  std::lock_guard<std::mutex> lock(mu_);
  return rendezvous_port_;
}

bool CoordinatorClient::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

bool CoordinatorClient::wait_connected(milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return connected_; });
}

int64_t CoordinatorClient::registrations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return registrations_;
}

void CoordinatorClient::connection_loop() {
  Backoff backoff(options_.backoff_initial, options_.backoff_max);
  int failures = 0;  // attempts since the last stream that connected
  while (true) {
    std::string why;
    if (register_once(&why) && run_session(&why)) {
      backoff.reset();
      failures = 0;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return;
    const milliseconds delay = backoff.next();
    // One warning per outage; the retries behind it at debug level.
    if (failures++ == 0)
      spdlog::warn("coordinator {}: {}; reconnecting with backoff up to {} ms", options_.address, why,
                   options_.backoff_max.count());
    else
      spdlog::debug("coordinator {}: {}; retrying in {} ms", options_.address, why, delay.count());
    cv_.wait_for(lock, delay, [&] { return stopping_; });
    if (stopping_) return;
  }
}

bool CoordinatorClient::register_once(std::string* why) {
  relora::v1::RegisterRequest req;
  auto call = std::make_shared<grpc::ClientContext>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    try {
      rendezvous_port_ = options_.rendezvous_port > 0 ? options_.rendezvous_port : find_free_port(rendezvous_port_);
    } catch (const std::exception& e) {
      *why = e.what();
      return false;
    }
    req.set_worker_id(worker_id_);
    req.set_rendezvous_port(rendezvous_port_);
    register_call_ = call;
  }
  req.set_host(options_.host);
  req.set_device(options_.device);
  if (options_.describe_running_run) options_.describe_running_run(req);
  req.set_memory_bytes(options_.memory_bytes);
  call->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
  call->set_wait_for_ready(true);  // a coordinator that is starting up answers within the deadline
  add_bearer_token(*call, options_.security.token);
  relora::v1::RegisterResponse resp;
  const grpc::Status status = stub_->Register(call.get(), req, &resp);
  std::lock_guard<std::mutex> lock(mu_);
  register_call_.reset();
  if (!status.ok()) {
    *why = "Register failed (" + status_text(status) + ")";
    // Retrying cannot fix a token: say so at every attempt, not only the first of an outage.
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED)
      spdlog::error("coordinator {} rejected this worker's token; check --token-file", options_.address);
    return false;
  }
  if (!worker_id_.empty() && resp.worker_id() != worker_id_)
    spdlog::warn("coordinator {}: it no longer knew worker {}; registered again as {}", options_.address, worker_id_,
                 resp.worker_id());
  worker_id_ = resp.worker_id();
  heartbeat_interval_ = options_.heartbeat_interval.count() > 0 ? options_.heartbeat_interval
                        : resp.heartbeat_interval_ms() > 0      ? milliseconds(resp.heartbeat_interval_ms())
                                                                : kDefaultHeartbeat;
  ++registrations_;
  cv_.notify_all();
  return true;
}

bool CoordinatorClient::run_session(std::string* why) {
  auto session = std::make_shared<Session>();
  add_bearer_token(session->ctx, options_.security.token);
  relora::v1::WorkerMessage hello;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    session_ = session;
    hello.set_worker_id(worker_id_);
  }
  hello.set_hello(true);
  session->stream = stub_->Connect(&session->ctx);
  const bool hello_written = session->stream->Write(hello);
  if (hello_written) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      connected_ = true;
      spdlog::info("connected to the coordinator at {} as worker {} (rendezvous port {}, heartbeat every {} ms)",
                   options_.address, worker_id_, rendezvous_port_, heartbeat_interval_.count());
      cv_.notify_all();
    }
    if (on_connected_) on_connected_();
    std::thread writer([this, session] { write_loop(*session); });
    relora::v1::CoordinatorMessage msg;
    while (session->stream->Read(&msg)) {
      if (on_message_) on_message_(msg);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      connected_ = false;
      session->active = false;
      cv_.notify_all();
    }
    // Reading ended, so the call is over: a write in progress fails promptly.
    writer.join();
  }
  const grpc::Status status = session->stream->Finish();
  std::lock_guard<std::mutex> lock(mu_);
  connected_ = false;
  session_.reset();
  cv_.notify_all();
  *why = (hello_written ? "the stream ended (" : "the stream did not open (") + status_text(status) + ")";
  return hello_written;
}

void CoordinatorClient::write_loop(Session& session) {
  while (true) {
    Queued item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !session.active || !outbox_.empty() || stopping_; });
      if (!session.active) return;
      if (outbox_.empty()) {  // stopping, everything written: half-close
        lock.unlock();
        session.stream->WritesDone();
        return;
      }
      item = std::move(outbox_.front());
      outbox_.pop_front();
      item.msg.set_worker_id(worker_id_);
      writing_ = true;
    }
    const bool ok = session.stream->Write(item.msg);
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    cv_.notify_all();
    if (!ok) {
      // Not delivered: keep it for the next stream, in order.
      if (!item.droppable) outbox_.push_front(std::move(item));
      return;
    }
  }
}

void CoordinatorClient::cancel_session(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!session_) return;
  spdlog::warn("coordinator {}: {}; reconnecting", options_.address, why);
  session_->ctx.TryCancel();
}

void CoordinatorClient::heartbeat_loop() {
  int misses = 0;
  while (true) {
    relora::v1::HeartbeatRequest req;
    auto call = std::make_shared<grpc::ClientContext>();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || registrations_ > 0; });
      // One interval after the latest registration, then every interval (a new registration
      // restarts the wait, with the interval it returned).
      const int64_t epoch = registrations_;
      cv_.wait_for(lock, heartbeat_interval_, [&] { return stopping_ || registrations_ != epoch; });
      if (stopping_) return;
      if (registrations_ != epoch) continue;
      req.set_worker_id(worker_id_);
      heartbeat_call_ = call;
    }
    call->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
    add_bearer_token(*call, options_.security.token);
    relora::v1::HeartbeatResponse resp;
    const grpc::Status status = stub_->Heartbeat(call.get(), req, &resp);
    {
      std::lock_guard<std::mutex> lock(mu_);
      heartbeat_call_.reset();
      if (stopping_) return;
    }
    if (status.ok()) {
      misses = 0;
      continue;
    }
    ++misses;
    spdlog::debug("coordinator {}: heartbeat failed ({})", options_.address, status_text(status));
    if (status.error_code() == grpc::StatusCode::NOT_FOUND || misses >= options_.heartbeat_misses) {
      cancel_session(status.error_code() == grpc::StatusCode::NOT_FOUND
                         ? "the coordinator does not know this worker"
                         : std::to_string(misses) + " heartbeats failed (" + status_text(status) + ")");
      misses = 0;
    }
  }
}

}  // namespace relora::cluster
