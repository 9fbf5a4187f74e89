#include "worker/data/token_index.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/text_file.h"

namespace fs = std::filesystem;

namespace relora::data {
namespace {

using ordered_json = nlohmann::ordered_json;

// An index is a small file; a huge ".json" named in data.train is a corpus, never read whole.
constexpr uintmax_t kMaxIndexBytes = 64u << 20;

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

uint64_t TokenIndex::documents() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.documents;
  return n;
}

uint64_t TokenIndex::tokens() const {
  uint64_t n = 0;
  for (const auto& s : shards) n += s.tokens;
  return n;
}

std::string token_index_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return (fs::path(path) / kTokenIndexName).string();
  return path;
}

bool is_token_index(const std::string& path) {
  const std::string file = token_index_file(path);
  std::error_code ec;
  if (!fs::is_regular_file(file, ec) || fs::file_size(file, ec) > kMaxIndexBytes) return false;
  // The format tag comes first in every index we write; a JSON-lines corpus starts with text.
  std::ifstream in(file, std::ios::binary);
  std::string head(256, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  return head.find(std::string("\"format\": \"") + kTokenIndexFormat + "\"") != std::string::npos;
}

TokenIndex read_token_index(const std::string& index_file) {
  auto fail = [&](const std::string& what) { return std::runtime_error("token index " + index_file + ": " + what); };
  std::ifstream in(index_file, std::ios::binary);
  if (!in) throw fail("cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    if (j.at("format").get<std::string>() != kTokenIndexFormat) throw fail("not a relora token index");
    if (j.at("version").get<int>() != 1) throw fail("unsupported version " + j.at("version").dump());
    TokenIndex index;
    index.complete = j.at("complete").get<bool>();
    index.vocab_size = j.at("vocab_size").get<uint32_t>();
    index.eos_id = j.at("eos_id").get<int32_t>();
    index.tokenizer_model = j.at("tokenizer").at("model").get<std::string>();
    index.tokenizer_fingerprint = j.at("tokenizer").at("fingerprint").get<std::string>();
    index.run_key = j.at("run_key").get<std::string>();
    index.shard_tokens = j.at("shard_tokens").get<uint64_t>();
    for (const auto& s : j.at("shards")) {
      ShardEntry e;
      e.file = s.at("file").get<std::string>();
      if (e.file.empty() || fs::path(e.file).has_parent_path()) throw fail("shard file '" + e.file + "' is not a plain name");
      e.documents = s.at("documents").get<uint64_t>();
      e.tokens = s.at("tokens").get<uint64_t>();
      e.crc32 = s.at("crc32").get<uint32_t>();
      e.next_input = s.at("next").at("input").get<uint64_t>();
      e.next_document = s.at("next").at("document").get<uint64_t>();
      index.shards.push_back(std::move(e));
    }
    index.inputs = j.at("inputs").get<std::vector<std::string>>();
    if (index.documents() != j.at("documents").get<uint64_t>() || index.tokens() != j.at("tokens").get<uint64_t>()) {
      throw fail("the totals do not match the shards");
    }
    return index;
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("malformed: ") + e.what());
  }
}

void write_token_index(const std::string& index_file, const TokenIndex& index) {
  ordered_json j;
  j["format"] = kTokenIndexFormat;
  j["version"] = 1;
  j["complete"] = index.complete;
  j["vocab_size"] = index.vocab_size;
  j["eos_id"] = index.eos_id;
  j["tokenizer"] = {{"model", index.tokenizer_model}, {"fingerprint", index.tokenizer_fingerprint}};
  j["run_key"] = index.run_key;
  j["shard_tokens"] = index.shard_tokens;
  j["documents"] = index.documents();
  j["tokens"] = index.tokens();
  j["shards"] = ordered_json::array();
  for (const auto& s : index.shards) {
    j["shards"].push_back({{"file", s.file},
                           {"documents", s.documents},
                           {"tokens", s.tokens},
                           {"crc32", s.crc32},
                           {"next", {{"input", s.next_input}, {"document", s.next_document}}}});
  }
  j["inputs"] = index.inputs;
  const std::string temp = index_file + ".tmp." + std::to_string(::getpid());
  write_text_file(temp, j.dump(2) + "\n");
  fsync_path(temp, O_RDONLY);
  if (std::rename(temp.c_str(), index_file.c_str()) != 0) {
    std::remove(temp.c_str());
    throw std::runtime_error("token index " + index_file + ": cannot rename " + temp + " into place");
  }
  const fs::path dir = fs::path(index_file).parent_path();
  fsync_path(dir.empty() ? "." : dir.string(), O_RDONLY | O_DIRECTORY);
}

void append_token_index(const std::string& index_file, TokenStream& stream) {
  const TokenIndex index = read_token_index(index_file);
  if (!index.complete) {
    throw std::runtime_error("token index " + index_file +
                             ": incomplete (relora tokenize was interrupted: run it again to finish)");
  }
  const fs::path dir = fs::path(index_file).parent_path();
  for (const auto& shard : index.shards) {
    // Header and size checks only: the ids are checked as they are read.
    auto file = std::make_shared<const TokenFile>((dir / shard.file).string(), /*verify_checksum=*/false);
    if (file->size() != shard.tokens || file->documents() != shard.documents || file->stored_crc32() != shard.crc32 ||
        file->vocab_size() != index.vocab_size) {
      throw std::runtime_error("token index " + index_file + ": shard " + file->path() +
                               " does not match the index (a different tokenize run, or a partial copy)");
    }
    stream.append(std::move(file));
  }
}

}  // namespace relora::data
