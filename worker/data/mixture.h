// The sample order over several weighted sources (data.train entries with weights).
//
// Global sample i -> (source, block of that source), a pure function of (i, seed, weights, block
// counts): like SampleOrder, it does not depend on the world size, and a resumed job computes
// the samples of step s without replaying anything.
//
// Sources are dealt in windows of kWindow samples. Window w gives each source its share of the
// window, rounded by largest remainder with the rounding error carried into the next window, so
// after n samples every source has received its exact share of n within one sample; the window's
// slots are then shuffled with (seed, w). A source's k-th sample is block k of its own SampleOrder
// (per-source epochs, seeded per source). With one source this is SampleOrder itself, so a job
// without weights keeps the order it always had.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "worker/data/batches.h"

namespace relora::data {

class MixtureOrder {
 public:
  static constexpr int64_t kWindow = 1024;

  // `weights` (any positive numbers; normalized here) and `num_blocks` per source, same length.
  // Throws std::invalid_argument on an empty list, a non-positive weight or block count.
  MixtureOrder(std::vector<int64_t> num_blocks, std::vector<double> weights, uint64_t seed);

  struct Pick {
    int source = 0;
    int64_t block = 0;
  };
  Pick pick(int64_t global_sample) const;
  // How many of the samples [0, n) each source received.
  std::vector<int64_t> counts_before(int64_t n) const;
  size_t sources() const { return orders_.size(); }

 private:
  // The state at the start of window `w`: carried rounding error and counts so far. Training
  // reads windows in order, so advancing one cached state is O(1) per window; a resume or a
  // backwards read recomputes from window 0 (microseconds per thousand windows). The cache
  // makes this object unsafe to share between threads, as SampleOrder.
  void seek(int64_t window) const;
  void deal() const;  // fills slots_/rank_ of window_ and the counts it gives

  std::vector<double> share_;  // normalized weights
  uint64_t seed_;
  std::vector<std::unique_ptr<SampleOrder>> orders_;
  mutable int64_t window_ = -1;
  mutable std::vector<double> carry_;          // rounding error entering window_
  mutable std::vector<int64_t> before_;        // samples per source before window_
  mutable std::vector<int64_t> in_window_;     // samples per source in window_
  mutable std::vector<int> slots_;             // source of each slot of window_
  mutable std::vector<int64_t> rank_;          // index of each slot among its source's slots
};

// Fills `out` (samples.size() * seq_len) with the picked blocks; `sources[s]` are the blocks of
// source s.
void gather_blocks(const std::vector<BlockRange>& sources, const MixtureOrder& order,
                   const std::vector<int64_t>& samples, std::vector<int64_t>& out);

}  // namespace relora::data
