// Checkpoints as a commit protocol, so that a crash at any moment leaves the previous checkpoint
// valid and a half-written one is never mistaken for a complete one.
//
// Layout: <dir>/step-<8 digits>/ holds
//   state.safetensors  every tensor needed to resume (weights incl. un-merged factors, optimizer
//                      step counters and, unless sharded, moments)
//   meta.json          format/version, counters, data position, the job spec, and the size and
//                      CRC-32 of state.safetensors
//   optim-rank-<5 digits>.safetensors   sharded optimizers only: each rank's own moments, written
//                      by that rank (no gather; see optimizer_state.h)
//   COMPLETE           written last; a directory without it is ignored
// Save: write into a hidden staging directory, fsync files and directory, rename to the final
// name, write COMPLETE, fsync; then delete all but the newest `keep` complete checkpoints. With
// shard files: rank 0 clears the staging directory (begin), every rank writes its file
// (write_shard), and rank 0 commits with every file's size and CRC-32 recorded in meta.json. The
// checkpoint directory must be one filesystem that every rank reaches (as for elastic restarts).
// Load: verify size and checksum; a corrupt checkpoint is an error naming the file, and
// load_latest() falls back to the previous complete one (saying which it skipped and why).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/train/safetensors.h"

namespace relora::train {

struct Checkpoint {
  int64_t step = 0;
  nlohmann::json meta;  // trainer-defined fields (counters, data position, spec)
  SafetensorsFile state;
  std::string path;  // the step directory
  std::vector<std::string> shard_files;  // verified paths of the ranks' shard files, in rank order
};

struct ShardFile {
  std::string name;  // inside the step directory
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int keep);

  // Commits a checkpoint for `step` and prunes old ones. Returns the step directory. `shards`:
  // the files the ranks wrote with write_shard() after begin(step); none: begin() is done here.
  std::string save(int64_t step, const nlohmann::json& meta, const NamedTensors& tensors,
                   const std::vector<ShardFile>& shards = {});
  // Rank 0, before any rank writes a shard: removes interrupted saves, creates the staging
  // directory of `step`.
  void begin(int64_t step);
  // Any rank, after begin(step): writes and fsyncs this rank's shard file.
  ShardFile write_shard(int64_t step, int rank, const NamedTensors& tensors) const;
  // "optim-rank-<5 digits>.safetensors"
  static std::string shard_name(int rank);

  // Newest checkpoint that verifies; nullopt when there is none. Corrupt ones are skipped and
  // described in `skipped` (one line each) so the caller can log or report them.
  std::optional<Checkpoint> load_latest(std::vector<std::string>* skipped = nullptr) const;

  // Complete checkpoint directories, oldest first.
  std::vector<std::string> list_complete() const;

  const std::string& dir() const { return dir_; }

 private:
  std::string staging_dir(int64_t step) const;
  std::string dir_;
  int keep_;
};

// Loads and verifies one checkpoint directory (or, given a store directory, its newest complete
// checkpoint). Throws std::runtime_error naming the file and what is wrong.
Checkpoint load_checkpoint(const std::string& path);

}  // namespace relora::train
