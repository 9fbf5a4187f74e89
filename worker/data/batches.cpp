// Blocks, the per-epoch sample order, and the split of each step's global batch over ranks.
#include "worker/data/batches.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace relora::data {
namespace {

// SplitMix64 finalizer: spreads (seed, epoch) so that neighbouring epochs or seeds give
// unrelated generator states (mt19937_64 seeded with 1 and 2 starts out correlated).
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform integer in [0, bound) by rejection. std::uniform_int_distribution's algorithm is
// implementation-defined, which would make the sample order differ between standard libraries;
// this one depends only on mt19937_64's output, which the standard fixes.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  // Reject the lowest (2^64 mod bound) values so every residue is equally likely.
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace

TrainValSplit split_blocks(const uint32_t* tokens, uint64_t total_tokens, int64_t seq_len,
                           double validation_fraction) {
  require(seq_len > 0, "split_blocks: seq_len must be positive");
  require(validation_fraction >= 0.0 && validation_fraction < 1.0,
          "split_blocks: validation_fraction must be in [0, 1)");
  // The tail shorter than one block is dropped: every sample has exactly seq_len tokens.
  const auto blocks = static_cast<int64_t>(total_tokens / static_cast<uint64_t>(seq_len));
  if (blocks < 2) {
    throw std::runtime_error("need at least 2 blocks of " + std::to_string(seq_len) +
                             " tokens, the data has " + std::to_string(total_tokens) + " tokens");
  }
  int64_t validation = 0;
  if (validation_fraction > 0.0) {
    // The small epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    validation = static_cast<int64_t>(std::ceil(validation_fraction * blocks - 1e-9));
    validation = std::max<int64_t>(validation, 1);
    validation = std::min<int64_t>(validation, blocks - 1);  // keep at least one train block
  }
  TrainValSplit split;
  split.train = BlockRange{tokens, seq_len, 0, blocks - validation};
  split.validation = BlockRange{tokens, seq_len, blocks - validation, validation};
  return split;
}

SampleOrder::SampleOrder(int64_t num_blocks, uint64_t seed) : num_blocks_(num_blocks), seed_(seed) {
  require(num_blocks > 0, "SampleOrder: num_blocks must be positive");
}

int64_t SampleOrder::block_of(int64_t global_sample) const {
  require(global_sample >= 0, "SampleOrder: negative sample index");
  const int64_t epoch = global_sample / num_blocks_;
  return permutation(epoch)[static_cast<size_t>(global_sample % num_blocks_)];
}

// Training reads epochs in order, so one cached permutation suffices. The cache makes this
// object unsafe to share between threads: give each thread its own SampleOrder.
const std::vector<int64_t>& SampleOrder::permutation(int64_t epoch) const {
  if (epoch == cached_epoch_) return cached_;
  cached_.resize(static_cast<size_t>(num_blocks_));
  std::iota(cached_.begin(), cached_.end(), int64_t{0});
  std::mt19937_64 rng(splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(epoch))));
  // Fisher-Yates, from the back: position i takes a uniform pick among positions [0, i].
  for (int64_t i = num_blocks_ - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(cached_[static_cast<size_t>(i)], cached_[static_cast<size_t>(j)]);
  }
  cached_epoch_ = epoch;
  return cached_;
}

std::vector<int64_t> micro_batch_samples(const BatchGeometry& g, int64_t step, int64_t micro_step,
                                         int64_t rank) {
  require(g.micro_batch > 0 && g.grad_accum > 0 && g.world > 0,
          "BatchGeometry: micro_batch, grad_accum and world must be positive");
  require(step >= 0, "micro_batch_samples: negative step");
  require(micro_step >= 0 && micro_step < g.grad_accum,
          "micro_batch_samples: micro_step out of [0, grad_accum)");
  require(rank >= 0 && rank < g.world, "micro_batch_samples: rank out of [0, world)");
  // Micro-step major, rank minor: (micro, rank) slices tile the global batch in this order, so
  // the samples of a step do not depend on how world x grad_accum is factored.
  const int64_t first = step * g.global_batch() + (micro_step * g.world + rank) * g.micro_batch;
  std::vector<int64_t> samples(static_cast<size_t>(g.micro_batch));
  std::iota(samples.begin(), samples.end(), first);
  return samples;
}

void gather_blocks(const BlockRange& range, const SampleOrder& order,
                   const std::vector<int64_t>& samples, std::vector<int64_t>& out) {
  require(order.num_blocks() == range.num_blocks,
          "gather_blocks: the sample order covers " + std::to_string(order.num_blocks()) +
              " blocks, the range has " + std::to_string(range.num_blocks));
  const auto seq_len = static_cast<size_t>(range.seq_len);
  out.resize(samples.size() * seq_len);
  for (size_t row = 0; row < samples.size(); ++row) {
    const uint32_t* block = range.block(order.block_of(samples[row]));
    std::copy(block, block + seq_len, out.begin() + static_cast<std::ptrdiff_t>(row * seq_len));
  }
}

}  // namespace relora::data
