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

#include "worker/data/token_stream.h"

namespace relora::data {

// Blocks [first_block, first_block + num_blocks) of `seq_len` tokens each over a token stream.
// A block may straddle two files of the stream: blocks are cut from the stream, not per file.
struct BlockRange {
  const TokenStream* tokens = nullptr;
  int64_t seq_len = 0;
  int64_t first_block = 0;
  int64_t num_blocks = 0;
  // Copies block i's seq_len ids into `out`.
  void copy_block(int64_t i, int64_t* out) const {
    tokens->copy(static_cast<uint64_t>((first_block + i) * seq_len), static_cast<uint64_t>(seq_len), out);
  }
};

// Splits `total_tokens` into train and validation block ranges. validation_fraction in [0, 1):
// the last ceil(fraction * blocks) blocks are validation (at least 1 when fraction > 0).
// Throws std::runtime_error if there are fewer than 2 blocks.
struct TrainValSplit {
  BlockRange train;
  BlockRange validation;
};
// `tokens` must outlive the ranges.
TrainValSplit split_blocks(const TokenStream& tokens, int64_t seq_len, double validation_fraction);

// Global sample index -> block index: each epoch is a fresh permutation of [0, num_blocks)
// drawn from (seed, epoch) with a portable generator (std::mt19937_64 + Fisher-Yates). A listed
// permutation costs 8 bytes per block, so above kMaxListedBlocks (8 MB of list; about 1 GB of
// tokens at seq_len 256) the permutation is computed per sample instead (a keyed Feistel
// bijection, O(1) memory): a terabyte corpus would otherwise need gigabytes for its sample order.
// Jobs at or below the limit keep the order they always had.
class SampleOrder {
 public:
  static constexpr int64_t kMaxListedBlocks = int64_t{1} << 20;

  SampleOrder(int64_t num_blocks, uint64_t seed);
  int64_t block_of(int64_t global_sample) const;
  int64_t num_blocks() const { return num_blocks_; }

 private:
  const std::vector<int64_t>& permutation(int64_t epoch) const;
  int64_t feistel(int64_t epoch, int64_t i) const;
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
