// The dry-run estimate (common/memory_estimate.h) from specs alone: parameter counts of the presets,
// how dtype, mode and sharding move the bytes, and the figures for 7b. The estimate against
// measured peaks is tests/bench/estimate_vs_measured_test.sh.
#include "common/memory_estimate.h"

#include <gtest/gtest.h>

#include "common/job_spec.h"

namespace relora {
namespace {

constexpr double kGiB = 1073741824.0;

v1::JobSpec job(const std::string& preset, const std::string& mode, const std::string& dtype,
                const std::string& extra_training = "", const std::string& cluster = "") {
  std::string relora = "{mode: " + mode + (mode == "full" ? "}" : ", rank: 128, dropout: 0.0, cycle_steps: 50}");
  auto spec = parse_job_spec_yaml("name: e\nmodel: {preset: " + preset +
                                      "}\ndata: {train: [x.txt], seq_len: 256, tokenizer_vocab_size: 32100}\n"
                                      "training: {steps: 100, micro_batch_size: 1, dtype: " + dtype + extra_training +
                                      "}\nrelora: " + relora + "\n" + cluster,
                                  "e.yaml");
  resolve_job_spec(spec);
  validate_job_spec(spec);
  return spec;
}

TEST(MemoryEstimate, CountsThe1b3PresetAsTheTrainerDoes) {
  const auto e = estimate_memory(job("1b3", "relora", "bf16"));
  // 24 x (4 x 2048^2 + 3 x 2048 x 5461) projections + 2 x 32100 x 2048 + 49 x 2048 norms.
  EXPECT_EQ(e.frozen_parameters, 1207910400);
  EXPECT_EQ(e.parameters, 1207910400 + 2 * 32100 * 2048 + 49 * 2048);
  EXPECT_NEAR(e.trainable_parameters / 1e6, 251.1, 0.1);  // the Trainer's count (docs/benchmarks.md)
  // The frozen W in bf16, everything that trains in fp32 with two moments.
  EXPECT_EQ(e.weight_bytes, 2 * e.frozen_parameters + 4 * e.trainable_parameters);
  EXPECT_EQ(e.gradient_bytes, 4 * e.trainable_parameters);
  EXPECT_EQ(e.optimizer_bytes, 8 * e.trainable_parameters);
  const auto fp32 = estimate_memory(job("1b3", "relora", "fp32"));
  EXPECT_EQ(fp32.weight_bytes - e.weight_bytes, 2 * e.frozen_parameters);
  // The CPU memory target (measured: docs/benchmarks.md) holds with activation checkpointing.
  EXPECT_LT(estimate_memory(job("1b3", "relora", "bf16", ", activation_checkpointing: true")).peak_bytes, 7.0 * kGiB);
}

TEST(MemoryEstimate, ShardingCheckpointingAndModeMoveTheRightTerms) {
  const auto one = estimate_memory(job("350m", "relora", "bf16"));
  const auto four = estimate_memory(job("350m", "relora", "bf16", "", "cluster: {workers: 4, shard_optimizer: true, shard_frozen_weights: true}"));
  EXPECT_EQ(four.world, 4);
  EXPECT_EQ(four.optimizer_bytes, one.optimizer_bytes / 4);
  EXPECT_EQ(four.gradient_bytes, one.gradient_bytes);
  EXPECT_EQ(four.weight_bytes - 4 * four.trainable_parameters, (one.weight_bytes - 4 * one.trainable_parameters) / 4);
  EXPECT_GT(four.flops_per_step, 3.9 * one.flops_per_step);
  const auto checkpointed = estimate_memory(job("350m", "relora", "bf16", ", activation_checkpointing: true"));
  EXPECT_LT(checkpointed.activation_bytes * 2, one.activation_bytes);  // the autocast casts stay
  const auto full = estimate_memory(job("350m", "full", "fp32"));
  EXPECT_EQ(full.trainable_parameters, full.parameters);
  EXPECT_EQ(full.optimizer_bytes, 8 * full.parameters);
  EXPECT_GT(full.flops_per_token, one.flops_per_token);  // no weight gradient for a frozen W
}

// The statement for one GPU: ReLoRA 7b (r = 128) fits 40 GB, full-rank 7b needs over 100 GB.
TEST(MemoryEstimate, SevenBFitsFortyGigabytesInReloraButNotFullRank) {
  const auto relora = estimate_memory(job("7b", "relora", "bf16"), /*cuda=*/true);
  const auto full = estimate_memory(job("7b", "full", "bf16"), /*cuda=*/true);
  EXPECT_NEAR(relora.parameters / 1e9, 6.74, 0.01);
  EXPECT_LT(relora.peak_bytes, 40e9);
  EXPECT_GT(full.peak_bytes, 100e9);
  const std::string text = describe_memory_estimate(full, static_cast<int64_t>(80e9), "cuda:0");
  EXPECT_NE(text.find("does NOT fit: short by"), std::string::npos) << text;
}

}  // namespace
}  // namespace relora
