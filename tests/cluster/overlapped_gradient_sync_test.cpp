// Gradient sums that overlap the backward: 2 ranks (threads, Gloo on loopback) run two
// micro-batches through a 4-layer chain with one parameter per bucket; only the last backward
// starts all-reduces, each bucket's as soon as its gradient is complete, and finish() leaves the
// mean over the ranks of each rank's accumulated gradients.
#include "worker/distributed/overlapped_gradient_sync.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"

namespace relora::cluster {
namespace {

using distributed::CollectiveKind;
using distributed::OverlappedGradientSync;
using testing::loopback_group;
using testing::run_ranks;

constexpr int kLayers = 4;

std::vector<torch::Tensor> make_weights() {
  auto gen = at::detail::createCPUGenerator(5);
  std::vector<torch::Tensor> w;
  for (int i = 0; i < kLayers; ++i) w.push_back(torch::randn({16, 16}, gen).mul_(0.3).requires_grad_(true));
  return w;
}

// Micro-batch `k` of `rank`: tanh chain, sum of squares.
torch::Tensor loss_of(const std::vector<torch::Tensor>& w, int rank, int k) {
  auto gen = at::detail::createCPUGenerator(100 + 10 * rank + k);
  auto x = torch::randn({8, 16}, gen);
  for (const auto& wi : w) x = torch::tanh(torch::mm(x, wi.t()));
  return x.pow(2).sum();
}

TEST(ClusterOverlappedGradientSync, TheLastBackwardStartsEveryBucketAndFinishLeavesTheMean) {
  const int port = find_free_port();
  std::vector<std::vector<torch::Tensor>> synced(2), local(2);
  std::vector<int64_t> calls_before_last(2), started(2), buckets(2);
  run_ranks(2, [&](int rank) {
    // This rank's own accumulated gradients, no communication.
    auto plain = make_weights();
    for (int k = 0; k < 2; ++k) loss_of(plain, rank, k).backward();
    for (auto& p : plain) local[rank].push_back(p.grad().clone());

    DataParallelGroup group(loopback_group(port, rank, 2));
    OverlappedGradientSync sync(group, /*bucket_bytes=*/16 * 16 * 4);  // one weight per bucket
    auto w = make_weights();
    sync.set_parameters(w);
    loss_of(w, rank, 0).backward();  // not armed: accumulates only
    calls_before_last[rank] = group.traffic().calls[static_cast<int>(CollectiveKind::kAllReduce)];
    sync.arm();
    loss_of(w, rank, 1).backward();
    started[rank] = sync.started_in_backward();
    sync.finish();
    buckets[rank] = sync.buckets();
    for (auto& p : w) synced[rank].push_back(p.grad().clone());
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(calls_before_last[rank], 0) << "rank " << rank;
    EXPECT_EQ(buckets[rank], kLayers);
    EXPECT_EQ(started[rank], kLayers) << "every bucket's sum started inside the backward";
    for (int i = 0; i < kLayers; ++i) {
      const auto mean = (local[0][i] + local[1][i]) / 2.0;
      EXPECT_TRUE(torch::allclose(synced[rank][i], mean, 1e-6, 1e-7)) << "rank " << rank << ", layer " << i;
      EXPECT_TRUE(torch::equal(synced[rank][i], synced[0][i])) << "ranks differ, layer " << i;
    }
  }
}

}  // namespace
}  // namespace relora::cluster
