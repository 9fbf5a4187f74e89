// `relora tokenize`'s pipeline: the same bytes for any thread count, every input format, the
// index a job reads, resume of an interrupted run (in-process here; after SIGKILL of the real CLI
// in tokenize_cli_test.cpp).
#include "worker/data/corpus_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/data/corpus_test_support.h"
#include "worker/data/token_index.h"
#include "worker/data/tokenizer.h"

namespace relora::data {
namespace {

namespace fs = std::filesystem;
using relora::testing::TempDir;

TokenizeResult run(const std::vector<std::string>& inputs, const std::string& out, int threads,
                   uint64_t shard_tokens = 20000) {
  TokenizeOptions o;
  o.inputs = inputs;
  o.out_dir = out;
  o.tokenizer_model = relora::testing::synthetic_tokenizer();
  o.threads = threads;
  o.shard_tokens = shard_tokens;
  return tokenize_corpus(o, [](const TokenizeProgress&) {});
}

TEST(DataTokenize, SameBytesForOneTwoAndFourThreads) {
  TempDir dir;
  relora::testing::write_mixed_corpus(dir.file("corpus"), relora::testing::synthetic_documents(2));
  const auto one = run({dir.file("corpus")}, dir.file("t1"), 1);
  EXPECT_GT(one.shards, 3u);
  const auto reference = relora::testing::dir_contents(dir.file("t1"));
  for (int threads : {2, 4}) {
    const std::string out = dir.file("t" + std::to_string(threads));
    const auto r = run({dir.file("corpus")}, out, threads);
    EXPECT_EQ(r.tokens, one.tokens);
    EXPECT_TRUE(relora::testing::dir_contents(out) == reference) << threads << " threads wrote other bytes";
  }
}

TEST(DataTokenize, GzipAndZstdReadLikePlainTextAndTheIndexStreamsEveryDocument) {
  TempDir dir;
  const auto docs = relora::testing::synthetic_documents();
  relora::testing::write_mixed_corpus(dir.file("corpus"), docs);
  const auto result = run({dir.file("corpus")}, dir.file("out"), 2, /*shard_tokens=*/5000);
  const Tokenizer tokenizer = Tokenizer::load(relora::testing::synthetic_tokenizer());
  std::vector<int64_t> expected;
  for (const auto& d : docs) {
    for (int id : tokenizer.encode(d)) expected.push_back(id);
    expected.push_back(tokenizer.eos_id());
  }
  ASSERT_EQ(result.documents, docs.size());
  ASSERT_EQ(result.tokens, expected.size());
  // A job reads it through the index (the directory names it), shards concatenated in order.
  ASSERT_TRUE(is_token_index(dir.file("out")));
  EXPECT_FALSE(is_token_index(dir.file("corpus/b.jsonl")));  // JSON lines are a corpus, not an index
  TokenStream stream;
  append_token_index(token_index_file(dir.file("out")), stream);
  std::vector<int64_t> got(stream.size());
  stream.copy(0, stream.size(), got.data());
  EXPECT_TRUE(got == expected);
}

TEST(DataTokenize, ResumeKeepsVerifiedShardsAndRedoesTheRest) {
  TempDir dir;
  relora::testing::write_mixed_corpus(dir.file("corpus"), relora::testing::synthetic_documents());
  run({dir.file("corpus")}, dir.file("full"), 2, 5000);
  const auto reference = relora::testing::dir_contents(dir.file("full"));

  // An interrupted run: the index lists the first three shards only, the third one is corrupt,
  // and a killed writer's temporary file lies around.
  run({dir.file("corpus")}, dir.file("cut"), 2, 5000);
  TokenIndex index = read_token_index(dir.file("cut/index.json"));
  ASSERT_GT(index.shards.size(), 4u);
  index.shards.resize(3);
  index.complete = false;
  write_token_index(dir.file("cut/index.json"), index);
  {
    std::fstream f(dir.file("cut/shard-00002.tok"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  relora::testing::write_bytes(dir.file("cut/shard-00003.tok.tmp.12345"), "partial");
  const auto resumed = run({dir.file("corpus")}, dir.file("cut"), 3, 5000);
  EXPECT_EQ(resumed.shards_reused, 2u);
  EXPECT_TRUE(relora::testing::dir_contents(dir.file("cut")) == reference);

  // Another run's directory is refused rather than mixed.
  EXPECT_THROW(run({dir.file("corpus/a.txt")}, dir.file("cut"), 1, 5000), std::runtime_error);
}

}  // namespace
}  // namespace relora::data
