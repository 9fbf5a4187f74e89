#include "worker/train/update_spectrum.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace relora::train {
namespace {

TEST(TrainUpdateSpectrum, CountsTheRankOfALowRankUpdate) {
  torch::manual_seed(3);
  auto w0 = torch::randn({64, 48});
  // A rank-5 update, as LoRA would make with r = 5: exactly 5 values above the threshold.
  auto delta = torch::randn({64, 5}).matmul(torch::randn({5, 48}));
  auto s = update_spectrum(w0 + delta, w0);
  EXPECT_EQ(s.rank_above_threshold, 5);
  ASSERT_EQ(s.singular_values.size(), 48u);
  EXPECT_GE(s.singular_values[0], s.singular_values[1]);
  EXPECT_LT(s.singular_values[5], 1e-4 * s.singular_values[0]);
  // A sum of three such updates (three ReLoRA cycles) reaches rank 15.
  auto three = delta + torch::randn({64, 5}).matmul(torch::randn({5, 48})) +
               torch::randn({64, 5}).matmul(torch::randn({5, 48}));
  EXPECT_EQ(update_spectrum(w0 + three, w0).rank_above_threshold, 15);
  // A dense random update is (numerically) full rank.
  EXPECT_EQ(update_spectrum(w0 + torch::randn({64, 48}), w0).rank_above_threshold, 48);
  // No update: rank 0, not a division by zero.
  EXPECT_EQ(update_spectrum(w0, w0).rank_above_threshold, 0);
}

}  // namespace
}  // namespace relora::train
