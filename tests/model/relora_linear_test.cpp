// ReloraLinear: init, forward, merge/re-init, seeding, gradients (finite differences).
#include "worker/model/relora_linear.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include <torch/utils.h>

namespace relora::model {
namespace {

// Max |a - b| as a double.
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A few plain SGD steps on A and B toward a random target, so that B != 0 afterwards.
void train_factors(ReloraLinear& layer, int64_t steps) {
  torch::manual_seed(3);
  auto x = torch::randn({16, layer->in_features()});
  auto target = torch::randn({16, layer->out_features()});
  for (int64_t s = 0; s < steps; ++s) {
    auto loss = (layer(x) - target).pow(2).mean();
    loss.backward();
    torch::NoGradGuard no_grad;
    for (auto* p : {&layer->lora_A, &layer->lora_B}) {
      p->sub_(p->grad() * 0.5);
      p->mutable_grad().zero_();
    }
  }
}

TEST(ModelReloraLinear, FullRankHasOnlyTrainableWeight) {
  ReloraLinear layer(8, 6);
  EXPECT_FALSE(layer->lora_enabled());
  auto params = layer->named_parameters();
  ASSERT_EQ(params.size(), 1u);
  EXPECT_EQ(params.begin()->key(), "weight");
  EXPECT_TRUE(layer->weight.requires_grad());
  EXPECT_EQ(layer->weight.sizes(), (std::vector<int64_t>{6, 8}));
  // Without the branch the layer is a plain linear map and the delta is zero.
  auto x = torch::randn({3, 8});
  EXPECT_LT(max_abs_diff(layer(x), x.matmul(layer->weight.t())), 1e-6);
  EXPECT_EQ(layer->lora_delta().abs().max().item<double>(), 0.0);
}

TEST(ModelReloraLinear, EnableLoraInitAndFreezesWeight) {
  ReloraLinear layer(16, 12);
  layer->enable_lora({/*rank=*/4, /*alpha=*/8.0, /*dropout=*/0.0}, /*seed=*/1);
  ASSERT_TRUE(layer->lora_enabled());
  EXPECT_FALSE(layer->weight.requires_grad());
  EXPECT_TRUE(layer->lora_A.requires_grad());
  EXPECT_TRUE(layer->lora_B.requires_grad());
  EXPECT_EQ(layer->lora_A.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(layer->lora_B.sizes(), (std::vector<int64_t>{12, 4}));
  EXPECT_DOUBLE_EQ(layer->scale(), 2.0);
  // The reference's bug was A = B = 0; we need A != 0 (every entry) and B == 0 exactly.
  EXPECT_TRUE((layer->lora_A != 0).all().item<bool>());
  EXPECT_EQ(layer->lora_B.abs().max().item<double>(), 0.0);
  // kaiming_uniform(a = sqrt(5)): |A| <= 1/sqrt(in) = 0.25, and the draw actually spreads out.
  EXPECT_LE(layer->lora_A.abs().max().item<double>(), 0.25);
  EXPECT_GT(layer->lora_A.abs().max().item<double>(), 0.2);
  auto names = layer->named_parameters();
  EXPECT_TRUE(names.contains("lora_A"));
  EXPECT_TRUE(names.contains("lora_B"));
}

TEST(ModelReloraLinear, RankOutOfRangeThrows) {
  ReloraLinear layer(16, 12);
  EXPECT_THROW(layer->enable_lora({/*rank=*/13, 8.0, 0.0}, 1), std::invalid_argument);
  EXPECT_THROW(layer->enable_lora({/*rank=*/0, 8.0, 0.0}, 1), std::invalid_argument);
  EXPECT_FALSE(layer->lora_enabled());
  layer->enable_lora({/*rank=*/12, 8.0, 0.0}, 1);  // min(in, out) itself is allowed
  EXPECT_THROW(layer->enable_lora({4, 8.0, 0.0}, 1), std::logic_error);
}

TEST(ModelReloraLinear, ForwardMatchesFormula) {
  ReloraLinear layer(10, 7);
  layer->enable_lora({3, 6.0, 0.0}, 5);
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.normal_();  // make the branch visible
  }
  auto x = torch::randn({2, 4, 10});  // [B, T, in]
  auto expected = x.matmul(layer->weight.t()) +
                  2.0 * x.matmul(layer->lora_A.t()).matmul(layer->lora_B.t());
  EXPECT_LT(max_abs_diff(layer(x), expected), 1e-5);
}

TEST(ModelReloraLinear, DropoutOnlyInTraining) {
  ReloraLinear layer(32, 32);
  layer->enable_lora({4, 4.0, /*dropout=*/0.5}, 5);
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.normal_();
  }
  auto x = torch::randn({8, 32});
  layer->train();
  EXPECT_GT(max_abs_diff(layer(x), layer(x)), 1e-3);  // two dropout masks differ
  layer->eval();
  auto expected = x.matmul(layer->weight.t()) +
                  layer->scale() * x.matmul(layer->lora_A.t()).matmul(layer->lora_B.t());
  EXPECT_LT(max_abs_diff(layer(x), expected), 1e-5);
}

TEST(ModelReloraLinear, SameSeedSameA) {
  // Different global RNG states (different W), same seed: A must be bit-identical.
  torch::manual_seed(1);
  ReloraLinear a(24, 16);
  torch::manual_seed(2);
  ReloraLinear b(24, 16);
  ASSERT_FALSE(torch::equal(a->weight, b->weight));
  a->enable_lora({4, 8.0, 0.0}, 42);
  b->enable_lora({4, 8.0, 0.0}, 42);
  EXPECT_TRUE(torch::equal(a->lora_A, b->lora_A));
  const auto A42 = a->lora_A.detach().clone();
  ReloraLinear c(24, 16);
  c->enable_lora({4, 8.0, 0.0}, 43);
  EXPECT_FALSE(torch::equal(a->lora_A, c->lora_A));
  // The same holds after a merge: re-draws depend only on the merge seed.
  a->merge_and_reinit(7);
  b->merge_and_reinit(7);
  EXPECT_TRUE(torch::equal(a->lora_A, b->lora_A));
  EXPECT_FALSE(torch::equal(a->lora_A, A42));
  // A double layer draws the same values (drawn in fp32, then converted).
  ReloraLinear d(24, 16);
  d->to(torch::kDouble);
  d->enable_lora({4, 8.0, 0.0}, 42);
  EXPECT_EQ(d->lora_A.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::equal(d->lora_A.to(torch::kFloat), A42));
}

TEST(ModelReloraLinear, MergeKeepsFunctionAndReinits) {
  ReloraLinear layer(20, 12);
  layer->enable_lora({4, 8.0, /*dropout=*/0.1}, 1);
  train_factors(layer, 5);
  ASSERT_GT(layer->lora_B.abs().max().item<double>(), 1e-3);  // the branch learned something
  auto A_before = layer->lora_A.detach().clone();
  auto W_before = layer->weight.detach().clone();
  // Same tensor objects before and after (optimizer state keys on them).
  auto* w_impl = layer->weight.unsafeGetTensorImpl();
  auto* a_impl = layer->lora_A.unsafeGetTensorImpl();
  auto* b_impl = layer->lora_B.unsafeGetTensorImpl();
  auto expected_W = W_before + layer->scale() * layer->lora_B.detach().matmul(A_before);

  layer->eval();
  torch::manual_seed(9);
  auto x = torch::randn({32, 20});
  torch::Tensor y_before, y_after;
  {
    torch::NoGradGuard no_grad;
    y_before = layer(x);
    layer->merge_and_reinit(/*seed=*/2);
    y_after = layer(x);
  }
  EXPECT_LT(max_abs_diff(y_before, y_after), 1e-5);
  EXPECT_LT(max_abs_diff(layer->weight, expected_W), 1e-6);
  EXPECT_GT(max_abs_diff(layer->weight, W_before), 1e-4);  // W really absorbed the update
  EXPECT_TRUE((layer->lora_A != 0).all().item<bool>());
  EXPECT_FALSE(torch::equal(layer->lora_A, A_before));     // fresh A
  EXPECT_EQ(layer->lora_B.abs().max().item<double>(), 0.0);
  EXPECT_EQ(layer->weight.unsafeGetTensorImpl(), w_impl);
  EXPECT_EQ(layer->lora_A.unsafeGetTensorImpl(), a_impl);
  EXPECT_EQ(layer->lora_B.unsafeGetTensorImpl(), b_impl);
  EXPECT_FALSE(layer->weight.requires_grad());
  EXPECT_TRUE(layer->lora_A.requires_grad());
}

TEST(ModelReloraLinear, MergedWeightIsWPlusScaledBA) {
  ReloraLinear layer(9, 11);
  layer->enable_lora({3, 5.0, 0.0}, 1);
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.normal_();
  }
  auto expected = layer->weight + (5.0 / 3.0) * layer->lora_B.matmul(layer->lora_A);
  EXPECT_LT(max_abs_diff(layer->merged_weight(), expected), 1e-6);
  EXPECT_LT(max_abs_diff(layer->lora_delta(), expected - layer->weight), 1e-6);
  EXPECT_GT(layer->lora_delta().abs().max().item<double>(), 1e-3);
  // A fresh tensor, not an alias of W.
  EXPECT_NE(layer->merged_weight().data_ptr(), layer->weight.data_ptr());
}

// Central finite differences of L = sum(y * R) w.r.t. a few entries of `t`, against `grad`.
void check_fd(ReloraLinear& layer, torch::Tensor t, const torch::Tensor& grad,
              const torch::Tensor& x, const torch::Tensor& R) {
  const double eps = 1e-5;
  const int64_t n = t.numel();
  for (int64_t idx : {int64_t{0}, n / 3, n / 2, n - 1}) {
    torch::NoGradGuard no_grad;
    auto flat = t.view({-1});
    const double orig = flat[idx].item<double>();
    flat[idx].fill_(orig + eps);
    const double up = (layer(x) * R).sum().item<double>();
    flat[idx].fill_(orig - eps);
    const double down = (layer(x) * R).sum().item<double>();
    flat[idx].fill_(orig);
    const double fd = (up - down) / (2 * eps);
    const double ag = grad.view({-1})[idx].item<double>();
    const double denom = std::max({std::abs(fd), std::abs(ag), 1e-12});
    EXPECT_LT(std::abs(fd - ag) / denom, 1e-6) << "entry " << idx << " fd " << fd << " ag " << ag;
    EXPECT_GT(std::abs(ag), 1e-8) << "entry " << idx << ": vacuous check";
  }
}

TEST(ModelReloraLinear, GradientsMatchFiniteDifferences) {
  ReloraLinear layer(12, 10);
  layer->to(torch::kDouble);
  layer->enable_lora({3, 6.0, 0.0}, 4);
  {
    torch::NoGradGuard no_grad;
    layer->lora_B.normal_();  // B != 0, else dL/dA is identically zero
  }
  torch::manual_seed(5);
  auto x = torch::randn({5, 12}, torch::kDouble).requires_grad_(true);
  auto R = torch::randn({5, 10}, torch::kDouble);
  (layer(x) * R).sum().backward();
  check_fd(layer, layer->lora_A, layer->lora_A.grad(), x, R);
  check_fd(layer, layer->lora_B, layer->lora_B.grad(), x, R);
  auto xd = x.detach();  // perturb x through a view that does not require grad
  check_fd(layer, xd, x.grad(), xd, R);
  EXPECT_FALSE(layer->weight.grad().defined());  // frozen W gets no gradient at all
}

TEST(ModelReloraLinear, CloneCopiesBranch) {
  ReloraLinear layer(8, 8);
  layer->enable_lora({2, 4.0, 0.0}, 3);
  auto copy = std::dynamic_pointer_cast<ReloraLinearImpl>(layer->clone());
  ASSERT_TRUE(copy->lora_enabled());
  EXPECT_TRUE(torch::equal(copy->lora_A, layer->lora_A));
  EXPECT_NE(copy->lora_A.data_ptr(), layer->lora_A.data_ptr());
  EXPECT_FALSE(copy->weight.requires_grad());
  EXPECT_DOUBLE_EQ(copy->scale(), layer->scale());
}

}  // namespace
}  // namespace relora::model
