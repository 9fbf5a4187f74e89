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

// One mask for both moments: an element that keeps its momentum keeps its second moment, so the
// first step after a reset stays an Adam-sized step even when the new gradient is tiny. With
// independent masks some elements kept m but lost v and moved by ~m / eps (bench/quality found it:
// a LoRA factor's norm went from 1.4 to 765 within 10 steps of a merge).
TEST(TrainAdamW, ResetPrunesBothMomentsWithOneMask) {
  for (ResetMode mode : {ResetMode::kMagnitude, ResetMode::kRandom}) {
    ResetFixture f;
    f.opt.reset_low_rank_states(mode, 0.99, 5);
    for (size_t i = 0; i < 2; ++i) {
      const auto& e = f.opt.entries()[i];
      EXPECT_TRUE(torch::equal(e.exp_avg.eq(0), e.exp_avg_sq.eq(0))) << reset_mode_name(mode) << " " << e.name;
    }
    auto before = f.lora_a.detach().clone();
    f.lora_a.mutable_grad() = torch::full(f.lora_a.sizes(), 1e-6);
    f.lora_b.mutable_grad() = torch::full(f.lora_b.sizes(), 1e-6);
    f.embed.mutable_grad() = torch::zeros(f.embed.sizes());
    const double lr = 1e-3;
    f.opt.step(lr);
    // Plain Adam bounds |m| / sqrt(v) by about 7.3 for betas (0.9, 0.999); allow bias correction.
    EXPECT_LT((f.lora_a.detach() - before).abs().max().item<double>(), 10 * lr) << reset_mode_name(mode);
  }
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
