// The two portable random primitives behind every sample order (SampleOrder, MixtureOrder).
#pragma once

#include <cstdint>
#include <random>

namespace relora::data {

// SplitMix64 finalizer: spreads (seed, epoch) so that neighbouring epochs or seeds give
// unrelated generator states (mt19937_64 seeded with 1 and 2 starts out correlated).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform integer in [0, bound) by rejection. std::uniform_int_distribution's algorithm is
// implementation-defined, which would make the sample order differ between standard libraries;
// this one depends only on mt19937_64's output, which the standard fixes.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  // Reject the lowest (2^64 mod bound) values so every residue is equally likely.
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

}  // namespace relora::data
