#include "worker/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>

#include <spdlog/spdlog.h>
#include <zlib.h>

#include "common/failpoint.h"
#include "common/text_file.h"

namespace fs = std::filesystem;

namespace relora::train {
namespace {

constexpr const char* kStateFile = "state.safetensors";
constexpr const char* kMetaFile = "meta.json";
constexpr const char* kCompleteFile = "COMPLETE";
constexpr const char* kFormat = "relora-checkpoint";
constexpr int kVersion = 1;

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error(path + ": cannot open to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(path + ": fsync failed: " + std::strerror(errno));
}

struct FileDigest {
  uint64_t bytes = 0;
  uint32_t crc = 0;
};

FileDigest digest_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  FileDigest d;
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n <= 0) break;
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<z_size_t>(n));
    d.bytes += static_cast<uint64_t>(n);
  }
  d.crc = static_cast<uint32_t>(crc);
  return d;
}

bool is_step_dir(const fs::path& p) {
  const auto name = p.filename().string();
  return name.rfind("step-", 0) == 0 && fs::is_directory(p);
}

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, int keep) : dir_(std::move(dir)), keep_(std::max(1, keep)) {}

std::string CheckpointStore::save(int64_t step, const nlohmann::json& meta, const NamedTensors& tensors) {
  fs::create_directories(dir_);
  const std::string name = step_dir_name(step);
  const std::string final_dir = dir_ + "/" + name;
  const std::string tmp_dir = dir_ + "/." + name + ".tmp-" + std::to_string(::getpid());
  // Leftovers of saves that crashed before their commit (one writer per store: rank 0 of the
  // job, so none of them is still being written).
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string leftover = entry.path().filename().string();
    if (leftover.rfind(".step-", 0) == 0 && leftover.find(".tmp-") != std::string::npos) {
      spdlog::info("removing {}: an interrupted checkpoint save", entry.path().string());
      fs::remove_all(entry.path());
    }
  }
  fs::create_directories(tmp_dir);

  const std::string state_path = tmp_dir + "/" + kStateFile;
  write_safetensors(state_path, tensors);
  // The reliability tests crash here: state written, checkpoint not yet committed.
  crash_at_failpoint("checkpoint-save", step);
  fsync_path(state_path);
  const FileDigest digest = digest_file(state_path);

  nlohmann::json full = meta;
  full["format"] = kFormat;
  full["version"] = kVersion;
  full["step"] = step;
  full["files"][kStateFile] = {{"bytes", digest.bytes}, {"crc32", digest.crc}};
  const std::string meta_path = tmp_dir + "/" + kMetaFile;
  write_text_file(meta_path, full.dump(2));
  fsync_path(meta_path);
  fsync_path(tmp_dir);

  // A checkpoint of the same step may exist (re-saved after a resume): replace it whole.
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(dir_);
  const std::string complete_path = final_dir + "/" + kCompleteFile;
  write_text_file(complete_path, std::to_string(digest.crc) + "\n");
  fsync_path(complete_path);
  fsync_path(final_dir);

  auto complete = list_complete();
  while (static_cast<int>(complete.size()) > keep_) {
    fs::remove_all(complete.front());
    complete.erase(complete.begin());
  }
  return final_dir;
}

std::vector<std::string> CheckpointStore::list_complete() const {
  std::vector<std::string> out;
  if (!fs::is_directory(dir_)) return out;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (is_step_dir(entry.path()) && fs::exists(entry.path() / kCompleteFile))
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort in step order
  return out;
}

std::optional<Checkpoint> CheckpointStore::load_latest(std::vector<std::string>* skipped) const {
  auto complete = list_complete();
  for (auto it = complete.rbegin(); it != complete.rend(); ++it) {
    try {
      return load_checkpoint(*it);
    } catch (const std::exception& e) {
      spdlog::warn("skipping checkpoint {}: {}", *it, e.what());
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

Checkpoint load_checkpoint(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(path + ": checkpoint not found");
  if (fs::is_directory(path) && !fs::exists(fs::path(path) / kMetaFile)) {
    // A store directory: take its newest complete checkpoint.
    CheckpointStore store(path, 1);
    auto complete = store.list_complete();
    if (complete.empty()) throw std::runtime_error(path + ": holds no complete checkpoint");
    return load_checkpoint(complete.back());
  }
  const std::string dir = fs::is_directory(path) ? path : fs::path(path).parent_path().string();
  const std::string meta_path = dir + "/" + kMetaFile;
  const std::string state_path = dir + "/" + kStateFile;
  if (!fs::exists(dir + "/" + kCompleteFile))
    throw std::runtime_error(dir + ": checkpoint is incomplete (no COMPLETE marker)");

  nlohmann::json meta;
  try {
    std::ifstream in(meta_path);
    if (!in) throw std::runtime_error("cannot open");
    meta = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error(meta_path + ": unreadable checkpoint metadata: " + e.what());
  }
  // Every field is checked for its type before use: nlohmann's value()/get() throw their own
  // exceptions (with neither the file nor the field named) on a wrong type, and convert
  // out-of-range floats with undefined behaviour (found by tests/fuzz/fuzz_checkpoint).
  if (!meta.is_object()) throw std::runtime_error(meta_path + ": checkpoint metadata is not a JSON object");
  const auto format = meta.find("format");
  const auto version = meta.find("version");
  if (format == meta.end() || *format != kFormat || version == meta.end() || !version->is_number_integer() ||
      *version != kVersion)
    throw std::runtime_error(meta_path + ": not a relora checkpoint of version " + std::to_string(kVersion));
  // A non-negative integer field of `obj` no larger than `max`, or nullopt.
  const auto unsigned_field = [](const nlohmann::json& obj, const char* key, uint64_t max) -> std::optional<uint64_t> {
    const auto it = obj.find(key);
    if (it == obj.end() || !it->is_number_unsigned() || it->get<uint64_t>() > max) return std::nullopt;
    return it->get<uint64_t>();
  };
  std::optional<uint64_t> expected_bytes, expected_crc;
  if (const auto files = meta.find("files"); files != meta.end() && files->is_object()) {
    if (const auto state = files->find(kStateFile); state != files->end() && state->is_object()) {
      expected_bytes = unsigned_field(*state, "bytes", std::numeric_limits<uint64_t>::max());
      expected_crc = unsigned_field(*state, "crc32", std::numeric_limits<uint32_t>::max());
    }
  }
  if (!expected_bytes || !expected_crc)
    throw std::runtime_error(meta_path + ": files." + kStateFile +
                             " must record the state's size and CRC-32 (bytes, crc32: non-negative integers)");
  const auto step = unsigned_field(meta, "step", static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (!step) throw std::runtime_error(meta_path + ": step is missing or not a non-negative integer");
  if (!fs::exists(state_path)) throw std::runtime_error(state_path + ": missing");
  const FileDigest digest = digest_file(state_path);
  if (digest.bytes != *expected_bytes)
    throw std::runtime_error(state_path + ": size " + std::to_string(digest.bytes) + " bytes, expected " +
                             std::to_string(*expected_bytes) + " (truncated?)");
  if (digest.crc != *expected_crc)
    throw std::runtime_error(state_path + ": checksum mismatch (file is corrupt)");

  Checkpoint ckpt;
  ckpt.step = static_cast<int64_t>(*step);
  ckpt.meta = std::move(meta);
  ckpt.state = read_safetensors(state_path);
  ckpt.path = dir;
  return ckpt;
}

}  // namespace relora::train
