// One job's data-parallel process group: a c10d TCPStore hosted by rank 0 at the assignment's
// rendezvous address, and a collective backend on top of it (Gloo for CPU tensors; NCCL for CUDA
// tensors in builds with RELORA_WITH_CUDA).
//
// Torch-light on purpose: only ATen's Tensor appears here; c10d, Gloo and NCCL headers stay in
// process_group.cpp (one slow translation unit instead of every includer).
//
// Threading: a group belongs to one rank's training thread (and to the autograd engine's thread
// that runs its backward while the training thread waits in backward()). Every method is
// collective (or store-based) and must be called in the same order on every rank. Several groups,
// one per rank, may live in one process on separate threads (the tests run a whole world that way).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace relora::distributed {

enum class Backend { kGloo, kNccl };

// What this rank handed to the backend's collectives, by kind: counted in the one place every
// collective passes (DataParallelGroup), so that published traffic figures are measured, not
// derived from parameter counts. Store traffic (rendezvous, all_gather_string) is control, not
// counted.
//  - payload bytes: the size of the whole collective (an all-reduce's tensors; a reduce-scatter's
//    input; an all-gather's output);
//  - sent bytes: what this rank sends to its peers. Exact for the reduce-scatter (an all-to-all of
//    world - 1 chunks, see reduce_scatter_sum); for the all-reduce and the all-gather, those of the
//    bandwidth-optimal ring the backends use for large tensors: 2 (w - 1) / w of the payload and
//    (w - 1) / w of it. So a reduce-scatter plus an all-gather of N bytes send what one all-reduce
//    of N bytes sends, which is why ZeRO need not cost more traffic than plain data parallelism.
enum class CollectiveKind { kAllReduce, kReduceScatter, kAllGather };
inline constexpr int kCollectiveKinds = 3;
// "all_reduce", "reduce_scatter", "all_gather" (Prometheus label values)
const char* collective_kind_name(CollectiveKind kind);

struct CollectiveTraffic {
  int64_t calls[kCollectiveKinds] = {};       // collectives launched (one per tensor)
  int64_t bytes[kCollectiveKinds] = {};       // payload bytes
  int64_t sent_bytes[kCollectiveKinds] = {};  // bytes sent by this rank
  int64_t total_bytes() const;
  int64_t total_sent_bytes() const;
};

// A collective started and not yet waited for (DataParallelGroup::start_all_reduce_sum). wait()
// once before reading its tensor; it throws as the blocking collectives do.
class PendingCollective {
 public:
  PendingCollective() = default;
  explicit PendingCollective(std::function<void()> wait) : wait_(std::move(wait)) {}
  void wait() {
    if (!wait_) return;
    auto w = std::move(wait_);
    wait_ = nullptr;
    w();
  }
  bool pending() const { return static_cast<bool>(wait_); }

 private:
  std::function<void()> wait_;
};

struct GroupOptions {
  std::string store_host;  // rank 0's host: the assignment's rendezvous_host
  int store_port = 0;      // the assignment's rendezvous_port (rank 0 listens on it)
  int rank = 0;
  int world = 1;
  // The address this rank's Gloo transport binds to (other ranks connect to it): this worker's
  // --host. Empty: the machine's hostname, falling back to loopback.
  std::string local_host;
  Backend backend = Backend::kGloo;
  // Joining: every rank waits this long for all ranks to reach the store (the others also for
  // rank 0's store to appear). Generous, because ranks start their assignments at different
  // moments. Whole seconds: c10d rounds its connect timeout down to seconds.
  std::chrono::milliseconds rendezvous_timeout{std::chrono::seconds(60)};
  // One collective. It must cover the longest time one rank can spend outside collectives while
  // the others wait in the next one: rank 0 writing a checkpoint between two steps.
  std::chrono::milliseconds collective_timeout{std::chrono::seconds(300)};
};

class DataParallelGroup {
 public:
  // Joins the group (blocks until all `world` ranks are there). Throws std::runtime_error naming
  // the rendezvous address, the rank and the timeout when that does not happen in time.
  explicit DataParallelGroup(GroupOptions options);
  ~DataParallelGroup();
  DataParallelGroup(const DataParallelGroup&) = delete;
  DataParallelGroup& operator=(const DataParallelGroup&) = delete;

  int rank() const { return options_.rank; }
  int world() const { return options_.world; }
  const GroupOptions& options() const { return options_; }

  // Sums every tensor in place across the ranks: one all-reduce per tensor, all launched before
  // the first is waited for. Results are bit-identical on every rank. Throws std::runtime_error
  // (a peer died, or collective_timeout passed).
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  // Starts summing `tensor` in place across the ranks and returns at once: the all-reduce runs in
  // the backend's own threads (Gloo's; NCCL's stream) while this thread goes on, e.g. with the
  // backward. Ranks must start their collectives in the same order.
  PendingCollective start_all_reduce_sum(const at::Tensor& tensor);

  // `input` holds world chunks of n elements (chunk r for rank r); `output` (n elements, same
  // dtype and device) receives the sum of every rank's chunk `rank()`. Summed here in rank order
  // (r = 0, 1, ...) after an all-to-all, so the result does not depend on the backend's reduction
  // order, and this rank sends exactly its world - 1 other chunks. Throws like all_reduce_sum.
  void reduce_scatter_sum(const at::Tensor& input, at::Tensor& output);
  // Every rank contributes `input` (n elements); `output` (world chunks of n, contiguous) receives
  // rank r's input in chunk r, bit for bit. Throws like all_reduce_sum.
  void all_gather(const at::Tensor& input, at::Tensor& output);

  // Collective traffic of this rank so far (see CollectiveTraffic).
  const CollectiveTraffic& traffic() const { return traffic_; }
  // Called once per collective call with its kind, payload bytes and sent bytes (metrics), on the
  // calling (training) thread.
  void set_traffic_observer(std::function<void(CollectiveKind, int64_t bytes, int64_t sent_bytes)> observer) {
    observer_ = std::move(observer);
  }

  // Every rank publishes `value` under `key` (unique per use); returns all ranks' values by rank.
  std::vector<std::string> all_gather_string(const std::string& key, const std::string& value,
                                             std::chrono::milliseconds timeout);

  // Runs `fn` on rank 0 first and on the other ranks once rank 0 succeeded, then waits until all
  // ranks are done (for work that fills a cache every rank reads, e.g. tokenizing the data). A
  // failure on any rank throws on every rank, naming that rank and its error; `timeout` bounds
  // each wait (it must cover `fn`).
  void run_rank0_first(const std::string& key, const std::function<void()>& fn,
                       std::chrono::milliseconds timeout);

 private:
  struct Impl;
  void count(CollectiveKind kind, int64_t calls, int64_t bytes, int64_t sent_bytes);
  [[noreturn]] void fail(const char* what, const std::exception& e) const;
  const GroupOptions options_;
  std::unique_ptr<Impl> impl_;
  CollectiveTraffic traffic_;
  std::function<void(CollectiveKind, int64_t, int64_t)> observer_;
};

}  // namespace relora::distributed
