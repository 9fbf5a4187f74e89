// Token files: round trip, corruption detection, and the tokenize-once cache.
#include "worker/data/token_file.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "tests/test_paths.h"
#include "worker/data/documents.h"
#include "worker/data/tokenizer.h"

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

std::vector<uint32_t> sample_tokens(size_t n) {
  std::vector<uint32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<uint32_t>((i * 2654435761u) % 32000);
  return tokens;
}

void flip_byte(const std::string& path, std::streamoff offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(offset);
  char c = 0;
  file.get(c);
  file.seekp(offset);
  file.put(static_cast<char>(c ^ 0x01));
}

TEST(DataTokenFile, RoundTrip) {
  TempDir dir;
  const std::string path = dir.file("a.tok");
  const auto tokens = sample_tokens(100'000);
  write_token_file(path, tokens, 32000, 17);
  EXPECT_EQ(std::filesystem::file_size(path), 64 + 4 * tokens.size());

  TokenFile file(path);
  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.size(), tokens.size());
  EXPECT_EQ(file.vocab_size(), 32000u);
  EXPECT_EQ(file.documents(), 17u);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), file.data()));

  // Moving hands over the mapping; the moved-to object still reads the tokens.
  TokenFile moved(std::move(file));
  EXPECT_EQ(moved.size(), tokens.size());
  EXPECT_EQ(moved.data()[12345], tokens[12345]);

  // No temporary file is left next to the result.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);

  write_token_file(dir.file("empty.tok"), {}, 5, 0);
  EXPECT_EQ(TokenFile(dir.file("empty.tok")).size(), 0u);
}

TEST(DataTokenFile, CorruptedByteFailsTheChecksum) {
  TempDir dir;
  const std::string path = dir.file("a.tok");
  write_token_file(path, sample_tokens(1000), 32000, 1);
  flip_byte(path, 64 + 4 * 500 + 2);
  const std::string error = error_of([&] { TokenFile file(path); });
  EXPECT_NE(error.find("checksum"), std::string::npos) << error;
  EXPECT_NE(error.find(path), std::string::npos) << error;
  // The header is intact, so skipping verification opens it (the caller's choice).
  EXPECT_EQ(TokenFile(path, /*verify_checksum=*/false).size(), 1000u);
}

TEST(DataTokenFile, TruncatedOrForeignFilesAreRejected) {
  TempDir dir;
  const std::string path = dir.file("a.tok");
  write_token_file(path, sample_tokens(1000), 32000, 1);
  std::filesystem::resize_file(path, 64 + 4 * 999);
  std::string error = error_of([&] { TokenFile file(path, /*verify_checksum=*/false); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;

  std::filesystem::resize_file(path, 10);
  error = error_of([&] { TokenFile file(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;

  write_token_file(path, sample_tokens(10), 32000, 1);
  flip_byte(path, 0);
  error = error_of([&] { TokenFile file(path); });
  EXPECT_NE(error.find("magic"), std::string::npos) << error;

  error = error_of([&] { TokenFile file(dir.file("absent.tok")); });
  EXPECT_NE(error.find(dir.file("absent.tok")), std::string::npos) << error;
}

TEST(DataTokenFile, TokenizeToCacheEndsEveryDocumentWithEos) {
  RELORA_REQUIRE_SHARED_DATA("t5-spiece/spiece.model");
  const Tokenizer t5 = Tokenizer::load(shared_data("t5-spiece/spiece.model"));
  TempDir dir;
  std::ofstream(dir.file("stories.txt")) << "One story.\n<|endoftext|>\nTwo stories.\n";
  std::ofstream(dir.file("shard.jsonl")) << "{\"text\": \"Hello world, this is a test.\"}\n"
                                            "{\"text\": \"Another one.\"}\n";
  const std::vector<std::string> inputs = {dir.file("stories.txt"), dir.file("shard.jsonl")};
  const std::string cache = dir.file("cache");

  const std::string path = tokenize_to_cache(inputs, t5, cache);
  std::vector<uint32_t> expected;
  for (const char* text : {"One story.", "Two stories.", "Hello world, this is a test.",
                           "Another one."}) {
    for (int id : t5.encode(text)) expected.push_back(static_cast<uint32_t>(id));
    expected.push_back(1);
  }
  {
    TokenFile file(path);
    EXPECT_EQ(file.documents(), 4u);
    EXPECT_EQ(file.vocab_size(), 32000u);
    ASSERT_EQ(file.size(), expected.size());
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), file.data()));
  }

  // Second call: the same file, not rewritten (mtime kept).
  const auto mtime = std::filesystem::last_write_time(path);
  EXPECT_EQ(tokenize_to_cache(inputs, t5, cache), path);
  EXPECT_EQ(std::filesystem::last_write_time(path), mtime);

  // A changed input is a new cache entry.
  std::ofstream(dir.file("stories.txt"), std::ios::app) << "<|endoftext|>\nThree.\n";
  const std::string changed = tokenize_to_cache(inputs, t5, cache);
  EXPECT_NE(changed, path);
  EXPECT_EQ(TokenFile(changed).documents(), 5u);

  // A .tok input is taken as it is: re-caching it reproduces the same tokens.
  const std::string again = tokenize_to_cache({path}, t5, dir.file("cache2"));
  TokenFile copy(again);
  ASSERT_EQ(copy.size(), expected.size());
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), copy.data()));
  EXPECT_EQ(copy.documents(), 4u);
}

TEST(DataTokenFile, TokenizesTinyStoriesWithOneEosPerDocument) {
  RELORA_REQUIRE_SHARED_DATA("tinystories/tinystories_train_first2MiB.txt");
  RELORA_REQUIRE_SHARED_DATA("t5-spiece/spiece.model");
  const Tokenizer t5 = Tokenizer::load(shared_data("t5-spiece/spiece.model"));
  const std::string input = shared_data("tinystories/tinystories_train_first2MiB.txt");
  size_t documents = 0;
  read_documents(input, [&](std::string_view) { ++documents; });
  ASSERT_GT(documents, 2000u);

  TempDir dir;
  TokenFile file(tokenize_to_cache({input}, t5, dir.path()));
  EXPECT_EQ(file.documents(), documents);
  EXPECT_EQ(std::count(file.data(), file.data() + file.size(), 1u), static_cast<long>(documents));
  EXPECT_EQ(file.data()[file.size() - 1], 1u);
  EXPECT_GT(file.size(), 300'000u);  // ~2 MiB of English at ~4-5 bytes per T5 token
  EXPECT_LT(file.size(), 1'000'000u);
  EXPECT_LT(*std::max_element(file.data(), file.data() + file.size()), 32000u);
}

// Regression found by fuzzing (tests/fuzz/fuzz_token_file, docs/reliability.md "Bad input"): a
// file with a valid checksum but an id at or beyond its own vocab_size was accepted; the pipeline
// checks only the header's vocab_size against the model, so the id reached the embedding.
TEST(DataTokenFile, IdsBeyondTheVocabularyAreRejectedNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("ids.tok");
  write_token_file(path, {1, 2, 31, 32, 0}, 32, 1);
  std::string error = error_of([&] { TokenFile file(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("token 3 has id 32, outside the file's vocab_size 32"), std::string::npos) << error;
  // The cheap header-only open (the cache's reuse check) does not read the ids.
  EXPECT_EQ(error_of([&] { TokenFile file(path, /*verify_checksum=*/false); }), "<no exception>");
  // The fuzzer's input: a corrupt header whose vocab_size (here 0) no id can be below.
  write_token_file(path, {0}, 0, 1);
  EXPECT_NE(error_of([&] { TokenFile file(path); }).find("outside the file's vocab_size 0"), std::string::npos);
  write_token_file(path, {0, 31}, 32, 1);
  EXPECT_EQ(error_of([&] { TokenFile file(path); }), "<no exception>");
}

}  // namespace
}  // namespace relora::data
