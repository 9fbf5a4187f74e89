#include "worker/distributed/process_group.h"

#include <cstdio>
#include <stdexcept>
#include <utility>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RELORA_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "worker/distributed/error_message.h"

namespace relora::distributed {
namespace {

using std::chrono::milliseconds;

std::string seconds(milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

std::vector<uint8_t> bytes_of_string(const std::string& s) { return {s.begin(), s.end()}; }

// ProcessGroupGloo is a c10d::ProcessGroup in LibTorch 1.13, and it and ProcessGroupNCCL are
// c10d::Backends from 2.0 on: a template over the concrete class compiles against both.
class Collective {
 public:
  virtual ~Collective() = default;
  // Starts summing `tensor` in place; the returned function waits for it.
  virtual std::function<void()> start_all_reduce_sum(const at::Tensor& tensor, milliseconds timeout) = 0;
  // Equal splits: `output` and `input` hold world chunks each; chunk r of `input` goes to rank r,
  // and chunk r of `output` comes from rank r.
  virtual void all_to_all(at::Tensor& output, at::Tensor& input, milliseconds timeout) = 0;
  virtual void all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input, milliseconds timeout) = 0;
};

template <class PG>
class PgCollective final : public Collective {
 public:
  explicit PgCollective(c10::intrusive_ptr<PG> pg) : pg_(std::move(pg)) {}

  std::function<void()> start_all_reduce_sum(const at::Tensor& tensor, milliseconds timeout) override {
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = timeout;
    // The argument vector (c10d takes one tensor per local device) lives as long as the work.
    auto args = std::make_shared<std::vector<at::Tensor>>(std::vector<at::Tensor>{tensor});
    auto work = pg_->allreduce(*args, opts);
    return [work, args, timeout] { work->wait(timeout); };
  }

  void all_to_all(at::Tensor& output, at::Tensor& input, milliseconds timeout) override {
    c10d::AllToAllOptions opts;
    opts.timeout = timeout;
    std::vector<int64_t> equal_splits;  // empty: world equal chunks
    pg_->alltoall_base(output, input, equal_splits, equal_splits, opts)->wait(timeout);
  }

  void all_gather(std::vector<at::Tensor>& outputs, at::Tensor& input, milliseconds timeout) override {
    c10d::AllgatherOptions opts;
    opts.timeout = timeout;
    std::vector<std::vector<at::Tensor>> out = {outputs};
    std::vector<at::Tensor> in = {input};
    pg_->allgather(out, in, opts)->wait(timeout);
  }

 private:
  c10::intrusive_ptr<PG> pg_;
};

}  // namespace

struct DataParallelGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;  // the TCPStore (a client of rank 0's server)
  std::unique_ptr<Collective> collective;  // declared after the store: destroyed first
};

DataParallelGroup::DataParallelGroup(GroupOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  const auto& o = options_;
  if (o.world < 1 || o.rank < 0 || o.rank >= o.world)
    throw std::invalid_argument("process group: rank " + std::to_string(o.rank) + " is not in a world of " +
                                std::to_string(o.world));
  if (o.store_port <= 0 || o.store_port > 65535)
    throw std::invalid_argument("process group: rendezvous port " + std::to_string(o.store_port) +
                                " is not a TCP port");
  const std::string who = "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world);
  const std::string where = o.store_host + ":" + std::to_string(o.store_port);

  c10d::TCPStoreOptions store_opts;
  store_opts.port = static_cast<uint16_t>(o.store_port);
  store_opts.isServer = o.rank == 0;
  store_opts.numWorkers = static_cast<size_t>(o.world);
  // LibTorch 1.13's own wait for the workers gives up silently after the timeout; the wait for
  // every rank's key below fails instead, naming the missing ranks.
  store_opts.waitWorkers = false;
  store_opts.timeout = o.rendezvous_timeout;  // a client retries connecting this long
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.store_host, store_opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(who + ": cannot " + (o.rank == 0 ? "host" : "reach") + " the rendezvous store at " +
                             where + " within " + seconds(o.rendezvous_timeout) + ": " + error_message(e));
  }
  std::vector<std::string> joined;
  for (int r = 0; r < o.world; ++r) joined.push_back("relora/joined/" + std::to_string(r));
  try {
    impl_->store->set(joined[o.rank], bytes_of_string("1"));
    impl_->store->wait(joined, o.rendezvous_timeout);
  } catch (const std::exception& e) {
    std::string missing;
    for (int r = 0; r < o.world; ++r)
      if (!impl_->store->check({joined[r]})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    throw std::runtime_error(who + ": the rendezvous at " + where + " did not complete within " +
                             seconds(o.rendezvous_timeout) + " (missing rank " + missing + "): " + error_message(e));
  }
  // From here on, store waits take explicit timeouts (run_rank0_first, all_gather_string).
  impl_->store->setTimeout(o.collective_timeout);
  auto pg_store = c10::make_intrusive<c10d::PrefixStore>("pg", impl_->store);

  try {
    if (o.backend == Backend::kGloo) {
      // LibTorch 1.13's Gloo collectives ignore AllreduceOptions::timeout and use this one.
      auto gloo_opts = c10d::ProcessGroupGloo::Options::create(o.collective_timeout);
      gloo_opts->devices.push_back(o.local_host.empty()
                                       ? c10d::ProcessGroupGloo::createDefaultDevice()
                                       : c10d::ProcessGroupGloo::createDeviceForHostname(o.local_host));
      impl_->collective = std::make_unique<PgCollective<c10d::ProcessGroupGloo>>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, o.rank, o.world, gloo_opts));
    } else {
#ifdef RELORA_WITH_CUDA
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = o.collective_timeout;
      impl_->collective = std::make_unique<PgCollective<c10d::ProcessGroupNCCL>>(
          c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, o.rank, o.world, nccl_opts));
#else
      throw std::invalid_argument("the NCCL backend needs a build with RELORA_WITH_CUDA (LibTorch with CUDA)");
#endif
    }
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(who + ": cannot connect the process group through " + where + " (local address '" +
                             o.local_host + "'): " + error_message(e));
  }
}

const char* collective_kind_name(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduce: return "all_reduce";
    case CollectiveKind::kReduceScatter: return "reduce_scatter";
    case CollectiveKind::kAllGather: return "all_gather";
  }
  return "unknown";
}

int64_t CollectiveTraffic::total_bytes() const {
  int64_t sum = 0;
  for (int64_t b : bytes) sum += b;
  return sum;
}

int64_t CollectiveTraffic::total_sent_bytes() const {
  int64_t sum = 0;
  for (int64_t b : sent_bytes) sum += b;
  return sum;
}

DataParallelGroup::~DataParallelGroup() = default;

namespace {

int64_t bytes_of(const at::Tensor& t) { return static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.element_size()); }

}  // namespace

void DataParallelGroup::count(CollectiveKind kind, int64_t calls, int64_t bytes, int64_t sent_bytes) {
  const auto k = static_cast<size_t>(kind);
  traffic_.calls[k] += calls;
  traffic_.bytes[k] += bytes;
  traffic_.sent_bytes[k] += sent_bytes;
  if (observer_) observer_(kind, bytes, sent_bytes);
}

void DataParallelGroup::fail(const char* what, const std::exception& e) const {
  throw std::runtime_error(std::string(what) + " failed on rank " + std::to_string(options_.rank) + " of " +
                           std::to_string(options_.world) + " (a peer failed, or none answered within " +
                           seconds(options_.collective_timeout) + "): " + error_message(e));
}

void DataParallelGroup::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  // All launched before the first is waited for.
  std::vector<PendingCollective> pending;
  pending.reserve(tensors.size());
  for (const auto& t : tensors) pending.push_back(start_all_reduce_sum(t));
  for (auto& p : pending) p.wait();
}

PendingCollective DataParallelGroup::start_all_reduce_sum(const at::Tensor& tensor) {
  const int64_t bytes = bytes_of(tensor), w = options_.world;
  count(CollectiveKind::kAllReduce, 1, bytes, 2 * (w - 1) * bytes / w);
  std::function<void()> wait;
  try {
    wait = impl_->collective->start_all_reduce_sum(tensor, options_.collective_timeout);
  } catch (const std::exception& e) {
    fail("all-reduce", e);
  }
  return PendingCollective([this, wait = std::move(wait)] {
    try {
      wait();
    } catch (const std::exception& e) {
      fail("all-reduce", e);
    }
  });
}

void DataParallelGroup::reduce_scatter_sum(const at::Tensor& input, at::Tensor& output) {
  const int64_t w = options_.world, n = output.numel();
  if (input.numel() != w * n || input.scalar_type() != output.scalar_type() || input.device() != output.device() ||
      !input.is_contiguous() || !output.is_contiguous())
    throw std::invalid_argument("reduce-scatter: the input must hold world (" + std::to_string(w) + ") chunks of the " +
                                std::to_string(n) + "-element output, contiguous, of one dtype and device");
  count(CollectiveKind::kReduceScatter, 1, bytes_of(input), (w - 1) * bytes_of(output));
  auto chunks = at::empty_like(input);
  try {
    auto in = input;
    impl_->collective->all_to_all(chunks, in, options_.collective_timeout);
  } catch (const std::exception& e) {
    fail("reduce-scatter", e);
  }
  auto by_rank = chunks.view({w, n});
  output.copy_(by_rank[0]);
  for (int64_t r = 1; r < w; ++r) output.add_(by_rank[r]);
}

void DataParallelGroup::all_gather(const at::Tensor& input, at::Tensor& output) {
  const int64_t w = options_.world, n = input.numel();
  if (output.numel() != w * n || input.scalar_type() != output.scalar_type() || input.device() != output.device() ||
      !output.is_contiguous())
    throw std::invalid_argument("all-gather: the output must hold world (" + std::to_string(w) + ") chunks of the " +
                                std::to_string(n) + "-element input, contiguous, of one dtype and device");
  count(CollectiveKind::kAllGather, 1, bytes_of(output), (w - 1) * bytes_of(input));
  auto by_rank = output.view({w, n});
  std::vector<at::Tensor> outputs;
  for (int64_t r = 0; r < w; ++r) outputs.push_back(by_rank[r]);
  try {
    auto in = input.contiguous();
    impl_->collective->all_gather(outputs, in, options_.collective_timeout);
  } catch (const std::exception& e) {
    fail("all-gather", e);
  }
}

std::vector<std::string> DataParallelGroup::all_gather_string(const std::string& key, const std::string& value,
                                                              milliseconds timeout) {
  auto key_of = [&](int r) { return "relora/" + key + "/" + std::to_string(r); };
  std::vector<std::string> keys;
  for (int r = 0; r < options_.world; ++r) keys.push_back(key_of(r));
  std::vector<std::string> out;
  try {
    impl_->store->set(key_of(options_.rank), bytes_of_string(value));
    impl_->store->wait(keys, timeout);
    for (const auto& k : keys) {
      auto v = impl_->store->get(k);
      out.emplace_back(v.begin(), v.end());
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(options_.rank) + ": not every rank published '" + key +
                             "' within " + seconds(timeout) + ": " + error_message(e));
  }
  return out;
}

void DataParallelGroup::run_rank0_first(const std::string& key, const std::function<void()>& fn,
                                        milliseconds timeout) {
  auto key_of = [&](int r) { return "relora/" + key + "/" + std::to_string(r); };
  auto status_of = [&](int r) {
    try {
      impl_->store->wait({key_of(r)}, timeout);
      auto v = impl_->store->get(key_of(r));
      return std::string(v.begin(), v.end());
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(options_.rank) + ": rank " + std::to_string(r) +
                               " did not finish '" + key + "' within " + seconds(timeout) + ": " + error_message(e));
    }
  };
  auto check = [&](int r, const std::string& status) {
    if (status != "ok") throw std::runtime_error("rank " + std::to_string(r) + " failed in '" + key + "': " + status);
  };
  if (options_.rank != 0) check(0, status_of(0));
  try {
    fn();
  } catch (const std::exception& e) {
    impl_->store->set(key_of(options_.rank), bytes_of_string(error_message(e)));
    throw;
  }
  impl_->store->set(key_of(options_.rank), bytes_of_string("ok"));
  for (int r = 1; r < options_.world; ++r)
    if (r != options_.rank) check(r, status_of(r));
}

}  // namespace relora::distributed
