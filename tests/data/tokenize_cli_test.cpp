// The real `relora tokenize` as a subprocess: killed with SIGKILL mid-way and run again, its
// output is byte-identical to an uninterrupted run's.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/client/cli_runner.h"
#include "tests/data/corpus_test_support.h"
#include "worker/data/token_index.h"

namespace relora::data {
namespace {

using relora::testing::TempDir;

std::vector<std::string> tokenize_args(const TempDir& dir, const std::string& out, int threads) {
  return {"-o", "json", "tokenize", dir.file("corpus"), "--tokenizer", relora::testing::synthetic_tokenizer(),
          "--out", dir.file(out), "--threads", std::to_string(threads), "--shard-tokens", "20000"};
}

// Shards the index lists so far (0 while it does not exist or is being replaced).
size_t listed_shards(const std::string& index_file) {
  try {
    return read_token_index(index_file).shards.size();
  } catch (const std::exception&) {
    return 0;
  }
}

TEST(DataTokenizeCli, ResumesAfterSigkillWithTheBytesOfAnUninterruptedRun) {
  TempDir dir;
  relora::testing::write_mixed_corpus(dir.file("corpus"), relora::testing::synthetic_documents(8));
  const auto full = relora::testing::run_cli(tokenize_args(dir, "full", 2));
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const size_t total_shards = listed_shards(dir.file("full/index.json"));
  ASSERT_GT(total_shards, 20u);

  {
    relora::testing::RunningBinary killed(relora::testing::relora_cli(), tokenize_args(dir, "resumed", 1));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (listed_shards(dir.file("resumed/index.json")) < 3 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ::kill(killed.pid(), SIGKILL);
    const auto r = killed.wait();
    ASSERT_EQ(r.exit_code, 128 + SIGKILL) << "finished before the kill: make the corpus larger";
  }
  const TokenIndex partial = read_token_index(dir.file("resumed/index.json"));
  EXPECT_FALSE(partial.complete);
  ASSERT_LT(partial.shards.size(), total_shards);

  const auto again = relora::testing::run_cli(tokenize_args(dir, "resumed", 2));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const auto summary = nlohmann::json::parse(again.out);
  EXPECT_GE(summary.at("shards_reused").get<size_t>(), partial.shards.size());
  EXPECT_TRUE(relora::testing::dir_contents(dir.file("resumed")) == relora::testing::dir_contents(dir.file("full")));
  // Plain progress lines when stderr is not a terminal.
  EXPECT_NE(again.err.find("tokenize: "), std::string::npos) << again.err;
}

}  // namespace
}  // namespace relora::data
