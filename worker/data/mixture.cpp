#include "worker/data/mixture.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

#include "worker/data/random.h"

namespace relora::data {
namespace {
// Salts keep the window shuffles and per-source orders apart from the single-source order.
constexpr uint64_t kWindowSalt = 0x6d69787475726531ull;  // "mixture1"
constexpr uint64_t kSourceSalt = 0x736f757263657331ull;  // "sources1"
}  // namespace

MixtureOrder::MixtureOrder(std::vector<int64_t> num_blocks, std::vector<double> weights, uint64_t seed)
    : seed_(seed) {
  if (num_blocks.empty() || num_blocks.size() != weights.size()) {
    throw std::invalid_argument("MixtureOrder: one weight and one block count per source");
  }
  double total = 0;
  for (size_t s = 0; s < weights.size(); ++s) {
    if (!(weights[s] > 0) || !std::isfinite(weights[s])) {
      throw std::invalid_argument("MixtureOrder: source " + std::to_string(s) + " has weight " +
                                  std::to_string(weights[s]) + "; weights must be positive");
    }
    total += weights[s];
  }
  for (double w : weights) share_.push_back(w / total);
  const bool single = num_blocks.size() == 1;
  for (size_t s = 0; s < num_blocks.size(); ++s) {
    const uint64_t source_seed = single ? seed : splitmix64(seed ^ kSourceSalt) + s;
    orders_.push_back(std::make_unique<SampleOrder>(num_blocks[s], source_seed));
  }
}

void MixtureOrder::seek(int64_t window) const {
  if (window < window_ || window_ < 0) {
    window_ = 0;
    carry_.assign(share_.size(), 0.0);
    before_.assign(share_.size(), 0);
    deal();
  }
  while (window_ < window) {
    for (size_t s = 0; s < share_.size(); ++s) before_[s] += in_window_[s];
    ++window_;
    deal();
  }
}

void MixtureOrder::deal() const {
  const size_t n = share_.size();
  // Largest remainder: floor of each exact share, then the leftover slots to the largest
  // fractional parts (lower source index first on ties); what is left over carries on.
  std::vector<double> target(n);
  in_window_.assign(n, 0);
  int64_t dealt = 0;
  for (size_t s = 0; s < n; ++s) {
    target[s] = static_cast<double>(kWindow) * share_[s] + carry_[s];
    in_window_[s] = std::max<int64_t>(0, static_cast<int64_t>(std::floor(target[s])));
    dealt += in_window_[s];
  }
  std::vector<size_t> by_remainder(n);
  std::iota(by_remainder.begin(), by_remainder.end(), size_t{0});
  std::stable_sort(by_remainder.begin(), by_remainder.end(), [&](size_t a, size_t b) {
    return target[a] - static_cast<double>(in_window_[a]) > target[b] - static_cast<double>(in_window_[b]);
  });
  // The targets sum to kWindow (carries sum to ~0), so the floors never exceed it and fewer than
  // n slots are left over.
  for (size_t i = 0; dealt < kWindow; i = (i + 1) % n, ++dealt) ++in_window_[by_remainder[i]];
  for (size_t s = 0; s < n; ++s) carry_[s] = target[s] - static_cast<double>(in_window_[s]);

  slots_.clear();
  for (size_t s = 0; s < n; ++s) slots_.insert(slots_.end(), static_cast<size_t>(in_window_[s]), static_cast<int>(s));
  std::mt19937_64 rng(splitmix64(seed_ ^ kWindowSalt ^ splitmix64(static_cast<uint64_t>(window_))));
  for (int64_t i = kWindow - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(slots_[static_cast<size_t>(i)], slots_[static_cast<size_t>(j)]);
  }
  rank_.assign(static_cast<size_t>(kWindow), 0);
  std::vector<int64_t> seen(n, 0);
  for (size_t i = 0; i < slots_.size(); ++i) rank_[i] = seen[static_cast<size_t>(slots_[i])]++;
}

MixtureOrder::Pick MixtureOrder::pick(int64_t global_sample) const {
  if (global_sample < 0) throw std::invalid_argument("MixtureOrder: negative sample index");
  if (orders_.size() == 1) return {0, orders_[0]->block_of(global_sample)};
  seek(global_sample / kWindow);
  const auto slot = static_cast<size_t>(global_sample % kWindow);
  const int source = slots_[slot];
  const int64_t k = before_[static_cast<size_t>(source)] + rank_[slot];
  return {source, orders_[static_cast<size_t>(source)]->block_of(k)};
}

std::vector<int64_t> MixtureOrder::counts_before(int64_t n) const {
  if (orders_.size() == 1) return {n};
  seek(n / kWindow);
  std::vector<int64_t> counts = before_;
  for (int64_t i = 0; i < n % kWindow; ++i) ++counts[static_cast<size_t>(slots_[static_cast<size_t>(i)])];
  return counts;
}

void gather_blocks(const std::vector<BlockRange>& sources, const MixtureOrder& order,
                   const std::vector<int64_t>& samples, std::vector<int64_t>& out) {
  if (sources.size() != order.sources()) {
    throw std::invalid_argument("gather_blocks: the mixture has " + std::to_string(order.sources()) +
                                " sources, the data " + std::to_string(sources.size()));
  }
  const auto seq_len = static_cast<size_t>(sources.front().seq_len);
  out.resize(samples.size() * seq_len);
  for (size_t row = 0; row < samples.size(); ++row) {
    const MixtureOrder::Pick p = order.pick(samples[row]);
    sources[static_cast<size_t>(p.source)].copy_block(p.block, out.data() + row * seq_len);
  }
}

}  // namespace relora::data
