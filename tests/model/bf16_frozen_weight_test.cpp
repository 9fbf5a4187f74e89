// The frozen W stored in bf16 (training.dtype bf16 in a low-rank mode): stochastic rounding,
// storage and products, and what many merges do to W against fp32-everywhere.
#include <cmath>
#include <cstdio>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/model/bf16_rounding.h"
#include "worker/model/fused_cpu_ops.h"
#include "worker/model/relora_linear.h"
#include "worker/model/torch_compat.h"

namespace relora::model {
namespace {

struct CpuBf16Autocast {
  CpuBf16Autocast() { compat::set_bf16_autocast(/*cuda=*/false, true); }
  ~CpuBf16Autocast() { compat::set_bf16_autocast(/*cuda=*/false, false); }
};

torch::Tensor randn(std::vector<int64_t> sizes, uint64_t seed, double std = 1.0) {
  auto gen = compat::make_cpu_generator(seed);
  return torch::empty(sizes, torch::kFloat).normal_(0.0, std, gen);
}

TEST(ModelBf16Rounding, PicksANeighbourUnbiasedlyWithBitsFixedByTheElementIndex) {
  const auto v = randn({300, 64}, 1, 0.02);
  const auto r = round_to_bf16_stochastic(v, 42, 0);
  ASSERT_EQ(r.scalar_type(), torch::kBFloat16);
  // One of the two bf16 neighbours: within one ulp (at most |v| 2^-7) of v.
  EXPECT_TRUE(((r.to(torch::kFloat) - v).abs() <= v.abs() * std::ldexp(1.0, -7)).all().item<bool>());
  // Values bf16 holds exactly are kept.
  const auto exact = v.to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(round_to_bf16_stochastic(exact.to(torch::kFloat), 42, 0), exact));
  // The same seed gives the same bits; another seed other ones.
  EXPECT_TRUE(torch::equal(round_to_bf16_stochastic(v, 42, 0), r));
  EXPECT_FALSE(torch::equal(round_to_bf16_stochastic(v, 43, 0), r));
  // Rows [100, 250) rounded alone (a frozen-weight shard) get the whole tensor's bits.
  EXPECT_TRUE(torch::equal(round_to_bf16_stochastic(v.slice(0, 100, 250), 42, 100 * 64), r.slice(0, 100, 250)));
  // Unbiased: 1 + 2^-10 is 1/8 of the ulp above 1 (2^-7). Round-to-nearest gives 1 every time;
  // stochastic rounding gives 1 + 2^-7 one time in eight, mean 1 + 2^-10 (std of the mean over
  // 2^16 values: 2^-7 sqrt(7/64 / 2^16) = 1.0e-5).
  const double target = 1.0 + std::ldexp(1.0, -10);
  const auto ones = torch::full({1 << 16}, target, torch::kFloat);
  const double mean = round_to_bf16_stochastic(ones, 7, 0).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(mean, target, 5e-5);
  EXPECT_EQ(ones.to(torch::kBFloat16).to(torch::kDouble).mean().item<double>(), 1.0);
  // Infinities and NaN survive.
  const auto special = torch::tensor({INFINITY, -INFINITY, NAN}, torch::kFloat);
  const auto rs = round_to_bf16_stochastic(special, 1, 0).to(torch::kFloat);
  EXPECT_TRUE(std::isinf(rs[0].item<float>()) && rs[0].item<float>() > 0);
  EXPECT_TRUE(std::isinf(rs[1].item<float>()) && rs[1].item<float>() < 0);
  EXPECT_TRUE(std::isnan(rs[2].item<float>()));
}

// enable_lora with frozen_dtype bf16: W becomes the bf16 of its fp32 value, the factors stay fp32,
// and the layer computes with that W on the fast and the generic path, with and without autocast.
TEST(ModelBf16FrozenWeight, EnableStoresWInBf16AndBothPathsComputeWithIt) {
  for (const bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "fast path" : "generic path");
    CpuFastPathsGuard paths(fast);
    ReloraLinear layer(64, 48);
    const auto w0 = layer->weight.detach().clone();
    LoraOptions options{/*rank=*/8, /*alpha=*/16, /*dropout=*/0.0};
    options.frozen_dtype = torch::kBFloat16;
    layer->enable_lora(options, /*seed=*/3);
    ASSERT_EQ(layer->weight.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(layer->weight, w0.to(torch::kBFloat16)));
    EXPECT_FALSE(layer->weight.requires_grad());
    EXPECT_EQ(layer->lora_A.scalar_type(), torch::kFloat);
    EXPECT_EQ(layer->lora_B.scalar_type(), torch::kFloat);
    {
      torch::NoGradGuard no_grad;
      layer->lora_B.copy_(randn({48, 8}, 4, 0.1));
    }
    const auto x = randn({5, 64}, 5);
    const auto reference = torch::mm(x, layer->merged_weight().t());  // fp32 with the bf16 W's values
    // Without autocast: fp32 products with W's bf16 values (cast for the product).
    const auto y = layer(x);
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    EXPECT_LT((y - reference).abs().max().item<double>(), 1e-5);
    // Under autocast: bf16 products, fp32 factor gradients, none for W.
    {
      CpuBf16Autocast autocast;
      auto yb = layer(x);
      EXPECT_LT((yb.to(torch::kFloat) - reference).abs().max().item<double>(), 3e-2 * reference.abs().max().item<double>());
      yb.to(torch::kFloat).pow(2).sum().backward();
    }
    ASSERT_TRUE(layer->lora_A.grad().defined());
    ASSERT_TRUE(layer->lora_B.grad().defined());
    EXPECT_EQ(layer->lora_A.grad().scalar_type(), torch::kFloat);
    EXPECT_EQ(layer->lora_B.grad().scalar_type(), torch::kFloat);
    EXPECT_FALSE(layer->weight.grad().defined());
  }
}

// Many merges of small updates into a bf16 W, against the same merges into an fp32 W.
//
// The updates: 60 merges (a long run's cycles), each s·B·A of rank 16 with an rms of 1e-3 of W's
// (W ~ N(0, 0.02), the model's init): a late-run, low-learning-rate cycle, below half a bf16 ulp
// (2^-9 to 2^-8 of |w|) for most elements. Half of each update's energy follows one fixed
// direction with a varying positive strength (what the training signal keeps pushing), half is a
// new random direction per merge (what differs from cycle to cycle).
//
// The bound. A bf16 W is on the bf16 grid before each merge, so v = W + Δ lies a fraction
// p = |Δ| / ulp (for |Δ| < ulp) past a grid point, and stochastic rounding adds an error ε with
// E[ε] = 0 and E[ε²] = p (1 − p) ulp² ≤ |Δ| ulp (also for |Δ| ≥ ulp, where p(1−p) ≤ 1/4 ≤ |Δ|/ulp).
// The errors of successive merges are independent and zero-mean, so the error of the accumulated
// update E = (W_bf16,N − W_bf16,0) − (W_fp32,N − W_fp32,0) satisfies
//     E[‖E‖²] ≤ Σ_merges Σ_elements |Δ| ulp(v),
// computed below as the merges happen; with 7.9M independent terms the measured ‖E‖² sits within
// a fraction of a percent of its expectation, so 1.1 × the bound has room. Unbiasedness is the
// second check: the component of the bf16 W's accumulated update along the fp32 one must be 1
// (±0.03; its sampling error here is under 0.01). Round-to-nearest fails exactly there: an
// update below half an ulp rounds back to the old value, and the kept fraction falls far below 1.
TEST(ModelBf16FrozenWeight, SixtyMergesKeepTheUpdateOfFp32EverywhereWithinTheBound) {
  constexpr int64_t kOut = 256, kIn = 512, kRank = 16, kMerges = 60;
  constexpr double kWeightStd = 0.02, kRelativeUpdate = 1e-3;
  LoraOptions fp32_options{kRank, /*alpha=*/16.0, /*dropout=*/0.0};
  LoraOptions bf16_options = fp32_options;
  bf16_options.frozen_dtype = torch::kBFloat16;
  ReloraLinear fp32(kIn, kOut), bf16(kIn, kOut);
  {
    torch::NoGradGuard no_grad;
    const auto w0 = randn({kOut, kIn}, 11, kWeightStd);
    fp32->weight.copy_(w0);
    bf16->weight.copy_(w0);
  }
  fp32->enable_lora(fp32_options, 1);
  bf16->enable_lora(bf16_options, 1);
  const auto fp32_start = fp32->weight.detach().clone();
  const auto bf16_start = bf16->weight.detach().to(torch::kFloat);
  auto nearest = bf16->weight.detach().clone();  // the same merges rounded to nearest
  const auto p_fixed = randn({kOut, kRank / 2}, 12), q_fixed = randn({kRank / 2, kIn}, 13);
  auto strength_gen = compat::make_cpu_generator(14);
  double bound = 0.0;
  for (int64_t k = 0; k < kMerges; ++k) {
    torch::NoGradGuard no_grad;
    const double c = torch::empty({1}).uniform_(0.5, 1.5, strength_gen).item<double>();
    auto a = torch::cat({q_fixed, randn({kRank / 2, kIn}, 100 + k)});             // [r, in]
    auto b = torch::cat({p_fixed * c, randn({kOut, kRank / 2}, 200 + k)}, 1);  // [out, r]
    const double rms = torch::mm(b, a).mul_(fp32->scale()).pow(2).mean().sqrt().item<double>();
    b.mul_(kRelativeUpdate * kWeightStd / rms);
    for (auto* layer : {&fp32, &bf16}) {
      (*layer)->lora_A.copy_(a);
      (*layer)->lora_B.copy_(b);
    }
    const auto delta = bf16->lora_delta();                     // [out, in] fp32, as the merge adds it
    const auto v = bf16->weight.to(torch::kFloat) + delta;    // what is rounded
    const auto ulp = torch::ldexp(torch::ones_like(v), std::get<1>(torch::frexp(v)) - 8);  // |v| in [2^(e-1), 2^e)
    bound += (delta.abs() * ulp).sum().item<double>();
    nearest = (nearest.to(torch::kFloat) + delta).to(torch::kBFloat16);
    const uint64_t seed = 1000 + static_cast<uint64_t>(k);
    fp32->merge_and_reinit(seed);
    bf16->merge_and_reinit(seed);
  }
  ASSERT_EQ(bf16->weight.scalar_type(), torch::kBFloat16);
  const auto update = fp32->weight.detach() - fp32_start;  // the truth: fp32 everywhere
  const auto kept = [&](const torch::Tensor& now, const torch::Tensor& start) {
    const auto got = now.to(torch::kFloat) - start;
    return (got * update).sum().item<double>() / update.pow(2).sum().item<double>();
  };
  const auto error = (bf16->weight.to(torch::kFloat) - bf16_start) - update;
  const double error_sq = error.pow(2).sum().item<double>();
  const double kept_stochastic = kept(bf16->weight, bf16_start), kept_nearest = kept(nearest, bf16_start);
  // The layer's function: the error of the accumulated update in the outputs, relative to the update's.
  const auto x = randn({64, kIn}, 15);
  const double output_drift = torch::mm(x, error.t()).norm().item<double>() / torch::mm(x, update.t()).norm().item<double>();
  const auto nearest_error = (nearest.to(torch::kFloat) - bf16_start) - update;
  const double nearest_drift = torch::mm(x, nearest_error.t()).norm().item<double>() / torch::mm(x, update.t()).norm().item<double>();
  std::printf("[bf16 merges] %lld merges, update rms %.3g of W: stochastic keeps %.4f of the fp32 update, "
              "|E|^2 / bound %.3f, output drift %.3f of the update's effect; round-to-nearest keeps %.4f, drift %.3f\n",
              static_cast<long long>(kMerges), kRelativeUpdate, kept_stochastic, error_sq / bound, output_drift,
              kept_nearest, nearest_drift);
  EXPECT_NEAR(kept_stochastic, 1.0, 0.03);
  EXPECT_LE(error_sq, 1.1 * bound);
  // Round-to-nearest loses most of these updates: it fails the first check by far.
  EXPECT_LT(kept_nearest, 0.8);
}

}  // namespace
}  // namespace relora::model
