// The fixed checkpoint state the checkpoint fuzz target pairs with each fuzzed meta.json, shared
// with make_seeds so that the seed manifests carry its true size and CRC-32.
#pragma once

#include "worker/train/safetensors.h"

namespace relora::fuzz {

inline train::NamedTensors checkpoint_fixture_tensors() {
  return {{"model/w", torch::full({2, 3}, 1.5f)},
          {"optim/w/exp_avg", torch::zeros({2, 3})},
          {"optim/w/step", torch::full({}, 7, torch::kInt64)},
          {"rng/cpu", torch::arange(5, torch::kUInt8)}};
}

}  // namespace relora::fuzz
