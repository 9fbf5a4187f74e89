// Collectives tested in one process: each rank is a thread with its own c10d TCPStore client and
// ProcessGroupGloo on 127.0.0.1, short timeouts, the first thread's exception rethrown.
#include "worker/cluster/process_group.h"

#include <atomic>
#include <chrono>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/cluster/cluster_test_util.h"
#include "worker/cluster/gradient_sync.h"

namespace relora::cluster {
namespace {

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

TEST(ClusterGradientSync, MeanOfKnownTensorsIsExact) {
  const int port = find_free_port();
  std::vector<std::vector<torch::Tensor>> results(2);
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedGradientSync sync(group);
    const double k = rank + 1;  // rank 0 holds x, rank 1 holds 2x: the mean is 1.5x, exact in binary
    std::vector<torch::Tensor> t = {torch::full({3, 4}, k, torch::kFloat32),
                                    torch::arange(5, torch::kFloat32).mul(k),
                                    torch::full({1}, 0.25 * k, torch::kFloat64)};
    sync.all_reduce_mean(t);
    results[rank] = t;
    EXPECT_EQ(sync.calls(), 1);
    EXPECT_EQ(sync.collectives(), 2);  // one fp32 bucket, one fp64 bucket (with the stop vote)
  });
  for (const auto& t : results) {
    EXPECT_TRUE(torch::equal(t[0], torch::full({3, 4}, 1.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[1], torch::arange(5, torch::kFloat32).mul(1.5)));
    EXPECT_EQ(t[2].scalar_type(), torch::kFloat64);
    EXPECT_EQ(t[2].item<double>(), 0.375);
  }
}

// Traffic is counted where tensors reach the backend: the payload of every collective, by kind,
// on every rank, and the observer (the worker's Prometheus counter) sees the same bytes.
TEST(ClusterGradientSync, TrafficIsCountedByKindWhereItIsSent) {
  const int port = find_free_port();
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    int64_t observed = 0;
    group.set_traffic_observer([&](CollectiveKind kind, int64_t bytes) {
      EXPECT_STREQ(collective_kind_name(kind), "all_reduce");
      observed += bytes;
    });
    BucketedGradientSync sync(group);
    std::vector<torch::Tensor> t = {torch::ones({3, 4}, torch::kFloat32), torch::ones({5}, torch::kFloat32),
                                    torch::ones({2}, torch::kFloat64)};
    sync.all_reduce_mean(t);
    // One fp32 bucket of 17 floats, one fp64 bucket of 2 doubles and the stop vote.
    const int64_t mean_bytes = 17 * 4 + 3 * 8;
    EXPECT_EQ(group.traffic().bytes[0], mean_bytes);
    EXPECT_EQ(group.traffic().calls[0], 2);
    sync.all_reduce_sum(t);  // no stop vote
    EXPECT_EQ(group.traffic().bytes[0], mean_bytes + 17 * 4 + 2 * 8);
    EXPECT_EQ(group.traffic().total_bytes(), group.traffic().bytes[0]);
    EXPECT_EQ(observed, group.traffic().total_bytes());
  });
}

TEST(ClusterGradientSync, MixedDtypesAcrossSeveralBuckets) {
  const int port = find_free_port();
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedGradientSync sync(group, /*bucket_bytes=*/64);
    const double k = rank + 1;
    auto big = torch::full({40}, k, torch::kFloat32);  // 160 bytes: a bucket of its own, reduced in place
    auto strided = torch::full({4, 6}, k, torch::kFloat32).t();  // not contiguous: packed
    std::vector<torch::Tensor> t = {torch::full({10}, k, torch::kFloat32), torch::full({1}, 2 * k, torch::kFloat64),
                                    big, torch::full({6}, 3 * k, torch::kFloat32), strided,
                                    torch::full({3}, k, torch::kFloat16)};
    const void* big_data = big.data_ptr();
    sync.all_reduce_mean(t);
    EXPECT_EQ(t[2].data_ptr(), big_data);
    EXPECT_TRUE(torch::equal(t[0], torch::full({10}, 1.5, torch::kFloat32)));
    EXPECT_EQ(t[1].item<double>(), 3.0);
    EXPECT_TRUE(torch::equal(t[2], torch::full({40}, 1.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[3], torch::full({6}, 4.5, torch::kFloat32)));
    EXPECT_TRUE(torch::equal(t[4], torch::full({6, 4}, 1.5, torch::kFloat32)));
    EXPECT_EQ(t[5].scalar_type(), torch::kFloat16);
    EXPECT_TRUE(torch::equal(t[5], torch::full({3}, 1.5, torch::kFloat16)));
    // Filled in order, a new bucket when the next tensor does not fit: fp32 [10] [40] [6] [6x4];
    // fp64 [1 + the stop vote]; fp16 [3].
    EXPECT_EQ(sync.collectives(), 6);
    std::vector<torch::Tensor> ints = {torch::ones({2}, torch::kInt64)};
    EXPECT_THROW(sync.all_reduce_mean(ints), std::invalid_argument);
  });
}

TEST(ClusterGradientSync, ResultsAreBitIdenticalOnEveryRank) {
  const int port = find_free_port();
  const int world = 3;
  std::vector<std::vector<torch::Tensor>> results(world);
  run_ranks(world, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, world));
    BucketedGradientSync sync(group, /*bucket_bytes=*/4096);
    torch::manual_seed(100 + rank);  // different on every rank; rounding depends on the order of sums
    std::vector<torch::Tensor> t;
    for (int i = 0; i < 6; ++i) t.push_back(torch::randn({37 * (i + 1)}) * 1e3);
    t.push_back(torch::randn({1}, torch::kFloat64));
    sync.all_reduce_mean(t);
    results[rank] = t;
  });
  for (int rank = 1; rank < world; ++rank)
    for (size_t i = 0; i < results[0].size(); ++i)
      EXPECT_TRUE(torch::equal(results[rank][i], results[0][i])) << "rank " << rank << " tensor " << i;
}

TEST(ClusterGradientSync, StopVoteOfOneRankStopsEveryRankAtTheSameCall) {
  const int port = find_free_port();
  run_ranks(2, [&](int rank) {
    DataParallelGroup group(loopback_group(port, rank, 2));
    BucketedGradientSync sync(group);
    int calls = 0;
    sync.set_local_stop([&] { return rank == 1 && calls == 2; });
    std::vector<torch::Tensor> t = {torch::ones({4})};
    ++calls;
    sync.all_reduce_mean(t);
    EXPECT_FALSE(sync.stop_agreed());
    ++calls;
    sync.all_reduce_mean(t);
    EXPECT_TRUE(sync.stop_agreed()) << "rank " << rank;
  });
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
