// `relora tokenize`'s pipeline: the same bytes for any thread count, every input format, the
// index a job reads, resume of an interrupted run (in-process here; after SIGKILL of the real CLI
// in tokenize_cli_test.cpp).
#include "worker/data/corpus_tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
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

// The encoder threads decode JSON records (the reader only splits lines): a record whose text is
// empty writes nothing but still counts in the positions a resume starts from, and a malformed
// line fails the run naming file and line, whichever thread met it.
TEST(DataTokenize, JsonRecordsAreDecodedByTheEncodersAndEmptyTextsKeepResumeExact) {
  TempDir dir;
  const auto docs = relora::testing::synthetic_documents();
  std::string with_empties;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i % 5 == 0) with_empties += "{\"text\": \"\"}\n\n";  // an empty text and a blank line
    with_empties += relora::testing::jsonl({docs[i]});
  }
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  relora::testing::write_bytes(dir.file("a/c.jsonl"), with_empties);
  relora::testing::write_bytes(dir.file("b/c.jsonl"), relora::testing::jsonl(docs));
  const auto full = run({dir.file("a")}, dir.file("full"), 2, 5000);
  run({dir.file("b")}, dir.file("plain"), 1, 5000);
  EXPECT_EQ(full.documents, docs.size());
  auto shards_of = [](std::map<std::string, std::string> files) {
    files.erase("index.json");  // names its inputs
    return files;
  };
  const auto reference = relora::testing::dir_contents(dir.file("full"));
  ASSERT_GT(reference.size(), 4u);
  EXPECT_TRUE(shards_of(reference) == shards_of(relora::testing::dir_contents(dir.file("plain"))))
      << "empty texts changed the shards";

  TokenIndex index = read_token_index(dir.file("full/index.json"));
  index.shards.resize(2);
  index.complete = false;
  write_token_index(dir.file("full/index.json"), index);
  fs::remove(dir.file("full/shard-00002.tok"));
  const auto resumed = run({dir.file("a")}, dir.file("full"), 3, 5000);
  EXPECT_EQ(resumed.shards_reused, 2u);
  EXPECT_TRUE(relora::testing::dir_contents(dir.file("full")) == reference);

  const size_t bad_line = with_empties.size() * 3 / 4;  // in a later chunk than the first (256 KB)
  std::string broken = with_empties;
  const size_t at = broken.find('\n', bad_line) + 1;
  const size_t line = static_cast<size_t>(std::count(broken.begin(), broken.begin() + at, '\n')) + 1;
  broken.insert(at, "{\"text\": 42}\n");
  fs::create_directories(dir.file("bad"));
  relora::testing::write_bytes(dir.file("bad/c.jsonl"), broken);
  try {
    run({dir.file("bad")}, dir.file("bad-out"), 2, 5000);
    FAIL() << "a record without a string text was tokenized";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:" + std::to_string(line) + ": no string field \"text\""),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace relora::data
