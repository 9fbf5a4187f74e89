// Documents: C4 JSON lines, gzip, plain text separators, errors that name file and line.
#include "worker/data/documents.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <chrono>

#include "tests/test_paths.h"

namespace relora::data {
namespace {

using relora::testing::TempDir;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

void write_gzip(const std::string& path, const std::string& text) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, text.data(), static_cast<unsigned>(text.size())),
            static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::vector<std::string> documents_of(const std::string& path) {
  std::vector<std::string> documents;
  read_documents(path, [&](std::string_view d) { documents.emplace_back(d); });
  return documents;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(DataDocuments, C4SampleHasItsThousandDocuments) {
  RELORA_REQUIRE_SHARED_DATA("c4-sample/c4-train.00000-of-01024.first1000.json");
  const auto documents =
      documents_of(relora::testing::shared_data("c4-sample/c4-train.00000-of-01024.first1000.json"));
  ASSERT_EQ(documents.size(), 1000u);
  // The first C4 document, with its JSON "\n" escapes decoded into real newlines.
  EXPECT_EQ(documents.front().rfind("Beginners BBQ Class Taking Place in Missoula!\nDo you", 0), 0u);
  for (const auto& d : documents) EXPECT_FALSE(d.empty());
}

TEST(DataDocuments, GzippedJsonLinesGiveTheSameDocumentsAsPlain) {
  TempDir dir;
  const std::string jsonl =
      "{\"text\": \"first document\\nwith two lines\", \"url\": \"a\"}\n"
      "\n"  // blank lines are tolerated
      "{\"text\": \"caf\\u00e9 \\u2014 unicode\"}\r\n"
      "{\"text\": \"\"}\n"  // empty documents are skipped
      "{\"text\": \"last, no trailing newline\"}";
  write_text(dir.file("docs.jsonl"), jsonl);
  write_gzip(dir.file("docs.jsonl.gz"), jsonl);
  const std::vector<std::string> expected = {"first document\nwith two lines",
                                             "caf\xC3\xA9 \xE2\x80\x94 unicode",
                                             "last, no trailing newline"};
  EXPECT_EQ(documents_of(dir.file("docs.jsonl")), expected);
  EXPECT_EQ(documents_of(dir.file("docs.jsonl.gz")), expected);
}

TEST(DataDocuments, LinesLongerThanTheReadBufferStayWhole) {
  TempDir dir;
  const std::string long_text(3'000'000, 'x');  // spans several 1 MiB reads
  write_gzip(dir.file("long.json.gz"), "{\"text\": \"" + long_text + "\"}\n{\"text\": \"b\"}\n");
  const auto documents = documents_of(dir.file("long.json.gz"));
  ASSERT_EQ(documents.size(), 2u);
  EXPECT_EQ(documents[0], long_text);
  EXPECT_EQ(documents[1], "b");
}

TEST(DataDocuments, PlainTextSplitsOnEndOfTextAndPercentLines) {
  TempDir dir;
  write_text(dir.file("stories.txt"),
             "Once upon a time.\nThe end.\n<|endoftext|>\n<|endoftext|>\nSecond story.\n"
             "<|endoftext|>\n");
  EXPECT_EQ(documents_of(dir.file("stories.txt")),
            (std::vector<std::string>{"Once upon a time.\nThe end.", "Second story."}));

  write_text(dir.file("fortunes"), "A fortune.\n%\nAnother\n  fortune.\n%\n");
  EXPECT_EQ(documents_of(dir.file("fortunes")),
            (std::vector<std::string>{"A fortune.", "Another\n  fortune."}));

  write_gzip(dir.file("fortunes.gz"), "A fortune.\r\n%\r\nAnother\r\n");
  EXPECT_EQ(documents_of(dir.file("fortunes.gz")),
            (std::vector<std::string>{"A fortune.", "Another"}));

  // No separator: the whole file is one document; "%" inside a line is not a separator.
  write_text(dir.file("book.txt"), "Chapter 1\n\n100% true.\n");
  EXPECT_EQ(documents_of(dir.file("book.txt")),
            (std::vector<std::string>{"Chapter 1\n\n100% true."}));
}

TEST(DataDocuments, MalformedJsonNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir.file("bad.jsonl");
  write_text(path, "{\"text\": \"ok\"}\n{\"text\": \"unterminated\n");
  EXPECT_NE(error_of([&] { documents_of(path); }).find(path + ":2"), std::string::npos);

  write_text(path, "{\"url\": \"no text here\"}\n");
  const std::string missing = error_of([&] { documents_of(path); });
  EXPECT_NE(missing.find(path + ":1"), std::string::npos) << missing;
  EXPECT_NE(missing.find("text"), std::string::npos) << missing;

  write_text(path, "{\"text\": \"ok\"}\n[1, 2]\n");
  EXPECT_NE(error_of([&] { documents_of(path); }).find(path + ":2"), std::string::npos);
}

TEST(DataDocuments, MissingFileIsNamed) {
  TempDir dir;
  const std::string path = dir.file("absent.json");
  EXPECT_NE(error_of([&] { documents_of(path); }).find(path), std::string::npos);
  EXPECT_NE(error_of([&] { expand_input_paths({path}); }).find(path), std::string::npos);
}

TEST(DataDocuments, DirectoriesExpandSortedWithoutHiddenFiles) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("sub"));
  std::filesystem::create_directories(dir.file(".git"));
  write_text(dir.file("b.txt"), "b");
  write_text(dir.file("sub/a.txt"), "a");
  write_text(dir.file("a.txt"), "a");
  write_text(dir.file(".hidden"), "h");
  write_text(dir.file(".git/config"), "g");
  const auto files = expand_input_paths({dir.path(), dir.file("b.txt")});
  EXPECT_EQ(files, (std::vector<std::string>{dir.file("a.txt"), dir.file("b.txt"),
                                             dir.file("sub/a.txt"), dir.file("b.txt")}));
}

TEST(DataDocuments, InputsDigestTracksPathSizeAndMtime) {
  TempDir dir;
  write_text(dir.file("a.txt"), "hello");
  write_text(dir.file("b.txt"), "hello");
  const std::string digest = inputs_digest({dir.file("a.txt")}, "salt");
  EXPECT_EQ(digest.size(), 16u);
  EXPECT_EQ(inputs_digest({dir.file("a.txt")}, "salt"), digest);
  EXPECT_NE(inputs_digest({dir.file("a.txt")}, "other salt"), digest);
  EXPECT_NE(inputs_digest({dir.file("b.txt")}, "salt"), digest);  // same bytes, other path
  EXPECT_NE(inputs_digest({dir.file("a.txt"), dir.file("b.txt")}, "salt"), digest);

  // Same size, new mtime: still a different input.
  const auto mtime = std::filesystem::last_write_time(dir.file("a.txt"));
  write_text(dir.file("a.txt"), "HELLO");
  std::filesystem::last_write_time(dir.file("a.txt"), mtime + std::chrono::seconds(1));
  EXPECT_NE(inputs_digest({dir.file("a.txt")}, "salt"), digest);
}

}  // namespace
}  // namespace relora::data
