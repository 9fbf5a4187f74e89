// English-like text that a test writes itself, so that the trainer's exactness tests (exact resume,
// data parallelism, the sharded optimizer, the cluster worker) run in every clone, without
// ../shared/data. Deterministic: the same bytes on every machine and every run.
//
// Made-up words of one to three syllables, drawn with Zipf-like frequencies (log-uniform ranks),
// in capitalised sentences of 5-15 words, a few sentences per paragraph. Enough structure for a
// 512-piece SentencePiece model to train on and for a tiny model's loss to fall; nothing in it
// is real language, which these tests do not need.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "tests/test_paths.h"

namespace relora::testing {

namespace synthetic_detail {

// splitmix64: a portable stream, so the text does not depend on the standard library's engines.
struct Stream {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  int64_t below(int64_t n) { return static_cast<int64_t>(uniform() * static_cast<double>(n)); }
};

inline std::vector<std::string> make_words(Stream& rng, int count) {
  static const char* const kSyllables[] = {
      "ba", "be", "bo", "ca", "co", "da", "de", "di", "do", "fa", "fe", "ga", "go", "ha", "he", "hi",
      "ka", "ko", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe",
      "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "wa", "we",
      "an", "en", "in", "on", "ar", "er", "or", "al", "el", "ish", "ent", "ing", "ous", "th", "st", "nd"};
  constexpr int64_t kCount = sizeof(kSyllables) / sizeof(kSyllables[0]);
  std::vector<std::string> words;
  words.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const int64_t syllables = 1 + (i < 40 ? 0 : rng.below(3));  // frequent words are short
    std::string w;
    for (int64_t s = 0; s < syllables; ++s) w += kSyllables[rng.below(kCount)];
    words.push_back(w);
  }
  return words;
}

inline std::string make_text(size_t bytes) {
  Stream rng{20261204};
  const auto words = make_words(rng, 900);
  const double log_n = std::log(static_cast<double>(words.size()));
  std::string text;
  text.reserve(bytes + 256);
  while (text.size() < bytes) {
    const int64_t sentences = 2 + rng.below(5);
    for (int64_t s = 0; s < sentences; ++s) {
      const int64_t n = 5 + rng.below(11);
      for (int64_t k = 0; k < n; ++k) {
        // Rank r with probability about 1/r (log-uniform), like word frequencies in real text.
        auto r = static_cast<size_t>(std::exp(rng.uniform() * log_n)) - 1;
        std::string w = words[std::min(r, words.size() - 1)];
        if (k == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
        text += w;
        text += k + 1 == n ? (rng.below(6) == 0 ? "? " : ". ") : (rng.below(9) == 0 ? ", " : " ");
      }
    }
    text.back() = '\n';
  }
  return text;
}

}  // namespace synthetic_detail

// The path of the synthetic text (about 400 kB), written once into the build tree's test cache.
// Written under a temporary name and renamed, so that test processes running side by side never
// read a partial file; every writer writes the same bytes.
inline std::string synthetic_text_file() {
  namespace fs = std::filesystem;
  const std::string dir = binary_path("test-cache");
  const std::string path = dir + "/synthetic-text.txt";
  if (fs::exists(path)) return path;
  fs::create_directories(dir);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << synthetic_detail::make_text(400 * 1024);
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
  return path;
}

}  // namespace relora::testing
