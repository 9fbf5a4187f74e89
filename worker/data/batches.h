// Packing a token stream into fixed blocks, a deterministic per-epoch shuffle, and the split of
// every optimizer step's global batch across data-parallel ranks and accumulation micro-steps.
//
// The order of samples is a property of the job (seed, block count), not of the world size: the
// global batch of step s is samples [s*G, (s+1)*G) of the sample stream, G = micro_batch *
// grad_accum * world. Micro-step k of rank r takes the slice starting at (k*world + r)*micro_batch.
// So 2 ranks x accumulation 1 see exactly the samples 1 rank x accumulation 2 sees, and within an
// epoch every block goes to exactly one (rank, micro-step).
#pragma once

#include <cstdint>
#include <vector>

namespace relora::data {

// Blocks [first_block, first_block + num_blocks) of `seq_len` tokens each over a token array.
struct BlockRange {
  const uint32_t* tokens = nullptr;
  int64_t seq_len = 0;
  int64_t first_block = 0;
  int64_t num_blocks = 0;
  const uint32_t* block(int64_t i) const { return tokens + (first_block + i) * seq_len; }
};

// Splits `total_tokens` into train and validation block ranges. validation_fraction in [0, 1):
// the last ceil(fraction * blocks) blocks are validation (at least 1 when fraction > 0).
// Throws std::runtime_error if there are fewer than 2 blocks.
struct TrainValSplit {
  BlockRange train;
  BlockRange validation;
};
TrainValSplit split_blocks(const uint32_t* tokens, uint64_t total_tokens, int64_t seq_len,
                           double validation_fraction);

// Global sample index -> block index: each epoch is a fresh permutation of [0, num_blocks)
// drawn from (seed, epoch) with a portable generator (std::mt19937_64 + Fisher-Yates).
class SampleOrder {
 public:
  SampleOrder(int64_t num_blocks, uint64_t seed);
  int64_t block_of(int64_t global_sample) const;
  int64_t num_blocks() const { return num_blocks_; }

 private:
  const std::vector<int64_t>& permutation(int64_t epoch) const;
  int64_t num_blocks_;
  uint64_t seed_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_;
};

struct BatchGeometry {
  int64_t micro_batch = 1;
  int64_t grad_accum = 1;
  int64_t world = 1;
  int64_t global_batch() const { return micro_batch * grad_accum * world; }
};

// Global sample indices of micro-step `micro_step` of rank `rank` at optimizer step `step`.
std::vector<int64_t> micro_batch_samples(const BatchGeometry& g, int64_t step, int64_t micro_step,
                                         int64_t rank);

// Fills `out` (size micro_batch * seq_len, row-major) with the blocks of those samples.
void gather_blocks(const BlockRange& range, const SampleOrder& order,
                   const std::vector<int64_t>& samples, std::vector<int64_t>& out);

}  // namespace relora::data
