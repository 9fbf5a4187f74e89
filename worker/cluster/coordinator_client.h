// The worker's connection to the coordinator (WorkerService in proto/relora/v1/service.proto):
// registration, heartbeats, and the Connect stream with a thread-safe outbox.
//
// Lifecycle, repeated until stop(): Register (sending the worker id it had, so that a reconnect
// keeps its identity) -> open Connect -> write hello -> read CoordinatorMessages and hand each to
// `on_message` while a writer drains the outbox -> the stream ends (coordinator gone, network
// error, heartbeat watchdog) -> wait a capped exponential backoff -> again.
//
// Deadlines: every unary RPC has `rpc_timeout`. The stream has none (it lives as long as the
// worker); instead heartbeats watch it: `heartbeat_misses` failed heartbeats in a row, or one
// answered NOT_FOUND (the coordinator forgot this worker), cancel the stream, which reconnects.
//
// Threads (all owned here, joined by stop()):
//   connection  registers, opens the stream, reads it; calls on_message and on_connected.
//   writer      one per stream: writes queued messages in order; re-queues one whose write failed.
//   heartbeat   sends Heartbeat every interval the coordinator gave (or the override).
// on_message runs on the connection thread and must not block (it only hands messages over).
// send() may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/grpc_security.h"
#include "relora/v1/service.grpc.pb.h"
#include "worker/cluster/message_sink.h"

namespace relora::cluster {

struct CoordinatorClientOptions {
  std::string address;  // host:port of the coordinator
  std::string host;     // this worker's host name, as the other ranks of a job reach it
  std::string device = "cpu";
  int64_t memory_bytes = 0;
  // The port this worker's c10d store listens on when it is rank 0 (where only declared ports are
  // reachable, e.g. in a container). 0: a free one, found at each registration.
  int rendezvous_port = 0;
  relora::ClientSecurity security;  // the worker token and TLS settings (default: plaintext, no token)
  std::chrono::milliseconds rpc_timeout{std::chrono::seconds(5)};
  std::chrono::milliseconds heartbeat_interval{0};  // 0: the interval Register returns
  int heartbeat_misses = 3;
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{5000};
  // Fills the running_* fields of every Register with the run this worker is training (leaves
  // them empty if none), so that a restarted coordinator can adopt the run or stop it. Called on
  // the connection thread.
  std::function<void(relora::v1::RegisterRequest&)> describe_running_run;
};

class CoordinatorClient final : public MessageSink {
 public:
  using MessageHandler = std::function<void(const relora::v1::CoordinatorMessage&)>;

  // `on_connected` runs on the connection thread after every hello (the first and each
  // reconnect), before queued messages are written: the place to queue requests again whose
  // answers may have been lost with the previous stream.
  CoordinatorClient(CoordinatorClientOptions options, MessageHandler on_message, std::function<void()> on_connected);
  ~CoordinatorClient() override;
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  void start();
  // Writes what is queued (for up to `flush_timeout`), half-closes the stream, and joins every
  // thread. Idempotent.
  void stop(std::chrono::milliseconds flush_timeout = std::chrono::seconds(5));

  // Queues `msg` for the coordinator, in order, across reconnects. While the coordinator is away
  // (restarting, say) a droppable message (a progress report: the next one supersedes it) is
  // dropped; the others wait for the next stream. What waits is bounded by the protocol, not a
  // cap: a run trains on only to its next cycle boundary and waits there, so at most one cycle's
  // events and checkpoint reports queue up.
  void send(relora::v1::WorkerMessage msg, bool droppable = false) override;

  std::string worker_id() const;
  int rendezvous_port() const;
  bool connected() const;
  bool wait_connected(std::chrono::milliseconds timeout) const;
  int64_t registrations() const;  // successful Register calls so far

 private:
  struct Session;
  struct Queued {
    relora::v1::WorkerMessage msg;
    bool droppable;
  };

  void connection_loop();
  bool register_once(std::string* why);
  bool run_session(std::string* why);  // true when the stream opened
  void write_loop(Session& session);
  void heartbeat_loop();
  void cancel_session(const std::string& why);

  // Constant after construction.
  const CoordinatorClientOptions options_;
  const MessageHandler on_message_;
  const std::function<void()> on_connected_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<relora::v1::WorkerService::Stub> stub_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;  // any change of the state below
  // State below is protected by mu_.
  std::string worker_id_;
  int rendezvous_port_ = 0;
  std::chrono::milliseconds heartbeat_interval_{0};
  int64_t registrations_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  bool connected_ = false;  // hello written, stream not yet ended
  bool writing_ = false;    // the writer holds a message it popped
  std::deque<Queued> outbox_;
  std::shared_ptr<Session> session_;              // the open stream, for cancelling it
  std::shared_ptr<grpc::ClientContext> register_call_;   // in flight, for stop() to cancel
  std::shared_ptr<grpc::ClientContext> heartbeat_call_;  // in flight, for stop() to cancel

  std::thread connection_thread_;
  std::thread heartbeat_thread_;
};

}  // namespace relora::cluster
