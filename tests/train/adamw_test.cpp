#include "worker/train/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace relora::train {
namespace {

// Our AdamW must be torch.optim.AdamW: same trajectory on the same gradients.
TEST(TrainAdamW, MatchesLibTorchAdamW) {
  torch::manual_seed(0);
  auto a = torch::randn({8, 5}, torch::kDouble).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  AdamW ours(AdamWOptions{0.9, 0.999, 1e-8, 0.1});
  ours.add_parameter("w", a, false);
  torch::optim::AdamW theirs({b}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.1));
  for (int step = 0; step < 5; ++step) {
    auto target = torch::randn({8, 5}, torch::kDouble);
    (a - target).pow(2).sum().backward();
    (b - target).pow(2).sum().backward();
    ours.step(1e-2);
    ours.zero_grad();
    theirs.step();
    theirs.zero_grad();
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-12, 1e-12)) << (a - b).abs().max();
}

struct ResetFixture {
  AdamW opt{AdamWOptions{}};
  torch::Tensor lora_a = torch::randn({64, 256}).requires_grad_(true);
  torch::Tensor lora_b = torch::randn({256, 64}).requires_grad_(true);
  torch::Tensor embed = torch::randn({100, 64}).requires_grad_(true);
  torch::Tensor embed_m, embed_v;
  ResetFixture() {
    opt.add_parameter("layers.0.q_proj.lora_A", lora_a, true);
    opt.add_parameter("layers.0.q_proj.lora_B", lora_b, true);
    opt.add_parameter("embed_tokens.weight", embed, false);
    for (int i = 0; i < 3; ++i) {
      for (auto& p : {lora_a, lora_b, embed}) p.mutable_grad() = torch::randn(p.sizes());
      opt.step(1e-3);
    }
    embed_m = opt.entries()[2].exp_avg.clone();
    embed_v = opt.entries()[2].exp_avg_sq.clone();
  }
  double zero_fraction(size_t i) const {
    const auto& e = opt.entries()[i];
    auto zeros = e.exp_avg.eq(0).sum().item<int64_t>() + e.exp_avg_sq.eq(0).sum().item<int64_t>();
    return static_cast<double>(zeros) / (2.0 * e.exp_avg.numel());
  }
  void expect_full_rank_untouched() const {
    EXPECT_TRUE(torch::equal(opt.entries()[2].exp_avg, embed_m));
    EXPECT_TRUE(torch::equal(opt.entries()[2].exp_avg_sq, embed_v));
    for (const auto& e : opt.entries()) EXPECT_EQ(e.step, 3) << e.name << ": step counter must be kept";
  }
};

TEST(TrainAdamW, MagnitudeResetZeroesRequestedFraction) {
  for (double p : {0.5, 0.9, 0.99}) {
    ResetFixture f;
    auto before = f.opt.entries()[0].exp_avg.abs().clone();
    auto stats = f.opt.reset_low_rank_states(ResetMode::kMagnitude, p, 1);
    auto kept = f.opt.entries()[0].exp_avg.ne(0);
    // The survivors are the largest: every kept |m| is above every pruned one.
    EXPECT_GT(before.masked_select(kept).min().item<float>(), before.masked_select(kept.logical_not()).max().item<float>());
    EXPECT_NEAR(stats.fraction(), p, 0.01);
    EXPECT_NEAR(f.zero_fraction(0), p, 0.01);
    EXPECT_NEAR(f.zero_fraction(1), p, 0.01);
    f.expect_full_rank_untouched();
  }
}

TEST(TrainAdamW, RandomResetZeroesRequestedFractionSameOnEveryRank) {
  ResetFixture f, g;
  auto stats = f.opt.reset_low_rank_states(ResetMode::kRandom, 0.9, 42);
  g.opt.reset_low_rank_states(ResetMode::kRandom, 0.9, 42);
  EXPECT_NEAR(stats.fraction(), 0.9, 0.01);
  EXPECT_NEAR(f.zero_fraction(0), 0.9, 0.01);
  // Same seed, same pruned positions (what keeps data-parallel ranks identical).
  EXPECT_TRUE(torch::equal(f.opt.entries()[0].exp_avg.eq(0), g.opt.entries()[0].exp_avg.eq(0)));
  f.expect_full_rank_untouched();
}

TEST(TrainAdamW, ZeroResetClearsAllLowRankState) {
  ResetFixture f;
  auto stats = f.opt.reset_low_rank_states(ResetMode::kZero, 1.0, 0);
  EXPECT_EQ(stats.zeroed, stats.total);
  EXPECT_DOUBLE_EQ(f.zero_fraction(0), 1.0);
  EXPECT_DOUBLE_EQ(f.zero_fraction(1), 1.0);
  f.expect_full_rank_untouched();
}

TEST(TrainAdamW, ParseResetModeRejectsUnknown) {
  EXPECT_EQ(parse_reset_mode("magnitude"), ResetMode::kMagnitude);
  EXPECT_THROW(parse_reset_mode("prune"), std::invalid_argument);
}

}  // namespace
}  // namespace relora::train
