// The paper's singular-value analysis of the total update of a weight matrix, ΔW = W_now − W_start:
// full-rank training and ReLoRA produce high-rank updates, LoRA's is at most rank r. Used for the
// effective-rank metric (computed at each merge) and the quality experiment's spectrum plots.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

namespace relora::train {

// Singular values count as "above the threshold" when σ_i > kRelativeRankThreshold · σ_max.
// Relative, so the count does not depend on the learning rate or the matrix scale; 1% keeps the
// numerical noise of an exactly rank-r update (σ_{r+1} ≈ 1e-6 σ_max in fp32) far below it.
inline constexpr double kRelativeRankThreshold = 0.01;

struct UpdateSpectrum {
  std::vector<double> singular_values;  // descending
  int64_t rank_above_threshold = 0;
  double threshold = 0;  // absolute: kRelativeRankThreshold * σ_max
};

// SVD in fp64 of (current - reference); both [out, in], any dtype or device.
UpdateSpectrum update_spectrum(const torch::Tensor& current, const torch::Tensor& reference,
                               double relative_threshold = kRelativeRankThreshold);

}  // namespace relora::train
