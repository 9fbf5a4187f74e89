// How optimizer state is stored in checkpoints, so that one written on any number of ranks, by
// a replicated or a sharded optimizer, resumes on any other.
//
// Keys (safetensors names):
//   optim/<name>/step                 the parameter's AdamW step counter (int64 [1]), state file
//   optim/<name>/exp_avg              a whole moment, the parameter's shape
//   optim/<name>/exp_avg@<offset>     a piece: the parameter's flat elements from <offset>, 1-D
//   (and the same for exp_avg_sq)
// A replicated optimizer writes whole moments into the state file (rank 0); a sharded one writes
// each rank's pieces into that rank's shard file. A resume lists the ranges it now holds and fills
// each from whatever saved pieces overlap it, reading one file at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "worker/train/checkpoint.h"
#include "worker/train/safetensors.h"
#include "worker/train/tensor_pieces.h"

namespace relora::train {

std::string step_key(const std::string& name);
std::string moment_key(const std::string& name, const char* moment);                  // whole
std::string moment_key(const std::string& name, const char* moment, int64_t offset);  // piece
inline constexpr const char* kExpAvg = "exp_avg";
inline constexpr const char* kExpAvgSq = "exp_avg_sq";

// A range of a parameter's flat elements that a resume must fill: [offset, offset + numel of
// the targets). The targets are 1-D views of the live moments.
struct MomentRange {
  std::string name;
  int64_t offset = 0;
  torch::Tensor exp_avg;
  torch::Tensor exp_avg_sq;
  int64_t filled = 0;  // elements filled so far (saved pieces never overlap)
};

// Fills every range from a checkpoint: its state file, then each of its shard files (read and
// released one at a time). Throws naming the checkpoint and the first range not completely
// covered by saved pieces.
void load_moment_ranges(const Checkpoint& ckpt, std::vector<MomentRange>& ranges);

// The step counter of `name` in the checkpoint's state file. Throws naming it when missing.
int64_t load_step_counter(const Checkpoint& ckpt, const std::string& name);

}  // namespace relora::train
