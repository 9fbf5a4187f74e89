// Blocks, the per-epoch sample order, and the split of each step's global batch over ranks.
#include "worker/data/batches.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

#include "worker/data/random.h"

namespace relora::data {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

}  // namespace

TrainValSplit split_blocks(const TokenStream& tokens, int64_t seq_len, double validation_fraction) {
  const uint64_t total_tokens = tokens.size();
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
  split.train = BlockRange{&tokens, seq_len, 0, blocks - validation};
  split.validation = BlockRange{&tokens, seq_len, blocks - validation, validation};
  return split;
}

SampleOrder::SampleOrder(int64_t num_blocks, uint64_t seed) : num_blocks_(num_blocks), seed_(seed) {
  require(num_blocks > 0, "SampleOrder: num_blocks must be positive");
}

int64_t SampleOrder::block_of(int64_t global_sample) const {
  require(global_sample >= 0, "SampleOrder: negative sample index");
  const int64_t epoch = global_sample / num_blocks_;
  const int64_t i = global_sample % num_blocks_;
  if (num_blocks_ > kMaxListedBlocks) return feistel(epoch, i);
  return permutation(epoch)[static_cast<size_t>(i)];
}

// A keyed bijection of [0, 2^(2h)) (a 4-round balanced Feistel network whose round function is
// SplitMix64 of the half and a per-(seed, epoch, round) key), restricted to [0, num_blocks) by
// cycle walking: applied again while the result is out of range. Since 2^(2h) < 4 num_blocks,
// that takes under 4 rounds on average. O(1) memory for any corpus size.
int64_t SampleOrder::feistel(int64_t epoch, int64_t i) const {
  int half_bits = 1;
  while ((uint64_t{1} << (2 * half_bits)) < static_cast<uint64_t>(num_blocks_)) ++half_bits;
  const uint64_t mask = (uint64_t{1} << half_bits) - 1;
  const uint64_t key = splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(epoch)) ^ 0x66656973746c3031ull);
  auto x = static_cast<uint64_t>(i);
  do {
    uint64_t left = x >> half_bits, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = splitmix64(key + round * 0x9E3779B97F4A7C15ull + right) & mask;
      const uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    x = (left << half_bits) | right;
  } while (x >= static_cast<uint64_t>(num_blocks_));
  return static_cast<int64_t>(x);
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
    range.copy_block(order.block_of(samples[row]), out.data() + row * seq_len);
  }
}

}  // namespace relora::data
