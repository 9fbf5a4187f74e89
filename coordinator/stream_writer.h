// Serialized writes on a server-side gRPC stream (callback API), safe to feed from any thread.
//
// gRPC allows one outstanding StartWrite per stream, never a StartWrite after Finish, and never a
// Finish while a write is outstanding. StreamWriter keeps a queue and enforces all three.
//
// Why two steps (enqueue/close, then pump): a Start*/Finish call made outside a gRPC thread can
// run reactions (OnWriteDone, OnDone) inline, in the calling thread, before it returns. So no
// gRPC call may be made while holding a mutex that a reaction takes. Callers therefore queue
// under their own locks (which fixes the order of messages across threads) and call pump() after
// releasing them; PumpList collects the writers to pump.
//
// Threading contract: every method may be called from any thread. mu_ protects the queue and
// flags; it is never held across a call into gRPC. Lock order: a caller's mutex, then mu_.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace relora::coordinator {

// Something with queued work to hand to gRPC outside all locks.
class Pumpable {
 public:
  virtual ~Pumpable() = default;
  virtual void pump() = 0;
};

// Writers touched under a lock, pumped once the lock is released. The shared_ptrs keep each
// stream's reactor alive until its pump() has returned (see the reactors' ownership notes).
class PumpList {
 public:
  void add(std::shared_ptr<Pumpable> p) {
    if (p) list_.push_back(std::move(p));
  }
  void run() {
    for (auto& p : list_) p->pump();
    list_.clear();
  }

 private:
  std::vector<std::shared_ptr<Pumpable>> list_;
};

// Reactor: a ServerBidiReactor<..., Message> or ServerWriteReactor<Message> (or anything with
// StartWrite(const Message*) and Finish(grpc::Status)).
template <typename Reactor, typename Message>
class StreamWriter {
 public:
  explicit StreamWriter(Reactor* reactor) : reactor_(reactor) {}

  // Queues `m` behind earlier messages. Dropped once the stream is closing or broken.
  void enqueue(Message m) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!finish_requested_ && !broken_) queue_.push_back(std::move(m));
  }

  // Finishes the stream with `status` after the queued messages (the first call wins).
  void close(grpc::Status status) {
    std::lock_guard<std::mutex> lk(mu_);
    if (finish_requested_) return;
    finish_requested_ = true;
    finish_status_ = std::move(status);
  }

  // Starts the next write, or the Finish once the queue is empty. Never call with locks held.
  void pump() {
    std::unique_lock<std::mutex> lk(mu_);
    if (writing_ || finish_called_) return;
    if (!queue_.empty()) {
      writing_ = true;
      // Stable: deque::push_back never moves existing elements; only on_write_done pops it.
      const Message* next = &queue_.front();
      lk.unlock();
      reactor_->StartWrite(next);
    } else if (finish_requested_) {
      finish_called_ = true;
      grpc::Status status = finish_status_;
      lk.unlock();
      reactor_->Finish(status);
    }
  }

  // From the reactor's OnWriteDone. After a failed write (the client is gone) the rest of the
  // queue is dropped; the stream still needs close() for gRPC to call OnDone.
  void on_write_done(bool ok) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      writing_ = false;
      if (!queue_.empty()) queue_.pop_front();
      if (!ok) {
        broken_ = true;
        queue_.clear();
      }
    }
    pump();
  }

  // Messages queued or in flight (0: idle).
  size_t pending() const {
    std::lock_guard<std::mutex> lk(mu_);
    return queue_.size();
  }
  bool closing() const {
    std::lock_guard<std::mutex> lk(mu_);
    return finish_requested_;
  }
  // The status the stream is finished with (the first close()); OK before any close().
  grpc::Status final_status() const {
    std::lock_guard<std::mutex> lk(mu_);
    return finish_status_;
  }

 private:
  Reactor* const reactor_;
  mutable std::mutex mu_;
  std::deque<Message> queue_;      // GUARDED_BY(mu_); front() is in flight while writing_
  bool writing_ = false;           // GUARDED_BY(mu_)
  bool broken_ = false;            // GUARDED_BY(mu_)
  bool finish_requested_ = false;  // GUARDED_BY(mu_)
  bool finish_called_ = false;     // GUARDED_BY(mu_)
  grpc::Status finish_status_;     // GUARDED_BY(mu_)
};

}  // namespace relora::coordinator
