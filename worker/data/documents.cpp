// Documents from JSON-lines shards (C4) and plain text, optionally gzip- or zstd-compressed.
//
// Every file is read through a ByteStream (byte_stream.h), so one line reader serves all
// formats and compressions.
#include "worker/data/documents.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "worker/data/byte_stream.h"

namespace fs = std::filesystem;

namespace relora::data {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Hidden files and folders (".git", ".DS_Store", editor swap files) are never training text.
bool is_hidden(const fs::path& relative) {
  for (const auto& part : relative) {
    const std::string name = part.string();
    if (!name.empty() && name[0] == '.' && name != "." && name != "..") return true;
  }
  return false;
}

// Reads a (possibly compressed) file line by line, without the trailing "\n" / "\r\n".
// Lines of any length are supported: the buffer is scanned, not read with a fixed-size gets.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : stream_(open_byte_stream(path)) {}

  // Bytes of the file consumed, as of the last refill (asking the stream per line would cost a
  // system call per line for gzip).
  uint64_t position() const { return position_; }

  // Returns false at end of file. The view stays valid until the next call.
  bool next(std::string_view& line) {
    while (true) {
      const size_t newline = buffer_.find('\n', pos_);
      if (newline != std::string::npos) {
        line = trim_cr(std::string_view(buffer_).substr(pos_, newline - pos_));
        pos_ = newline + 1;
        return true;
      }
      if (eof_) {
        if (pos_ >= buffer_.size()) return false;
        line = trim_cr(std::string_view(buffer_).substr(pos_));  // last line without "\n"
        pos_ = buffer_.size();
        return true;
      }
      refill();
    }
  }

 private:
  static std::string_view trim_cr(std::string_view s) {
    return (!s.empty() && s.back() == '\r') ? s.substr(0, s.size() - 1) : s;
  }

  void refill() {
    buffer_.erase(0, pos_);  // keep the unfinished line, drop what was consumed
    pos_ = 0;
    const size_t old_size = buffer_.size();
    constexpr size_t kChunk = 1 << 20;
    buffer_.resize(old_size + kChunk);
    const size_t got = stream_->read(buffer_.data() + old_size, kChunk);
    buffer_.resize(old_size + got);
    if (got == 0) eof_ = true;
    position_ = stream_->position();
  }

  std::unique_ptr<ByteStream> stream_;
  uint64_t position_ = 0;
  std::string buffer_;
  size_t pos_ = 0;
  bool eof_ = false;
};

void read_json_records(const std::string& path, const std::function<void(const DocumentRecord&)>& on_record,
                       std::atomic<uint64_t>* bytes_read) {
  LineReader reader(path);
  std::string_view line;
  uint64_t line_number = 0;
  while (reader.next(line)) {
    ++line_number;
    if (bytes_read != nullptr) bytes_read->store(reader.position(), std::memory_order_relaxed);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    on_record(DocumentRecord{line, /*json=*/true, line_number});
  }
}

bool is_separator(std::string_view line) {
  const size_t first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) return false;
  const size_t last = line.find_last_not_of(" \t");
  const std::string_view core = line.substr(first, last - first + 1);
  return core == "<|endoftext|>" || core == "%";
}

void read_plain_text(const std::string& path, const std::function<void(const DocumentRecord&)>& on_record,
                     std::atomic<uint64_t>* bytes_read) {
  LineReader reader(path);
  std::string document;
  // A document of only blank lines is empty too: it is skipped like an empty one.
  auto flush = [&] {
    if (document.find_first_not_of(" \t\n") != std::string::npos) on_record(DocumentRecord{document});
    document.clear();
  };
  std::string_view line;
  bool first_line = true;
  while (reader.next(line)) {
    if (bytes_read != nullptr) bytes_read->store(reader.position(), std::memory_order_relaxed);
    if (is_separator(line)) {
      flush();
      first_line = true;
      continue;
    }
    if (!first_line) document += '\n';
    document.append(line.data(), line.size());
    first_line = false;
  }
  flush();
}

}  // namespace

std::vector<std::string> expand_input_paths(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& path : paths) {
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (ec || !fs::exists(status)) throw std::runtime_error("input path does not exist: " + path);
    if (!fs::is_directory(status)) {
      files.push_back(path);
      continue;
    }
    // Sorted so that the document order, and with it every cache key and sample order, does not
    // depend on the order the file system happens to list entries in.
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(path); it != fs::recursive_directory_iterator();
         ++it) {
      const fs::path relative = fs::relative(it->path(), path);
      if (is_hidden(relative)) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

void read_records(const std::string& path, const std::function<void(const DocumentRecord&)>& on_record,
                  std::atomic<uint64_t>* bytes_read) {
  std::string_view name = path;
  if (ends_with(name, ".gz")) name.remove_suffix(3);
  if (ends_with(name, ".zst")) name.remove_suffix(4);
  if (ends_with(name, ".json") || ends_with(name, ".jsonl")) {
    read_json_records(path, on_record, bytes_read);
  } else {
    read_plain_text(path, on_record, bytes_read);
  }
}

std::string_view record_text(const DocumentRecord& record, const std::string& path, std::string& storage) {
  if (!record.json) return record.bytes;
  const auto where = [&] { return path + ":" + std::to_string(record.line); };
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(record.bytes);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where() + ": not a JSON object: " + e.what());
  }
  if (!object.is_object()) throw std::runtime_error(where() + ": not a JSON object");
  const auto text = object.find("text");
  if (text == object.end() || !text->is_string()) {
    throw std::runtime_error(where() + ": no string field \"text\"");
  }
  storage = std::move(text->get_ref<std::string&>());
  return storage;
}

void read_documents(const std::string& path, const std::function<void(std::string_view)>& on_document,
                    std::atomic<uint64_t>* bytes_read) {
  std::string storage;
  read_records(path, [&](const DocumentRecord& record) {
    const std::string_view text = record_text(record, path, storage);
    if (!text.empty()) on_document(text);
  }, bytes_read);
}

std::string inputs_digest(const std::vector<std::string>& files, const std::string& salt) {
  // FNV-1a 64: a stable, dependency-free hash; collisions only cost a wrong cache hit between
  // two different inputs, which 64 bits make negligible for a local cache.
  uint64_t hash = 14695981039346656037ull;
  auto mix = [&hash](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ull;
    }
    hash ^= 0xff;  // field separator, so ("ab","c") and ("a","bc") differ
    hash *= 1099511628211ull;
  };
  mix(salt);
  for (const auto& file : files) {
    const fs::path absolute = fs::absolute(file).lexically_normal();
    const auto mtime = fs::last_write_time(absolute).time_since_epoch();
    mix(absolute.string());
    mix(std::to_string(fs::file_size(absolute)));
    mix(std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(mtime).count()));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

}  // namespace relora::data
