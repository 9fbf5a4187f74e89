// Collectives tested in one process: each rank is a thread with its own c10d TCPStore client and
// ProcessGroupGloo on 127.0.0.1, short timeouts, the first thread's exception rethrown.
#include "worker/distributed/process_group.h"

#include <atomic>
#include <chrono>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/distributed/bucketed_all_reduce.h"
#include "worker/distributed/group_data_parallel.h"

namespace relora::cluster {
namespace {

using distributed::BucketedAllReduce;
using distributed::CollectiveKind;
using distributed::collective_kind_name;

using testing::loopback_group;
using testing::run_ranks;
using Clock = std::chrono::steady_clock;

TEST(ClusterRanks, TheFirstThreadExceptionIsRethrown) {
  EXPECT_THROW(run_ranks(3,
                         [](int rank) {
                           if (rank == 1) throw std::runtime_error("rank 1 failed");
                         }),
               std::runtime_error);
  EXPECT_NO_THROW(run_ranks(2, [](int) {}));
}

TEST(ClusterAllReduce, MeanOfKnownTensorsIsExact) {
  const int port = find_free_port();
  std::vector<std::vector<torch::Tensor>> results(2);
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedAllReduce all_reduce(group);
    const double k = rank + 1;  // rank 0 holds x, rank 1 holds 2x: the mean is 1.5x, exact in binary
    std::vector<torch::Tensor> t = {torch::full({3, 4}, k, torch::kFloat32),
                                    torch::arange(5, torch::kFloat32).mul(k),
                                    torch::full({1}, 0.25 * k, torch::kFloat64)};
    all_reduce.mean(t);
    results[rank] = t;
    EXPECT_EQ(all_reduce.collectives(), 2);  // one fp32 bucket, one fp64 bucket
  });
  for (const auto& t : results) {
    EXPECT_TRUE(torch::equal(t[0], torch::full({3, 4}, 1.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[1], torch::arange(5, torch::kFloat32).mul(1.5)));
    EXPECT_EQ(t[2].scalar_type(), torch::kFloat64);
    EXPECT_EQ(t[2].item<double>(), 0.375);
  }
}

// Traffic is counted where tensors reach the backend: the payload and the bytes this rank sends,
// by kind, on every rank, and the observer (the worker's Prometheus counters) sees the same.
TEST(ClusterAllReduce, TrafficIsCountedByKindWhereItIsSent) {
  const int port = find_free_port();
  const int world = 4;
  run_ranks(world, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, world));
    int64_t observed = 0, observed_sent = 0;
    group.set_traffic_observer([&](CollectiveKind, int64_t bytes, int64_t sent) {
      observed += bytes;
      observed_sent += sent;
    });
    BucketedAllReduce all_reduce(group);
    std::vector<torch::Tensor> t = {torch::ones({3, 4}, torch::kFloat32), torch::ones({5}, torch::kFloat32),
                                    torch::ones({2}, torch::kFloat64)};
    all_reduce.mean(t);
    const auto ar = static_cast<size_t>(CollectiveKind::kAllReduce);
    // One fp32 bucket of 17 floats, one fp64 bucket of 2 doubles; a ring sends 2 (w - 1) / w.
    EXPECT_EQ(group.traffic().bytes[ar], 17 * 4 + 2 * 8);
    EXPECT_EQ(group.traffic().sent_bytes[ar], 2 * 3 * (17 * 4) / 4 + 2 * 3 * (2 * 8) / 4);
    EXPECT_EQ(group.traffic().calls[ar], 2);
    // A reduce-scatter of 4 x 8 floats sends the 3 other chunks; an all-gather of 8 floats sends
    // its chunk to each of the 3 others (a ring forwards w - 1 chunks).
    auto input = torch::ones({32}, torch::kFloat32), shard = torch::empty({8}, torch::kFloat32);
    group.reduce_scatter_sum(input, shard);
    auto gathered = torch::empty({32}, torch::kFloat32);
    group.all_gather(shard, gathered);
    const auto rs = static_cast<size_t>(CollectiveKind::kReduceScatter);
    const auto ag = static_cast<size_t>(CollectiveKind::kAllGather);
    EXPECT_EQ(group.traffic().bytes[rs], 128);
    EXPECT_EQ(group.traffic().sent_bytes[rs], 96);
    EXPECT_EQ(group.traffic().bytes[ag], 128);
    EXPECT_EQ(group.traffic().sent_bytes[ag], 96);
    EXPECT_STREQ(collective_kind_name(CollectiveKind::kReduceScatter), "reduce_scatter");
    EXPECT_STREQ(collective_kind_name(CollectiveKind::kAllGather), "all_gather");
    EXPECT_EQ(observed, group.traffic().total_bytes());
    EXPECT_EQ(observed_sent, group.traffic().total_sent_bytes());
  });
}

// Reduce-scatter: chunk r of the sum lands on rank r, summed in rank order (so the same on any
// backend); all-gather: every rank's chunk lands everywhere, bit for bit.
TEST(ClusterCollectives, ReduceScatterSumsEachChunkOnItsOwnerAndAllGatherReassembles) {
  const int port = find_free_port();
  const int world = 3, n = 5;
  std::vector<torch::Tensor> inputs(world), shards(world), gathered(world);
  for (int r = 0; r < world; ++r) {
    torch::manual_seed(40 + r);
    inputs[r] = torch::randn({world * n}, torch::kFloat32) * 1e3;
  }
  run_ranks(world, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, world));
    shards[rank] = torch::empty({n}, torch::kFloat32);
    group.reduce_scatter_sum(inputs[rank], shards[rank]);
    gathered[rank] = torch::empty({world * n}, torch::kFloat32);
    group.all_gather(shards[rank], gathered[rank]);
    auto bad = torch::empty({n + 1}, torch::kFloat32);
    EXPECT_THROW(group.reduce_scatter_sum(inputs[rank], bad), std::invalid_argument);
  });
  for (int r = 0; r < world; ++r) {
    auto expected = inputs[0].view({world, n})[r].clone();
    for (int q = 1; q < world; ++q) expected.add_(inputs[q].view({world, n})[r]);
    EXPECT_TRUE(torch::equal(shards[r], expected)) << "rank " << r;
    EXPECT_TRUE(torch::equal(gathered[r], torch::cat(shards))) << "rank " << r;
  }
}

TEST(ClusterAllReduce, MixedDtypesAcrossSeveralBuckets) {
  const int port = find_free_port();
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedAllReduce all_reduce(group, /*bucket_bytes=*/64);
    const double k = rank + 1;
    auto big = torch::full({40}, k, torch::kFloat32);  // 160 bytes: a bucket of its own, reduced in place
    auto strided = torch::full({4, 6}, k, torch::kFloat32).t();  // not contiguous: packed
    std::vector<torch::Tensor> t = {torch::full({10}, k, torch::kFloat32), torch::full({1}, 2 * k, torch::kFloat64),
                                    big, torch::full({6}, 3 * k, torch::kFloat32), strided,
                                    torch::full({3}, k, torch::kFloat16)};
    const void* big_data = big.data_ptr();
    all_reduce.mean(t);
    EXPECT_EQ(t[2].data_ptr(), big_data);
    EXPECT_TRUE(torch::equal(t[0], torch::full({10}, 1.5, torch::kFloat32)));
    EXPECT_EQ(t[1].item<double>(), 3.0);
    EXPECT_TRUE(torch::equal(t[2], torch::full({40}, 1.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[3], torch::full({6}, 4.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[4], torch::full({6, 4}, 1.5, torch::kFloat32)));
    EXPECT_EQ(t[5].scalar_type(), torch::kFloat16);
    EXPECT_TRUE(torch::equal(t[5], torch::full({3}, 1.5, torch::kFloat16)));
    // Filled in order, a new bucket when the next tensor does not fit: fp32 [10] [40] [6] [6x4];
    // fp64 [1]; fp16 [3].
    EXPECT_EQ(all_reduce.collectives(), 6);
    std::vector<torch::Tensor> ints = {torch::ones({2}, torch::kInt64)};
    EXPECT_THROW(all_reduce.mean(ints), std::invalid_argument);
  });
}

TEST(ClusterAllReduce, ResultsAreBitIdenticalOnEveryRank) {
  const int port = find_free_port();
  const int world = 3;
  std::vector<std::vector<torch::Tensor>> results(world);
  run_ranks(world, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, world));
    BucketedAllReduce all_reduce(group, /*bucket_bytes=*/4096);
    torch::manual_seed(100 + rank);  // different on every rank; rounding depends on the order of sums
    std::vector<torch::Tensor> t;
    for (int i = 0; i < 6; ++i) t.push_back(torch::randn({37 * (i + 1)}) * 1e3);
    t.push_back(torch::randn({1}, torch::kFloat64));
    all_reduce.mean(t);
    results[rank] = t;
  });
  for (int rank = 1; rank < world; ++rank)
    for (size_t i = 0; i < results[0].size(); ++i)
      EXPECT_TRUE(torch::equal(results[rank][i], results[0][i])) << "rank " << rank << " tensor " << i;
}

// The stop vote rides in every optimizer step, replicated and sharded alike: one rank's vote stops
// every rank after the same step.
TEST(ClusterStopVote, OneRanksVoteStopsEveryRankAfterTheSameStep) {
  for (const bool shard : {false, true}) {
    const int port = find_free_port();
    run_ranks(2, [&](int rank) {
      DataParallelGroup group(loopback_group(port, rank, 2));
      distributed::GroupDataParallel parallel(group);
      int steps = 0;
      parallel.stop_vote().set_local([&] { return rank == 1 && steps == 2; });
      auto optimizer = parallel.make_optimizer(train::AdamWOptions{}, shard);
      auto w = torch::zeros({6}, torch::kFloat32).requires_grad_();
      optimizer->set_parameters({{"w", w, false}});
      for (int i = 0; i < 2; ++i) {
        ++steps;
        w.mutable_grad() = torch::ones({6});
        optimizer->step(1.0, 1e-3, 1e30);
        EXPECT_EQ(parallel.stop_vote().agreed(), steps == 2) << "rank " << rank << " shard " << shard;
      }
    });
  }
}

TEST(ClusterProcessGroup, RankZeroPreparesFirstAndFailuresAreNamedOnEveryRank) {
  const int port = find_free_port();
  std::atomic<bool> rank0_done{false};
  std::atomic<bool> others_started_early{false};
  std::vector<std::string> errors(2);
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    group.run_rank0_first("prepare", [&] {
      if (rank == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        rank0_done = true;
      } else if (!rank0_done) {
        others_started_early = true;
      }
    }, std::chrono::seconds(10));
    try {
      group.run_rank0_first("again", [&] {
        if (rank == 1) throw std::runtime_error("no such file: corpus.txt");
      }, std::chrono::seconds(10));
    } catch (const std::exception& e) {
      errors[rank] = e.what();
    }
    auto values = group.all_gather_string("names", "r" + std::to_string(rank), std::chrono::seconds(10));
    EXPECT_EQ(values, (std::vector<std::string>{"r0", "r1"}));
  });
  EXPECT_FALSE(others_started_early);
  EXPECT_NE(errors[0].find("rank 1 failed in 'again': no such file: corpus.txt"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("no such file"), std::string::npos) << errors[1];
}

TEST(ClusterProcessGroup, AMissingRankFailsTheRendezvousWithinItsTimeout) {
  const int port = find_free_port();
  auto options = loopback_group(port, 0, 2);
  options.rendezvous_timeout = std::chrono::seconds(1);
  const auto t0 = Clock::now();
  try {
    DataParallelGroup group(options);
    FAIL() << "joined a world of 2 alone";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0 of 2"), std::string::npos) << what;
    EXPECT_NE(what.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << what;
    EXPECT_NE(what.find("did not complete within 1.0 s (missing rank 1)"), std::string::npos) << what;
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
}

TEST(ClusterProcessGroup, AllReduceFailsPromptlyWhenAPeerIsGone) {
  const int port = find_free_port();
  std::string error;
  run_ranks(2, [&](int rank) {
    auto group = std::make_unique<DataParallelGroup>(loopback_group(port, rank, 2));
    std::vector<at::Tensor> t = {torch::ones({8})};
    group->all_reduce_sum(t);  // both present
    if (rank == 1) return;     // rank 1 leaves: its group (and sockets) close
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    try {
      group->all_reduce_sum(t);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  });
  EXPECT_NE(error.find("all-reduce failed on rank 0 of 2"), std::string::npos) << error;
}

}  // namespace
}  // namespace relora::cluster
