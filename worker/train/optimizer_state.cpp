#include "worker/train/optimizer_state.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include <torch/torch.h>

namespace relora::train {
namespace {

constexpr const char* kPrefix = "optim/";

// name -> moment ("exp_avg" / "exp_avg_sq") -> pieces
using PieceIndex = std::map<std::string, std::map<std::string, std::vector<FlatPiece>>>;

PieceIndex index_pieces(const SafetensorsFile& file, const std::string& where) {
  PieceIndex index;
  for (const auto& [key, tensor] : file.tensors) {
    if (key.rfind(kPrefix, 0) != 0) continue;
    const PieceKey parsed = parse_piece_key(key, where);
    const size_t slash = parsed.base.rfind('/');
    if (slash == std::string::npos || slash < 6) continue;
    const std::string name = parsed.base.substr(6, slash - 6);
    const std::string moment = parsed.base.substr(slash + 1);
    if (moment != kExpAvg && moment != kExpAvgSq) continue;  // step counters
    index[name][moment].push_back({parsed.offset, tensor.reshape({-1})});
  }
  return index;
}

void fill_from(const SafetensorsFile& file, const std::string& where, std::vector<MomentRange>& ranges) {
  const PieceIndex index = index_pieces(file, where);
  torch::NoGradGuard no_grad;
  for (auto& r : ranges) {
    const auto it = index.find(r.name);
    if (it == index.end()) continue;
    const auto m = it->second.find(kExpAvg), v = it->second.find(kExpAvgSq);
    if (m == it->second.end() || v == it->second.end())
      throw std::runtime_error(where + ": optimizer state of '" + r.name + "' has only one of its two moments");
    const int64_t a = fill_from_pieces(m->second, r.offset, r.exp_avg);
    const int64_t b = fill_from_pieces(v->second, r.offset, r.exp_avg_sq);
    if (a != b)
      throw std::runtime_error(where + ": optimizer state of '" + r.name + "': its two moments cover different elements");
    r.filled += a;
  }
}

}  // namespace

std::string step_key(const std::string& name) { return kPrefix + name + "/step"; }

std::string moment_key(const std::string& name, const char* moment) { return kPrefix + name + "/" + moment; }

std::string moment_key(const std::string& name, const char* moment, int64_t offset) {
  return piece_key(moment_key(name, moment), offset);
}

void load_moment_ranges(const Checkpoint& ckpt, std::vector<MomentRange>& ranges) {
  for (auto& r : ranges) r.filled = 0;
  fill_from(ckpt.state, ckpt.path, ranges);
  for (const auto& path : ckpt.shard_files) {
    if (std::all_of(ranges.begin(), ranges.end(), [](const MomentRange& r) { return r.filled == r.exp_avg.numel(); }))
      break;  // this rank's state is complete: the other ranks' files are not needed
    fill_from(read_safetensors(path), path, ranges);
  }
  for (const auto& r : ranges) {
    if (r.filled != r.exp_avg.numel())
      throw std::runtime_error(ckpt.path + ": optimizer state for '" + r.name + "' is missing (elements " +
                               std::to_string(r.offset) + ".." + std::to_string(r.offset + r.exp_avg.numel()) +
                               ": " + std::to_string(r.filled) + " of " + std::to_string(r.exp_avg.numel()) +
                               " found)");
  }
}

int64_t load_step_counter(const Checkpoint& ckpt, const std::string& name) {
  const auto it = ckpt.state.tensors.find(step_key(name));
  if (it == ckpt.state.tensors.end() || it->second.numel() != 1)
    throw std::runtime_error(ckpt.path + ": optimizer state for '" + name + "' is missing (no step counter)");
  return it->second.to(torch::kInt64).item<int64_t>();
}

}  // namespace relora::train
