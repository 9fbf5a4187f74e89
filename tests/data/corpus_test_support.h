// A small multi-format corpus and a tokenizer for the tokenize tests, made by the tests
// themselves (synthetic text, a 512-piece unigram model cached in the build tree), so that they
// run in every clone.
#pragma once

#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/synthetic_text.h"
#include "tests/test_paths.h"
#include "worker/data/tokenizer.h"

namespace relora::testing {

// The synthetic text cut into documents of a few paragraphs each, `copies` times over.
inline std::vector<std::string> synthetic_documents(int copies = 1) {
  std::ifstream in(synthetic_text_file(), std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> docs;
  for (int c = 0; c < copies; ++c) {
    size_t start = 0, paragraphs = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] != '\n' || ++paragraphs % (2 + (docs.size() % 4)) != 0) continue;
      docs.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return docs;
}

inline std::string jsonl(const std::vector<std::string>& docs) {
  std::string out;
  for (const auto& d : docs) out += nlohmann::json{{"text", d}}.dump() + "\n";
  return out;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr || gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) != static_cast<int>(bytes.size()))
    throw std::runtime_error("cannot write " + path);
  gzclose(f);
}

// Two frames, as multi-threaded zstd writes them: readers must go on after the first.
inline void write_zstd(const std::string& path, const std::string& bytes) {
  std::string out;
  const size_t half = bytes.size() / 2;
  for (const std::string part : {bytes.substr(0, half), bytes.substr(half)}) {
    std::string frame(ZSTD_compressBound(part.size()), '\0');
    const size_t n = ZSTD_compress(frame.data(), frame.size(), part.data(), part.size(), 3);
    if (ZSTD_isError(n)) throw std::runtime_error(ZSTD_getErrorName(n));
    out.append(frame.data(), n);
  }
  write_bytes(path, out);
}

// Plain text with separators, JSON lines, gzip and zstd JSON lines: the documents split four
// ways into `dir`.
inline void write_mixed_corpus(const std::string& dir, const std::vector<std::string>& docs) {
  std::filesystem::create_directories(dir);
  const size_t q = docs.size() / 4;
  std::string txt;
  for (size_t i = 0; i < q; ++i) txt += docs[i] + "\n<|endoftext|>\n";
  write_bytes(dir + "/a.txt", txt);
  write_bytes(dir + "/b.jsonl", jsonl({docs.begin() + q, docs.begin() + 2 * q}));
  write_gzip(dir + "/c.jsonl.gz", jsonl({docs.begin() + 2 * q, docs.begin() + 3 * q}));
  write_zstd(dir + "/d.jsonl.zst", jsonl({docs.begin() + 3 * q, docs.end()}));
}

// A 512-piece unigram model of the synthetic text, trained once per build tree.
inline std::string synthetic_tokenizer() {
  return data::Tokenizer::train_or_load_cached({synthetic_text_file()}, 512, binary_path("test-cache"),
                                               data::TokenizerModelType::kUnigram)
      .model_path();
}

// Every file of `dir` by name, with its bytes.
inline std::map<std::string, std::string> dir_contents(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    files[e.path().filename().string()] = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  return files;
}

}  // namespace relora::testing
