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

std::string CheckpointStore::staging_dir(int64_t step) const {
  return dir_ + "/." + step_dir_name(step) + ".tmp";
}

void CheckpointStore::begin(int64_t step) {
  fs::create_directories(dir_);
  // Leftovers of saves that crashed before their commit (one committer per store: rank 0 of the
  // job, which is here, so none of them is still being written).
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string leftover = entry.path().filename().string();
    if (leftover.rfind(".step-", 0) == 0 && leftover.find(".tmp") != std::string::npos) {
      spdlog::info("removing {}: an interrupted checkpoint save", entry.path().string());
      fs::remove_all(entry.path());
    }
  }
  fs::create_directories(staging_dir(step));
}

std::string CheckpointStore::shard_name(int rank) {
  char name[64];
  std::snprintf(name, sizeof(name), "optim-rank-%05d.safetensors", rank);
  return name;
}

ShardFile CheckpointStore::write_shard(int64_t step, int rank, const NamedTensors& tensors) const {
  const std::string name = shard_name(rank);
  const std::string path = staging_dir(step) + "/" + name;
  if (!fs::is_directory(staging_dir(step)))
    throw std::runtime_error(staging_dir(step) + ": the checkpoint's staging directory is missing (not begun, or "
                             "not on a filesystem every rank reaches)");
  write_safetensors(path, tensors);
  fsync_path(path);
  const FileDigest digest = digest_file(path);
  return {name, digest.bytes, digest.crc};
}

std::string CheckpointStore::save(int64_t step, const nlohmann::json& meta, const NamedTensors& tensors,
                                  const std::vector<ShardFile>& shards) {
  if (shards.empty()) begin(step);
  const std::string name = step_dir_name(step);
  const std::string final_dir = dir_ + "/" + name;
  const std::string tmp_dir = staging_dir(step);

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
  full["shards"] = nlohmann::json::array();
  for (const auto& shard : shards) {
    if (!fs::exists(tmp_dir + "/" + shard.name)) throw std::runtime_error(tmp_dir + "/" + shard.name + ": missing");
    full["files"][shard.name] = {{"bytes", shard.bytes}, {"crc32", shard.crc32}};
    full["shards"].push_back(shard.name);
  }
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
  const auto files = meta.find("files");
  // Every file meta.json lists must be there with its recorded size and CRC-32.
  const auto verify = [&](const std::string& name) {
    std::optional<uint64_t> expected_bytes, expected_crc;
    if (files != meta.end() && files->is_object()) {
      if (const auto f = files->find(name); f != files->end() && f->is_object()) {
        expected_bytes = unsigned_field(*f, "bytes", std::numeric_limits<uint64_t>::max());
        expected_crc = unsigned_field(*f, "crc32", std::numeric_limits<uint32_t>::max());
      }
    }
    if (!expected_bytes || !expected_crc)
      throw std::runtime_error(meta_path + ": files." + name +
                               " must record the file's size and CRC-32 (bytes, crc32: non-negative integers)");
    const std::string file_path = dir + "/" + name;
    if (!fs::exists(file_path)) throw std::runtime_error(file_path + ": missing");
    const FileDigest digest = digest_file(file_path);
    if (digest.bytes != *expected_bytes)
      throw std::runtime_error(file_path + ": size " + std::to_string(digest.bytes) + " bytes, expected " +
                               std::to_string(*expected_bytes) + " (truncated?)");
    if (digest.crc != *expected_crc) throw std::runtime_error(file_path + ": checksum mismatch (file is corrupt)");
    return file_path;
  };
  const auto step = unsigned_field(meta, "step", static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
  if (!step) throw std::runtime_error(meta_path + ": step is missing or not a non-negative integer");
  verify(kStateFile);
  std::vector<std::string> shard_files;
  if (const auto shards = meta.find("shards"); shards != meta.end()) {
    if (!shards->is_array()) throw std::runtime_error(meta_path + ": shards is not a list of file names");
    for (const auto& shard : *shards) {
      if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos ||
          shard.get<std::string>().rfind("optim-rank-", 0) != 0)
        throw std::runtime_error(meta_path + ": shards lists a name that is not a shard file: " + shard.dump());
      shard_files.push_back(verify(shard.get<std::string>()));
    }
  }

  Checkpoint ckpt;
  ckpt.step = static_cast<int64_t>(*step);
  ckpt.meta = std::move(meta);
  ckpt.state = read_safetensors(state_path);
  ckpt.path = dir;
  ckpt.shard_files = std::move(shard_files);
  return ckpt;
}

}  // namespace relora::train
