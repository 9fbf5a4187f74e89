// Helpers for the GPU tests (label `gpu`): the skip on machines without a CUDA device, a synthetic
// pre-tokenized .tok file (no tokenizer, no ../shared/data: the GPU machine has neither), and a
// tiny job spec that trains on it.
//
// These tests compile in every build (CPU CI included) and skip at run time, in well under a
// second each, when torch::cuda::is_available() is false. On a GPU machine they run through
// scripts/gpu-check.sh (docs/gpu.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "bench/bench_support.h"

namespace relora::gpu_testing {

inline const char* kNoCudaMessage =
    "no CUDA device: torch::cuda::is_available() is false (CPU machine or a LibTorch without CUDA); "
    "GPU tests run on a GPU machine through scripts/gpu-check.sh (docs/gpu.md)";

// Random token ids in [0, vocab), written as a .tok file the trainer reads without a tokenizer.
using bench::write_random_tokens;

struct TinyJob {
  std::string name = "gpu-tiny";
  std::string tok_path;
  std::string checkpoint_dir;
  std::string dtype = "bf16";
  std::string relora = "{mode: full}";
  int64_t steps = 4;
  int64_t micro_batch = 4;
  int64_t grad_accum = 2;
  int64_t workers = 1;
};

// A 2-layer, hidden-64 model over a 512-token vocabulary, sequences of 32 tokens.
inline std::string tiny_job_yaml(const TinyJob& j) {
  return "name: " + j.name + R"(
model: {hidden_size: 64, num_layers: 2, num_heads: 2, intermediate_size: 128, vocab_size: 512}
data:
  train: [")" + j.tok_path + R"("]
  validation_fraction: 0.05
  tokenizer_vocab_size: 512
  seq_len: 32
training:
  steps: )" + std::to_string(j.steps) + R"(
  micro_batch_size: )" + std::to_string(j.micro_batch) + R"(
  grad_accum_steps: )" + std::to_string(j.grad_accum) + R"(
  lr: 0.003
  warmup_steps: 1
  dtype: )" + j.dtype + R"(
  seed: 7
relora: )" + j.relora + R"(
eval: {every_steps: 0, max_tokens: 2048}
checkpoint: {dir: ")" + j.checkpoint_dir + R"(", every_steps: 0, keep: 1}
cluster: {workers: )" + std::to_string(j.workers) + R"(}
)";
}

}  // namespace relora::gpu_testing

// Skips the calling test, quickly and saying why, where no CUDA device can be used.
#define RELORA_REQUIRE_CUDA()                                                            \
  do {                                                                                   \
    if (!torch::cuda::is_available()) GTEST_SKIP() << ::relora::gpu_testing::kNoCudaMessage; \
  } while (0)
