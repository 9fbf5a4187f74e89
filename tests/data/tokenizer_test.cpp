// Tokenizer: the T5 model's golden ids, training once then reusing the cached model, the two
// training recipes (BPE with byte fallback by default, unigram on request) and what describe()
// reads from a model file.
#include "worker/data/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/synthetic_text.h"
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
  // What the file declares, read through the shim: a unigram model with T5's special pieces.
  const SpmModelInfo info = t5.describe();
  EXPECT_EQ(info.model_type, 1);
  EXPECT_FALSE(info.byte_fallback);
  EXPECT_EQ(info.normalizer_name, "nmt_nfkc");
  EXPECT_TRUE(info.add_dummy_prefix);
  EXPECT_TRUE(info.remove_extra_whitespaces);
  EXPECT_EQ(info.pad_id, 0);
  EXPECT_EQ(info.eos_id, 1);
  EXPECT_EQ(info.unk_id, 2);
  EXPECT_EQ(info.bos_id, -1);
  ASSERT_EQ(info.pieces.size(), 32000u);
  ASSERT_EQ(info.scores.size(), 32000u);
  ASSERT_EQ(info.types.size(), 32000u);
  EXPECT_EQ(info.pieces[0], "<pad>");
  EXPECT_EQ(info.pieces[1], "</s>");
  EXPECT_EQ(info.pieces[2], "<unk>");
  EXPECT_EQ(info.types[0], 3);  // control
  EXPECT_EQ(info.types[2], 2);  // unknown
  EXPECT_EQ(info.pieces[8774], "\xE2\x96\x81Hello");  // "▁Hello", the first id of the text above
  EXPECT_EQ(info.types[8774], 1);
  EXPECT_LT(info.scores[8774], 0.0f);  // a unigram log probability
  // No byte pieces: a character outside the vocabulary is unk.
  EXPECT_EQ(std::count(info.types.begin(), info.types.end(), 6), 0);
  const auto rocket = t5.encode("\xF0\x9F\x9A\x80");  // "🚀"
  EXPECT_NE(std::find(rocket.begin(), rocket.end(), 2), rocket.end());
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
  EXPECT_EQ(trained.eos_id(), 2);  // the default recipe: LLaMA's unk 0, bos 1, eos 2, no pad
  EXPECT_EQ(trained.pad_id(), -1);
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
  // No normalization and byte fallback: even newlines decode back as they were.
  EXPECT_EQ(trained.decode(ids), passage);

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

  // Another model type is another cache entry and another model; a unigram model can be far
  // smaller than a BPE one (it has no byte pieces).
  const Tokenizer c = Tokenizer::train_or_load_cached(inputs, 40, dir.file("cache-a"), TokenizerModelType::kUnigram);
  EXPECT_NE(c.model_path(), a.model_path());
  EXPECT_NE(c.fingerprint(), a.fingerprint());
  EXPECT_EQ(c.vocab_size(), 40);
  EXPECT_EQ(c.describe().model_type, 1);
  EXPECT_EQ(c.decode(c.encode("the lazy fox 42")), "the lazy fox 42");

  // So is another vocabulary size.
  const Tokenizer d = Tokenizer::train_or_load_cached(inputs, 50, dir.file("cache-a"), TokenizerModelType::kUnigram);
  EXPECT_NE(d.model_path(), c.model_path());
  EXPECT_NE(d.fingerprint(), c.fingerprint());
  EXPECT_LE(d.vocab_size(), 50);
}

TEST(DataTokenizer, DefaultRecipeIsBpeWithByteFallbackInLlamasLayout) {
  // The tokenizer of the tiny training jobs (tests/tiny_job.h), cached in the build tree.
  const Tokenizer t = Tokenizer::train_or_load_cached({relora::testing::synthetic_text_file()}, 512,
                                                      relora::testing::binary_path("test-cache"));
  const SpmModelInfo info = t.describe();
  EXPECT_EQ(info.model_type, 2);  // bpe
  EXPECT_TRUE(info.byte_fallback);
  EXPECT_EQ(info.normalizer_name, "identity");
  EXPECT_TRUE(info.add_dummy_prefix);
  EXPECT_FALSE(info.remove_extra_whitespaces);
  EXPECT_EQ(info.unk_id, 0);
  EXPECT_EQ(info.bos_id, 1);
  EXPECT_EQ(info.eos_id, 2);
  EXPECT_EQ(info.pad_id, -1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.pad_id(), -1);
  ASSERT_EQ(t.vocab_size(), 512);
  EXPECT_EQ(info.pieces[0], "<unk>");
  EXPECT_EQ(info.pieces[1], "<s>");
  EXPECT_EQ(info.pieces[2], "</s>");
  // The 256 byte pieces follow the specials, as in LLaMA's tokenizer.model.
  for (int b = 0; b < 256; ++b) {
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    EXPECT_EQ(info.pieces[3 + b], piece);
    EXPECT_EQ(info.types[3 + b], 6);
  }
  // Text the training corpus never had ("Grüße, 東京 🚀"): bytes, never unk, and back exactly.
  const std::string outside = "Gr\xC3\xBC\xC3\x9F" "e, \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x9A\x80";
  const auto ids = t.encode(outside);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 0);
  EXPECT_GE(std::count_if(ids.begin(), ids.end(), [&](int id) { return info.types[id] == 6; }), 10);
  EXPECT_EQ(t.decode(ids), outside);
}

TEST(DataTokenizer, ModelTypeNamesAndTheBpeMinimum) {
  EXPECT_EQ(tokenizer_model_type_from_name(""), TokenizerModelType::kBpe);
  EXPECT_EQ(tokenizer_model_type_from_name("bpe"), TokenizerModelType::kBpe);
  EXPECT_EQ(tokenizer_model_type_from_name("unigram"), TokenizerModelType::kUnigram);
  EXPECT_NE(error_of([] { tokenizer_model_type_from_name("wordpiece"); }).find("data.tokenizer_model_type"),
            std::string::npos);
  // 256 byte pieces leave a BPE model of fewer than kMinBpeVocabSize pieces too little room.
  TempDir cache;
  const std::string error = error_of(
      [&] { Tokenizer::train_or_load_cached({relora::testing::synthetic_text_file()}, 300, cache.path()); });
  EXPECT_NE(error.find("unigram"), std::string::npos) << error;
}

TEST(DataTokenizer, TrainingOnMissingInputNamesIt) {
  TempDir cache;
  const std::string missing = cache.file("no-such-corpus.txt");
  EXPECT_NE(error_of([&] { Tokenizer::train_or_load_cached({missing}, 512, cache.path()); })
                .find(missing),
            std::string::npos);
}

}  // namespace
}  // namespace relora::data
