// Tokenizer: the T5 model's golden ids, and training once then reusing the cached model.
#include "worker/data/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tests/test_paths.h"

namespace relora::data {
namespace {

using relora::testing::shared_data;
using relora::testing::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(DataTokenizer, T5GivesThePapersIds) {
  RELORA_REQUIRE_SHARED_DATA("t5-spiece/spiece.model");
  const Tokenizer t5 = Tokenizer::load(shared_data("t5-spiece/spiece.model"));
  const std::string text = "Hello world, this is a test.";
  EXPECT_EQ(t5.encode(text), (std::vector<int>{8774, 296, 6, 48, 19, 3, 9, 794, 5}));
  EXPECT_EQ(t5.decode(t5.encode(text)), text);
  EXPECT_EQ(t5.eos_id(), 1);
  EXPECT_EQ(t5.pad_id(), 0);
  EXPECT_EQ(t5.vocab_size(), 32000);
  EXPECT_EQ(t5.model_path(), shared_data("t5-spiece/spiece.model"));
  EXPECT_EQ(t5.fingerprint().size(), 16u);
  // The fingerprint is of the bytes: loading again gives the same one.
  EXPECT_EQ(Tokenizer::load(shared_data("t5-spiece/spiece.model")).fingerprint(), t5.fingerprint());
}

TEST(DataTokenizer, LoadErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.model");
  EXPECT_NE(error_of([&] { Tokenizer::load(missing); }).find(missing), std::string::npos);

  const std::string garbage = dir.file("garbage.model");
  std::ofstream(garbage) << "this is not a protobuf";
  const std::string error = error_of([&] { Tokenizer::load(garbage); });
  EXPECT_NE(error.find(garbage), std::string::npos) << error;
  EXPECT_NE(error.find("SentencePiece"), std::string::npos) << error;
}

TEST(DataTokenizer, TrainsOnceOnShakespeareThenReusesTheCache) {
  RELORA_REQUIRE_SHARED_DATA("tinyshakespeare/input.txt");
  TempDir cache;
  const std::vector<std::string> inputs = {shared_data("tinyshakespeare/input.txt")};

  auto start = std::chrono::steady_clock::now();
  const Tokenizer trained = Tokenizer::train_or_load_cached(inputs, 1000, cache.path());
  const auto train_time = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(std::filesystem::exists(trained.model_path()));
  EXPECT_EQ(std::filesystem::path(trained.model_path()).parent_path(), cache.path());
  EXPECT_EQ(trained.vocab_size(), 1000);
  EXPECT_EQ(trained.eos_id(), 1);
  EXPECT_EQ(trained.pad_id(), 0);
  // Only the model remains: the temporary training text is gone.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(cache.path()),
                          std::filesystem::directory_iterator()),
            1);

  const std::string passage =
      "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.";
  const std::vector<int> ids = trained.encode(passage);
  EXPECT_LT(ids.size(), passage.size() / 2) << "a 1000-piece vocabulary should compress";
  for (int id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 1000);
  }
  // SentencePiece normalizes newlines to spaces, so compare a single-line text.
  EXPECT_EQ(trained.decode(trained.encode("Speak, speak.")), "Speak, speak.");

  const auto mtime = std::filesystem::last_write_time(trained.model_path());
  start = std::chrono::steady_clock::now();
  const Tokenizer cached = Tokenizer::train_or_load_cached(inputs, 1000, cache.path());
  const auto cached_time = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(cached.model_path(), trained.model_path());
  EXPECT_EQ(std::filesystem::last_write_time(cached.model_path()), mtime) << "retrained";
  EXPECT_EQ(cached.fingerprint(), trained.fingerprint());
  EXPECT_EQ(cached.encode(passage), ids);
  EXPECT_LT(cached_time, train_time);

}

TEST(DataTokenizer, SmallCorpusTrainsFewerPiecesDeterministically) {
  TempDir dir;
  {
    std::ofstream corpus(dir.file("corpus.txt"));
    for (int i = 0; i < 50; ++i) {
      corpus << "the quick brown fox " << i << " jumps over the lazy dog\n<|endoftext|>\n";
    }
  }
  const std::vector<std::string> inputs = {dir.file("corpus.txt")};
  // Far more pieces than this text supports: trains what it can instead of failing.
  const Tokenizer a = Tokenizer::train_or_load_cached(inputs, 4000, dir.file("cache-a"));
  EXPECT_GT(a.vocab_size(), 20);
  EXPECT_LT(a.vocab_size(), 4000);
  EXPECT_EQ(a.decode(a.encode("the lazy fox 42")), "the lazy fox 42");

  // Same inputs and size in another cache: the same model bytes (the trainer is seeded), which
  // is what lets ranks that each train their own copy agree on token ids.
  const Tokenizer b = Tokenizer::train_or_load_cached(inputs, 4000, dir.file("cache-b"));
  EXPECT_EQ(b.fingerprint(), a.fingerprint());

  // Another vocabulary size is another cache entry and another model.
  const Tokenizer c = Tokenizer::train_or_load_cached(inputs, 40, dir.file("cache-a"));
  EXPECT_NE(c.model_path(), a.model_path());
  EXPECT_NE(c.fingerprint(), a.fingerprint());
  EXPECT_EQ(c.vocab_size(), 40);
}

TEST(DataTokenizer, TrainingOnMissingInputNamesIt) {
  TempDir cache;
  const std::string missing = cache.file("no-such-corpus.txt");
  EXPECT_NE(error_of([&] { Tokenizer::train_or_load_cached({missing}, 100, cache.path()); })
                .find(missing),
            std::string::npos);
}

}  // namespace
}  // namespace relora::data
